"""DAG -> ``torch.nn.Module``: the interpreter backend.

It evaluates the op definitions of :mod:`dlagraph.ir.ops`: each node's ``module`` expression is
constructed (in the IR's registration order, so module names, state_dict keys, their order and the
weight-init order equal the chosen layout), and each node's ``call`` expression becomes nodes of a
``torch.fx`` graph named like the DAG's variables, so ``model.code``, fx's error context and the
generated source speak the same names. ``forward`` is that fx graph's generated Python: one call
per node in topological order, inputs in port order, no per-call dispatch; it works with
``torch.compile``, TorchScript and ONNX export.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import gc
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import networkx as nx
import torch
import torch.utils.checkpoint
from torch import fx, nn
from torch.nn import functional as F

from ...base.errors import DlagraphError
from ...base.names import class_name, var_name
from ...base.system import available_memory
from ...checkpoints.instant import skipped_init
from ...checkpoints.load import assign_weights
from ...checkpoints.read import read_owned
from ...ir.analysis import static_params
from ...ir.compile import compile_spec
from ...ir.graph import check, describe, inputs, op, stages, view
from ...ir.memory import run_order
from ...ir.ops import Expr, In, Sym
from ...nn import modules
from ...nn.modules import fold_batchnorm, init_weights
from ...nn.timm import InterpreterTimmAPI, timm_attributes
from ...spec import Spec
from ..codegen.sources import generated_names

__all__ = ["build_module", "fold_bn", "DLAModule", "make_module"]

_NAMESPACES = {"torch": torch, "nn": nn, "F": F}


def _resolve(e: Expr) -> Any:
    """The callable an expression names: a registered block class, a torch name or a helper."""
    if e.source is not None:
        return e.source.resolve()
    space, _, attr = e.fn.rpartition(".")
    return getattr(_NAMESPACES[space], attr) if space else getattr(modules, attr)


def _construct(value: Any) -> Any:
    """Evaluate a module expression (symbols take their values)."""
    if isinstance(value, Sym):
        return value.value
    if isinstance(value, Expr):
        args = [_construct(a) for a in value.args]
        return _resolve(value)(*args, **{k: _construct(v) for k, v in value.kwargs})
    return value


def make_module(g: nx.DiGraph, n: str) -> nn.Module:
    """The torch module node ``n`` owns."""
    expr = op(g, n).module(view(g, n))
    if expr is None:
        raise DlagraphError(f"node {describe(g, n)} owns no module")
    return _construct(expr)


def _set(root: nn.Module, path: str, module: nn.Module) -> None:
    parent = root
    *heads, leaf = path.split(".")
    for h in heads:
        if not hasattr(parent, h):
            parent.add_module(h, nn.Module())
        parent = getattr(parent, h)
    parent.add_module(leaf, module)


def _short(e: Expr) -> str:
    return "out" if e.fn == "self" else e.fn.rpartition(".")[2]


class _Emitter:
    """Builds fx graphs from the op definitions: a node's ``call`` expression becomes fx nodes,
    named like the DAG's variables (nested calls after them: ``fc_out``)."""

    def __init__(self, g: nx.DiGraph, graph: fx.Graph, base: str = "") -> None:
        self.g, self.graph, self.base, self.env = g, graph, base, {}

    def value(self, v: Any, n: str, ins: list[str], name: str | None) -> Any:
        if isinstance(v, In):
            return self.env[ins[v.port]]
        if isinstance(v, (list, tuple)):
            return type(v)(self.value(x, n, ins, None) for x in v)
        if isinstance(v, dict):
            return {k: self.value(x, n, ins, None) for k, x in v.items()}
        if not isinstance(v, Expr):
            return v
        args = tuple(
            self.value(x, n, ins, f"{var_name(n)}_{_short(x)}" if isinstance(x, Expr) else None)
            for x in v.args
        )
        kwargs = {k: self.value(x, n, ins, None) for k, x in v.kwargs}
        if v.fn == "self":
            target = self.g.nodes[n]["layout"]["module"].removeprefix(self.base)
            return self.graph.create_node("call_module", target, args, kwargs, name=name)
        return self.graph.create_node("call_function", _resolve(v), args, kwargs, name=name)

    def node(self, n: str) -> Any:
        ins = inputs(self.g, n)
        result = self.value(op(self.g, n).call(view(self.g, n)), n, ins, var_name(n))
        if result.name != var_name(n):
            raise DlagraphError(f"fx renamed {var_name(n)!r} to {result.name!r}")
        self.env[n] = result
        return result


