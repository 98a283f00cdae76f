"""DAG -> ``torch.nn.Module``: the interpreter backend.

The module tree is built from the IR's registration list (``G.graph["modules"]``), so module
names, state_dict keys, their order and the weight-init order equal the chosen layout (timm or
official). ``forward`` is a ``torch.fx`` graph generated once from the DAG: one call per node in
topological order, inputs in port order, no name lookups or Python dispatch per call, and it works
with ``torch.compile``, TorchScript and ONNX export.
"""

from __future__ import annotations

import os
import re
import traceback
from pathlib import Path
from typing import Any

import networkx as nx
import torch
from torch import fx, nn
from torch.nn import functional as F

from ..blocks import get_block_type
from ..compile import compile_spec
from ..errors import DlagraphError
from ..graph import check, describe, inputs, topo_order
from ..names import class_name
from ..spec import Spec
from .blocks import (
    DlaRoot,
    bilinear_up,
    conv_bn_relu,
    fold_batchnorm,
    ida_node,
    init_weights,
    project,
)

__all__ = ["build_module", "fold_bn", "DLAModule", "make_module", "count_block_params"]


def make_module(a: dict[str, Any]) -> nn.Module:
    """The torch module of one DAG node (``a`` are the node's attributes)."""
    op = a["op"]
    if op == "conv":
        return conv_bn_relu(
            a["in_channels"], a["out_channels"], a["kernel_size"], a["convs"], a["stride"]
        )
    if op == "downsample":
        return nn.MaxPool2d(a["stride"], stride=a["stride"])
    if op == "project":
        return project(a["in_channels"], a["out_channels"])
    if op == "block":
        bt = get_block_type(a["block"])
        opts = bt.options.model_validate(a["block_options"])
        args = bt.module_args(
            a["in_channels"], a["out_channels"], a["stride"], a.get("dilation", 1), opts
        )
        return bt.resolve()(**args)
    if op == "aggregate":
        if a.get("sequential"):
            return ida_node(a["in_channels"], a["out_channels"], a["kernel_size"])
        return DlaRoot(a["in_channels"], a["out_channels"], a["kernel_size"], a["residual"])
    if op == "pool":
        return nn.AdaptiveAvgPool2d(1)
    if op == "dropout":
        return nn.Dropout(a["p"])
    if op == "classifier":
        fc = nn.Conv2d(a["in_channels"], a["out_channels"], 1, bias=True)
        return nn.Sequential(fc) if a.get("sequential") else fc
    if op == "upsample":
        return bilinear_up(a["out_channels"], a["factor"], a["trainable"])
    if op == "log_softmax":
        return nn.LogSoftmax(dim=1)
    raise AssertionError(f"op {op!r} owns no module")


def count_block_params(
    name: str, cin: int, cout: int, stride: int, dilation: int, opts: Any
) -> int:
    """Parameters of a registered block that declares no ``layers``, from a meta-device instance."""
    bt = get_block_type(name)
    with torch.device("meta"):
        m = bt.resolve()(**bt.module_args(cin, cout, stride, dilation, opts))
    return sum(p.numel() for p in m.parameters())


def _set(root: nn.Module, path: str, module: nn.Module) -> None:
    parent = root
    *heads, leaf = path.split(".")
    for h in heads:
        if not hasattr(parent, h):
            parent.add_module(h, nn.Module())
        parent = getattr(parent, h)
    parent.add_module(leaf, module)


def _fx_graph(g: nx.DiGraph) -> tuple[fx.Graph, dict[str, str]]:
    graph = fx.Graph()
    env: dict[str, fx.Node] = {}
    for n in topo_order(g):
        a = g.nodes[n]
        if a.get("unused"):
            continue  # checkpoint-only (official projections) or never read (a dead 2x2 pool)
        args = [env[u] for u in inputs(g, n)]
        op, target = a["op"], a.get("module", n)
        if op == "input":
            env[n] = graph.placeholder("x")
        elif op == "output":
            kind = g.graph.get("output_kind", "tensor")
            graph.output(args[0] if kind == "tensor" else tuple(args) if kind == "tuple" else args)
        elif op == "block":
            shortcut = args[1] if len(args) == 2 else args[0]  # identity shortcut
            env[n] = graph.call_module(target, (args[0], shortcut))
        elif op == "aggregate" and a.get("sequential"):
            cat = graph.call_function(torch.cat, (args, 1))
            env[n] = graph.call_module(target, (cat,))
        elif op == "aggregate":
            env[n] = graph.call_module(target, (args,))
        elif op == "interpolate":
            env[n] = graph.call_function(
                F.interpolate,
                (args[0],),
                {"scale_factor": float(a["scale"]), "mode": "bilinear", "align_corners": False},
            )
        else:
            env[n] = graph.call_module(target, (args[0],))
            if op == "classifier" and a.get("flatten"):
                env[n] = graph.call_function(torch.flatten, (env[n], 1))
    graph.lint()
    names = {node.name: n for n, node in env.items()}
    return graph, names


