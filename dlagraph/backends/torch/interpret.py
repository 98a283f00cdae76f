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
import os
from pathlib import Path
from typing import Any

import networkx as nx
import torch
from torch import fx, nn
from torch.nn import functional as F

from ...errors import DlagraphError
from ...ir.analysis import static_params
from ...ir.compile import compile_spec
from ...ir.graph import check, describe, feature_info, inputs, op, topo_order
from ...ir.ops import Expr, In, Sym
from ...names import class_name, var_name
from ...spec import Spec
from . import modules
from .modules import fold_batchnorm, init_weights

__all__ = ["build_module", "fold_bn", "DLAModule", "make_module", "available_memory"]

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
    a = g.nodes[n]
    expr = op(g, n).module(a["rec"], a["layout"].get("symbols", {}))
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


def _fx_graph(g: nx.DiGraph) -> fx.Graph:
    graph = fx.Graph()
    env: dict[str, fx.Node] = {}

    def emit(value: Any, n: str, ins: list[str], name: str | None) -> Any:
        """fx nodes for an expression; ``name`` is the DAG variable for the outermost call, and
        nested calls are named after it (``fc_out`` in ``fc = torch.flatten(fc_out, 1)``)."""
        if isinstance(value, In):
            return env[ins[value.port]]
        if isinstance(value, list):
            return [emit(v, n, ins, None) for v in value]
        if isinstance(value, tuple):
            return tuple(emit(v, n, ins, None) for v in value)
        if isinstance(value, dict):
            return {k: emit(v, n, ins, None) for k, v in value.items()}
        if not isinstance(value, Expr):
            return value
        args = tuple(
            emit(v, n, ins, f"{var_name(n)}_{_short(v)}" if isinstance(v, Expr) else None)
            for v in value.args
        )
        kwargs = {k: emit(v, n, ins, None) for k, v in value.kwargs}
        if value.fn == "self":
            target = g.nodes[n]["layout"]["module"]
            return graph.create_node("call_module", target, args, kwargs, name=name)
        return graph.create_node("call_function", _resolve(value), args, kwargs, name=name)

    for n in topo_order(g):
        a = g.nodes[n]
        if a["layout"].get("unused"):
            continue  # checkpoint-only (official projections) or never read (a dead 2x2 pool)
        ins = inputs(g, n)
        if n == g.graph["input"]:
            env[n] = graph.placeholder("x")
        elif n == g.graph["output"]:
            graph.output(emit(op(g, n).call(a["rec"], len(ins)), n, ins, None))
        else:
            env[n] = emit(op(g, n).call(a["rec"], len(ins)), n, ins, var_name(n))
            if env[n].name != var_name(n):
                raise DlagraphError(f"fx renamed {var_name(n)!r} to {env[n].name!r}")
    graph.lint()
    return graph


class DLAModule(fx.GraphModule):
    """A compiled DLA: a ``torch.fx.GraphModule`` whose module tree follows the spec's layout.

    Attributes: ``dag`` (the IR), ``feature_info`` (timm-style list of dicts with ``num_chs``,
    ``reduction``, ``module`` for each output of a features head, in output order).
    """

    def __init__(self, g: nx.DiGraph, root: nn.Module) -> None:
        # Given the real graph, fx would copy only the modules it calls, in call order, through
        # fresh containers. Start from an empty graph instead, adopt the layout's full, ordered
        # tree (state_dict order, the official layout's unused projections), then set the graph.
        empty = fx.Graph()
        empty.output(empty.placeholder("x"))
        super().__init__(root, empty, class_name=class_name(g.graph["name"]))
        for name, child in root.named_children():
            self.add_module(name, child)
        self.graph = _fx_graph(g)
        self.dag = g
        levels = {f["node"]: f for f in feature_info(g)}  # in output order, as forward returns
        self.feature_info = [levels[t] for t in inputs(g, g.graph["output"]) if t in levels]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # fx wraps this call (GraphModule.recompile) and, for an error inside the generated
        # forward, prints that code around the failing line; the line assigns a DAG variable, so
        # the DAG node is named here too. fx offers no hook for the failing node, so the frame of
        # its generated `forward` is found by its code object, and the line by `ast`.
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
        code = type(self).forward.__code__
        tb, line = e.__traceback__, None
        while tb is not None:
            if tb.tb_frame.f_code is code:
                line = tb.tb_lineno
            tb = tb.tb_next
        if line is None:
            return None
        names = {v: n for n in self.dag.nodes if (v := var_name(n))}
        for stmt in ast.parse(self.code).body[0].body:  # type: ignore[attr-defined]
            if stmt.lineno <= line <= (stmt.end_lineno or stmt.lineno):
                targets = getattr(stmt, "targets", [])
                if targets and isinstance(targets[0], ast.Name):
                    return names.get(targets[0].id)
        return None

    def __reduce__(self) -> Any:  # pickles (and deepcopies) as the spec + state
        return (_rebuild, (self.dag.graph["spec"], self.state_dict(), self.training))


def _rebuild(spec: dict[str, Any], state: dict[str, Any], training: bool) -> DLAModule:
    m = build_module(spec, init=False)
    m.load_state_dict(state)
    return m.train(training)


def build_module(
    spec: Spec | str | Path | dict[str, Any] | nx.DiGraph, *, init: bool = True
) -> DLAModule:
    """Build the network of a spec (or of a compiled DAG) as a torch module.

    Modules are created in the layout's registration order and then initialised like the official
    code, so under the same ``torch.manual_seed`` a ``timm``-layout build equals
    ``timm.create_model`` weight for weight.

    Raises:
        SpecError: if the spec is invalid.
        GraphError: if a graph given directly does not pass the lint.
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
    root = nn.Module()
    for n in g.graph["modules"]:
        _set(root, g.nodes[n]["layout"]["module"], make_module(g, n))
    if init and g.graph["init"] == "dla":
        init_weights(root)
    return DLAModule(g, root)


def available_memory() -> int | None:
    """Bytes of memory this process could still allocate (Linux: MemAvailable, bounded by a cgroup
    limit; elsewhere the physical memory), or None when the platform does not say."""
    found: list[int] = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
        for limit, usage in (
            ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
            (
                "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                "/sys/fs/cgroup/memory/memory.usage_in_bytes",
            ),
        ):
            try:
                cap, used = Path(limit).read_text().strip(), int(Path(usage).read_text())
            except (OSError, ValueError):
                continue
            if cap.isdigit() and int(cap) < 1 << 60:
                found.append(int(cap) - used)
    except (OSError, ValueError):
        pass
    if not found:
        try:
            found.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
        except (ValueError, OSError, AttributeError):
            return None
    return max(0, min(found))


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