def _stage_graph(g: nx.DiGraph, stage: dict[str, Any]) -> fx.Graph:
    """The fx graph of one tree level: its input -> its nodes -> its output."""
    graph = fx.Graph()
    em = _Emitter(g, graph, base=stage["module"] + ".")
    em.env[stage["input"]] = graph.placeholder("x")
    for n in stage["nodes"]:
        if not g.nodes[n]["layout"].get("unused"):
            em.node(n)
    graph.output(em.env[stage["output"]])
    graph.lint()
    return graph


def _checkpointed(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A backbone step under activation checkpointing, when gradients are being recorded."""
    if torch.is_grad_enabled():
        return torch.utils.checkpoint.checkpoint(module, x, use_reentrant=False)
    return module(x)


def _fx_graph(g: nx.DiGraph, checkpoint: bool = False) -> fx.Graph:
    """The network's forward: the backbone as one call per step (stem, conv levels, one level
    module per tree level) and the head's nodes, in :func:`~dlagraph.ir.memory.run_order`.
    ``checkpoint`` wraps each step in activation checkpointing (timm's
    ``set_grad_checkpointing``)."""
    graph = fx.Graph()
    em = _Emitter(g, graph)
    em.env[g.graph["input"]] = graph.placeholder("x")
    steps = {st["output"]: st for st in stages(g)}
    for n in run_order(g):
        st = steps.get(n)
        if st is None and n == g.graph["output"]:
            ins = inputs(g, n)
            graph.output(em.value(op(g, n).call(view(g, n)), n, ins, None))
        elif st is None or (len(st["nodes"]) == 1 and not checkpoint):
            em.node(n)
        else:
            x = em.env[st["input"]]
            name = var_name(st["output"])
            if checkpoint:
                mod = graph.create_node("get_attr", st["module"], name=f"{name}_module")
                em.env[n] = graph.create_node("call_function", _checkpointed, (mod, x), name=name)
            else:
                em.env[n] = graph.create_node("call_module", st["module"], (x,), name=name)
    graph.lint()
    return graph


def _as_graph_module(container: nn.Module, graph: fx.Graph, name: str) -> fx.GraphModule:
    """``container`` turned into a GraphModule running ``graph``, its children kept in order
    (fx would otherwise copy only the called modules, in call order)."""
    empty = fx.Graph()
    empty.output(empty.placeholder("x"))
    gm = fx.GraphModule(nn.Module(), empty, class_name=name)
    for child_name, child in container.named_children():
        gm.add_module(child_name, child)
    gm.graph = graph
    return gm


class DLAModule(InterpreterTimmAPI, fx.GraphModule):
    """A compiled DLA: a ``torch.fx.GraphModule`` whose module tree follows the spec's layout.

    Each tree level is itself a GraphModule (``model.level3.code``), so the backbone runs as timm's
    does, level by level, and the model has timm's API (:class:`~.modules.TimmModelAPI`).

    Attributes: ``dag`` (the IR), ``feature_info`` (timm-style dicts with ``num_chs``,
    ``reduction``, ``module``: every level, or a features head's outputs in output order).
    """

    def __init__(self, g: nx.DiGraph, root: nn.Module) -> None:
        # Given the real graph, fx would copy only the modules it calls, in call order, through
        # fresh containers. Start from an empty graph instead, adopt the layout's full, ordered
        # tree (state_dict order, the official layout's unused projections), then set the graph.
        empty = fx.Graph()
        empty.output(empty.placeholder("x"))
        super().__init__(root, empty, class_name=class_name(g.graph["name"], generated_names()))
        for name, child in root.named_children():
            self.add_module(name, child)
        self.dag = g
        for st in stages(g):
            if len(st["nodes"]) > 1:  # a tree level: a container becomes a callable GraphModule
                parent, _, leaf = st["module"].rpartition(".")
                owner = self.get_submodule(parent) if parent else self
                container = getattr(owner, leaf)
                level = _as_graph_module(container, _stage_graph(g, st), f"Level{st['index']}")
                level.train(container.training)
                setattr(owner, leaf, level)
        self.graph = _fx_graph(g)
        for key, value in timm_attributes(g).items():
            setattr(self, key, value)

    def _set_checkpointing(self, enable: bool) -> None:
        self.graph = _fx_graph(self.dag, checkpoint=enable)
        self.recompile()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # fx wraps this call (GraphModule.recompile) and, for an error inside a generated
        # forward, prints that code around the failing line; the line assigns a DAG variable, so
        # the DAG node is named here too. fx offers no hook for the failing node, so the frame of
        # a generated `forward` is found by its code object, and the line by `ast`.
        try:
            return super().__call__(*args, **kwargs)
        except Exception as e:
            n = self._failing_node(e)
            if n is not None:
                msg = f"while executing {describe(self.dag, n)}"
                if hasattr(e, "add_note"):
                    e.add_note(msg)
                else:  # Python 3.10
                    e.args = (f"{e.args[0] if e.args else ''}\n{msg}", *e.args[1:])
            raise

    def _failing_node(self, e: BaseException) -> str | None:
        codes = {
            type(m).forward.__code__: m for m in self.modules() if isinstance(m, fx.GraphModule)
        }
        tb, found = e.__traceback__, None
        while tb is not None:  # the innermost generated forward on the stack
            if tb.tb_frame.f_code in codes:
                found = (codes[tb.tb_frame.f_code], tb.tb_lineno)
            tb = tb.tb_next
        if found is None:
            return None
        module, line = found
        names = {var_name(n): n for n in self.dag.nodes}
        for stmt in ast.parse(module.code).body[0].body:  # type: ignore[attr-defined]
            if stmt.lineno <= line <= (stmt.end_lineno or stmt.lineno):
                targets = getattr(stmt, "targets", [])
                if targets and isinstance(targets[0], ast.Name):
                    return names.get(targets[0].id)
        return None

    def __deepcopy__(self, memo: dict[int, Any]) -> DLAModule:
        # fx's copy keeps only the modules, parameters and buffers; the DAG and timm's attributes
        # come along too (already copied into ``memo`` by fx, so they are not copied twice).
        res = super().__deepcopy__(memo)
        type(res).__name__ = type(self).__name__
        for key, value in self.__dict__.items():
            if key not in res.__dict__:
                res.__dict__[key] = copy.deepcopy(value, memo)
        return res

    def __reduce__(self) -> Any:
        # Pickles as the spec plus the module's state (its modules as they are now: a replaced
        # classifier, pruned levels or folded BatchNorms survive); the forward is regenerated from
        # the spec's DAG on load rather than re-traced from code, as fx would.
        body = {k: v for k, v in self.__dict__.items() if k not in _NOT_PICKLED}
        return (_restore, (self.dag.graph["spec"], body))


_NOT_PICKLED = frozenset({"_graph", "_code", "_lineno_map", "_prologue_start", "dag"})


def _restore(spec: dict[str, Any], body: dict[str, Any]) -> DLAModule:
    g = compile_spec(spec)
    m = DLAModule.__new__(DLAModule)  # fx's per-instance class, not initialised
    type(m).__name__ = class_name(g.graph["name"], generated_names())
    m.__dict__.update(body)
    m.dag = g
    m.graph = _fx_graph(g, checkpoint=body.get("grad_checkpointing", False))
    return m


def build_module(
    spec: Spec | str | Path | dict[str, Any] | nx.DiGraph,
    *,
    init: bool = True,
    weights: str | Path | Mapping[str, Any] | None = None,
) -> DLAModule:
    """Build the network of a spec (or of a compiled DAG) as a torch module.

    Modules are created in the layout's registration order and then initialised like the official
    code, so under the same ``torch.manual_seed`` a ``timm``-layout build equals
    ``timm.create_model`` weight for weight.

    With ``weights`` (a ``.pth`` / ``.safetensors`` file or a state dict) the random init is
    skipped: modules are created on the meta device, given uninitialised memory and loaded
    strictly by :func:`~dlagraph.load_weights` (layout conversion included); its report is
    ``model.load_report``. The model owns its tensors: nothing is shared with a state dict given.

    Raises:
        SpecError: if the spec is invalid.
        GraphError: if a graph given directly does not pass the lint.
        WeightsError: if ``weights`` cannot be read or does not fit the model exactly.
        DlagraphError: if its parameters alone would not fit in the available memory.

    Example:
        >>> import torch, dlagraph
        >>> model = dlagraph.build_module("dla36")  # a preset name, or a spec file or mapping
        >>> model.eval()(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 1000])
    """
    if isinstance(spec, nx.DiGraph):
        check(spec)  # a graph from elsewhere is linted, not trusted
        g = spec
    else:
        g = compile_spec(spec)
    _check_memory(g)
    with _gc_paused():
        if weights is None:
            root = _modules(g)
            if init and g.graph["init"] == "dla":
                init_weights(root)
            return DLAModule(g, root)
        owned = read_owned(weights)  # before the modules: a bad checkpoint fails fast
        with torch.device("meta"), skipped_init():  # no memory, no init to pay for
            root = _modules(g)
        model = DLAModule(g, root)
        report = assign_weights(model, owned)
    for key in report.kept:  # unused official projections a timm checkpoint lacks: initialised
        owner = model.get_submodule(key.rpartition(".")[0])
        if next(owner.parameters(), torch.empty(0)).is_meta:
            owner.to_empty(device="cpu")
            if hasattr(owner, "reset_parameters"):
                owner.reset_parameters()
            if g.graph["init"] == "dla":
                init_weights(owner)
    model.load_report = report
    return model


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Building allocates some ten thousand objects (modules, tensors, fx nodes) that all survive:
    Python's cyclic GC would scan them again and again for nothing (about 8% of a dla169 build)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _modules(g: nx.DiGraph) -> nn.Module:
    """The layout's module tree, uninitialised beyond the modules' own constructors."""
    root = nn.Module()
    for n in g.graph["modules"]:
        _set(root, g.nodes[n]["layout"]["module"], make_module(g, n))
    return root


def _check_memory(g: nx.DiGraph) -> None:
    """Refuse, before allocating, a network whose parameters alone exceed the free memory (a
    wide spec validates, but torch's allocator would fail deep inside, or the OOM killer strike)."""
    need = 4 * static_params(g)  # float32 parameters; buffers and activations come on top
    free = available_memory()
    if free is not None and need > free:
        raise DlagraphError(
            f"{g.graph['name']}: its {need // 4:,} parameters need {need / 2**30:,.1f} GiB of "
            f"float32 memory, but only {free / 2**30:,.1f} GiB is available; use fewer channels"
        )


def fold_bn(model: nn.Module) -> nn.Module:
    """For inference: fold every BatchNorm of a built (and loaded) model into its conv, and move it
    to channels_last memory (feed it channels_last inputs). Changes ``model`` in place.

    Outputs stay within about 1e-6 relative of the unfolded model in float32.

    Raises:
        DlagraphError: if the model is in training mode (folding uses the running statistics).
    """
    if model.training:
        raise DlagraphError("fold_bn folds running statistics: call model.eval() first")
    fold_batchnorm(model)
    return model.to(memory_format=torch.channels_last)
