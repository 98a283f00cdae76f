"""Python names derived from a spec: the model class and the forward variables."""

from __future__ import annotations

import builtins
import keyword
import re

__all__ = ["class_name", "var_name", "IMPORTED", "MODULE_ATTRIBUTES", "attribute_clash"]

# what a generated file imports (and may use besides its own definitions): a local variable of
# its forward, or its model class, must not shadow one
IMPORTED = frozenset({"torch", "nn", "math", "F", "List", "Tuple"}) | frozenset(dir(builtins))


def class_name(name: str, taken: set[str] | frozenset[str] = frozenset()) -> str:
    """``dla104_s`` -> ``Dla104S``; made a valid identifier that is not in ``taken`` (``_0`` ->
    ``Net0``; ``dla_root`` -> ``DlaRootNet`` when ``taken`` holds the generated file's names,
    :func:`dlagraph.backends.codegen.sources.generated_names`)."""
    camel = "".join(p[:1].upper() + p[1:] for p in name.split("_"))
    if not camel or not camel[0].isalpha():
        camel = "Net" + camel
    while keyword.iskeyword(camel) or camel in taken or camel in IMPORTED:
        camel += "Net"
    return camel


# names a local variable of `forward` must not take: its arguments and the imported modules
_LOCALS = frozenset({"self", "x"}) | IMPORTED


def var_name(node: str) -> str:
    """The local variable of a DAG node in ``forward``: its module path with ``.`` -> ``_``, and
    ``_`` appended where that would shadow a builtin or an argument (a head called ``id``)."""
    name = node.replace(".", "_")
    return name + "_" if name in _LOCALS or keyword.iskeyword(name) else name


# The public attributes and methods of the modules dlagraph builds: torch.nn.Module's,
# torch.fx.GraphModule's, the interpreter's DLAModule and timm's model API, and the generated
# classes' own. A network's top-level module (a CenterNet task head) named like one would replace
# it, or be shadowed by it. tests/test_names.py checks this list against the installed torch.
MODULE_ATTRIBUTES = frozenset(
    """
    T_destination add_module apply bfloat16 buffers call_super_init children compile cpu cuda
    double dump_patches eval extra_repr float forward get_buffer get_extra_state get_parameter
    get_submodule half ipu load_state_dict modules mtia named_buffers named_children
    named_modules named_parameters parameters register_backward_hook register_buffer
    register_forward_hook register_forward_pre_hook register_full_backward_hook
    register_full_backward_pre_hook register_load_state_dict_post_hook
    register_load_state_dict_pre_hook register_module register_parameter
    register_state_dict_post_hook register_state_dict_pre_hook requires_grad_ set_extra_state
    set_submodule share_memory state_dict to to_empty train training type xpu zero_grad
    add_submodule code delete_all_unused_submodules delete_submodule graph meta print_readable
    recompile shape_env to_folder
    dag feature_info load_report default_cfg pretrained_cfg forward_features forward_head
    forward_intermediates get_classifier reset_classifier grad_checkpointing
    set_grad_checkpointing group_matcher head_hidden_size in_chans num_classes num_features
    num_levels prune_intermediate_layers
    from_weights fold_bn
    """.split()
)
_METHODS = re.compile(r"forward_level[0-9]+")  # the generated class's per-level methods


def attribute_clash(name: str) -> str | None:
    """Why a top-level module may not be called ``name`` (None when it may)."""
    if name.startswith("_"):
        return "names starting with _ are reserved for the module's private attributes"
    if name in MODULE_ATTRIBUTES or _METHODS.fullmatch(name):
        return f"{name!r} is an attribute or method of the network's module (torch.nn.Module, timm's API or the generated class)"
    return None
