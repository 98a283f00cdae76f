"""Python names derived from a spec: the model class and the forward variables."""

from __future__ import annotations

import builtins
import keyword

__all__ = ["class_name", "var_name", "RESERVED"]

# names a generated file defines or imports; a model class must not shadow them
RESERVED = frozenset(
    {
        "DlaBasic",
        "DlaBottleneck",
        "DlaBottle2neck",
        "DlaRoot",
        "conv_bn_relu",
        "project",
        "init_weights",
        "torch",
        "nn",
        "math",
        "List",
        "F",
    }
) | frozenset(dir(builtins))


def class_name(name: str, taken: set[str] | frozenset[str] = frozenset()) -> str:
    """``dla104_s`` -> ``Dla104S``; made a valid, non-clashing identifier (``_0`` -> ``Net0``,
    ``dla_root`` -> ``DlaRootNet``; a name in ``taken``, such as a registered block class the
    generated file also defines, gets ``Net`` too)."""
    camel = "".join(p[:1].upper() + p[1:] for p in name.split("_"))
    if not camel or not camel[0].isalpha():
        camel = "Net" + camel
    while keyword.iskeyword(camel) or camel in RESERVED or camel in taken:
        camel += "Net"
    return camel


# names a local variable of `forward` must not take: its arguments and the imported modules
_LOCALS = frozenset({"self", "x", "torch", "nn", "F", "math"}) | frozenset(dir(builtins))


def var_name(node: str) -> str:
    """The local variable of a DAG node in ``forward``: its module path with ``.`` -> ``_``, and
    ``_`` appended where that would shadow a builtin or an argument (a head called ``id``)."""
    name = node.replace(".", "_")
    return name + "_" if name in _LOCALS or keyword.iskeyword(name) else name