class _NodeContextCall:
    """Adds ``while executing <node> (from <spec path>)`` to errors raised inside forward
    (the fx ``Interpreter`` does the same), without fx's extra printing to stderr."""

    def __init__(self, cls: type) -> None:
        self.cls = cls

    def __call__(self, obj: DLAModule, *args: Any, **kwargs: Any) -> Any:
        try:
            return super(self.cls, obj).__call__(*args, **kwargs)
        except Exception as e:
            where = obj._node_of(e)
            if where is not None:
                msg = f"while executing {describe(obj.dag, where)}"
                if hasattr(e, "add_note"):
                    e.add_note(msg)
                else:  # Python 3.10
                    e.args = (f"{e.args[0] if e.args else ''}\n{msg}", *e.args[1:])
            raise


_ASSIGN = re.compile(r"^\s*(\w+)\s*=")


class DLAModule(fx.GraphModule):
    """A compiled DLA: a ``torch.fx.GraphModule`` whose module tree follows the spec's layout.

    Attributes: ``spec`` (the :class:`Spec`), ``dag`` (the IR), ``feature_info`` (timm-style list of
    dicts with ``num_chs``, ``reduction``, ``module`` for each output of a features head).
    """

    def __init__(self, g: nx.DiGraph, root: nn.Module) -> None:
        graph, names = _fx_graph(g)
        # Given the real graph, fx would copy only the modules it calls, in call order, through
        # fresh containers. Start from an empty graph instead, adopt the layout's full, ordered
        # tree (state_dict order, the official layout's unused projections), then set the graph.
        empty = fx.Graph()
        empty.output(empty.placeholder("x"))
        super().__init__(root, empty, class_name=class_name(g.graph["name"]))
        for name, child in root.named_children():
            self.add_module(name, child)
        self.graph = graph
        self.dag = g
        self.spec = Spec.model_validate(g.graph["spec"])
        self._fx_names = names
        type(self)._wrapped_call = _NodeContextCall(type(self))  # type: ignore[attr-defined]
        from ..analysis import feature_info

        levels = {f["node"]: f for f in feature_info(g)}  # in output order, as forward returns
        self.feature_info = [levels[t] for t in inputs(g, "output") if t in levels]

    def _node_of(self, e: BaseException) -> str | None:
        for frame in reversed(traceback.extract_tb(e.__traceback__)):
            if "eval_with_key" in frame.filename and frame.line:
                m = _ASSIGN.match(frame.line)
                if m and m.group(1) in self._fx_names:
                    return self._fx_names[m.group(1)]
                return None
        return None

    def __reduce__(self) -> Any:  # pickles (and deepcopies) as the spec + state
        return (_rebuild, (self.dag.graph["spec"], self.state_dict(), self.training))


def _rebuild(spec: dict[str, Any], state: dict[str, Any], training: bool) -> DLAModule:
    m = build_module(spec, init=False)
    m.load_state_dict(state)
    return m.train(training)


def build_module(spec: Spec | str | dict[str, Any] | nx.DiGraph, *, init: bool = True) -> DLAModule:
    """Build the network of a spec (or of a compiled DAG) as a torch module.

    Modules are created in the layout's registration order and then initialised like the official
    code, so under the same ``torch.manual_seed`` a ``timm``-layout build equals
    ``timm.create_model`` weight for weight.

    Raises:
        SpecError: if the spec is invalid.

    Example:
        >>> import torch, dlagraph
        >>> model = dlagraph.build_module("specs/dla36.yaml").eval()
        >>> model(torch.randn(1, 3, 64, 64)).shape
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
        _set(root, g.nodes[n].get("module", n), make_module(g.nodes[n]))
    if init:
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
    from ..analysis import static_params

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
    """
    fold_batchnorm(model.eval())
    return model.to(memory_format=torch.channels_last)
