"""The DAG IR: a ``networkx.DiGraph`` whose node ids are dotted module paths (``level3.tree1.root``).

Conventions (see README "The IR"):

* ``op`` comes from the closed vocabulary :data:`OPS`.
* Every edge carries ``port``, the argument position at its consumer. Read inputs only through
  :func:`inputs`, never through ``G.predecessors`` (whose order networkx does not promise).
  Aggregation edges also carry ``paper_port``, the argument position in the paper's eq. 2 / eq. 5.
* ``index`` is the node's creation index; :func:`topo_order` breaks ties with it, so the order is
  deterministic. ``G.graph["modules"]`` lists the nodes that own a torch module in the order the
  layout registers them (this is the state_dict order and the weight-init order).
* A node with ``unused=True`` is kept for checkpoint compatibility but does not reach the output
  (the official code's dead ``project`` layers); :func:`check` verifies and reports them.

Nothing here imports torch.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Iterable
from typing import Any

import networkx as nx

from .blocks import get_block_type
from .errors import GraphError, clip

__all__ = [
    "OPS",
    "MODULE_OPS",
    "IR_VERSION",
    "inputs",
    "topo_order",
    "check",
    "describe",
    "paper_inputs",
    "node_table",
]

IR_VERSION = 1

OPS = frozenset(
    {
        "input",  # the image
        "conv",  # conv-BN-ReLU layers: the 7x7 stem and the conv levels (Levels 1-2)
        "downsample",  # S(x) of eq. 5: 2x2 max pooling
        "project",  # 1x1 conv + BN on the pooled input: the first block's shortcut
        "block",  # B of eq. 2, from the block registry
        "aggregate",  # N of eq. 1-5: concat -> conv -> BN (-> + input 0) -> ReLU
        "pool",  # global average pooling
        "dropout",
        "classifier",  # 1x1 conv with bias (then flatten, for image classification)
        "upsample",  # depthwise transposed conv initialised as bilinear upsampling (IDA up)
        "interpolate",  # fixed bilinear resize
        "log_softmax",
        "output",  # the network's result (one input, or several for the features head)
    }
)
MODULE_OPS = OPS - {"input", "output", "interpolate"}


def inputs(g: nx.DiGraph, n: str) -> list[str]:
    """The inputs of node ``n`` in argument (``port``) order."""
    return [u for u, _, _ in sorted(g.in_edges(n, data="port"), key=lambda e: e[2])]


def paper_inputs(g: nx.DiGraph, n: str) -> list[str]:
    """The inputs of an aggregation node in the paper's argument order (eq. 2 / eq. 5)."""
    edges = g.in_edges(n, data=True)
    return [u for u, _, d in sorted(edges, key=lambda e: e[2].get("paper_port", e[2]["port"]))]


def topo_order(g: nx.DiGraph) -> list[str]:
    """A deterministic topological order: ties are broken by creation index."""
    return list(nx.lexicographical_topological_sort(g, key=lambda n: g.nodes[n]["index"]))


def describe(g: nx.DiGraph, n: str) -> str:
    """``'level3.tree1.root' (from levels[3])``: how errors name a node."""
    src = g.nodes[n].get("spec_path")
    return f"'{n}' (from {src})" if src else f"'{n}'"


def _fail(problems: list[str]) -> None:
    if problems:
        raise GraphError("graph check failed:\n  " + "\n  ".join(problems))


def _check_ports(g: nx.DiGraph, problems: list[str]) -> None:
    for n in g.nodes:
        for key in ("port", "paper_port"):
            ports = [d[key] for _, _, d in g.in_edges(n, data=True) if key in d]
            if key == "port" and len(ports) != g.in_degree(n):
                problems.append(f"node {describe(g, n)}: an input edge has no `port`")
            if ports and sorted(ports) != list(range(len(ports))):
                problems.append(
                    f"node {describe(g, n)}: `{key}`s are {sorted(ports)}, expected 0..{len(ports) - 1}"
                )


def _check_channels(g: nx.DiGraph, n: str, problems: list[str]) -> None:
    a = g.nodes[n]
    ins = inputs(g, n)
    op = a["op"]
    chans = [g.nodes[u]["out_channels"] for u in ins]
    if op == "aggregate":
        if sum(chans) != a["in_channels"]:
            problems.append(
                f"node {describe(g, n)}: expects {a['in_channels']} input channels, "
                f"its inputs {ins} provide {sum(chans)} ({' + '.join(map(str, chans))})"
            )
        if a.get("residual") and chans and chans[0] != a["out_channels"]:
            problems.append(
                f"node {describe(g, n)}: residual input {ins[0]!r} has {chans[0]} "
                f"channels, the node outputs {a['out_channels']}"
            )
        reds = {g.nodes[u]["reduction"] for u in ins}
        if len(reds) > 1:
            problems.append(
                f"node {describe(g, n)}: inputs have different resolutions (strides {sorted(reds)})"
            )
    elif op in ("input", "output"):
        return
    elif chans and chans[0] != a["in_channels"]:
        problems.append(
            f"node {describe(g, n)}: expects {a['in_channels']} input channels, "
            f"input {ins[0]!r} provides {chans[0]}"
        )
    if op == "block" and len(ins) == 2:
        sc = g.nodes[ins[1]]
        if sc["out_channels"] != a["out_channels"] or sc["reduction"] != a["reduction"]:
            problems.append(
                f"node {describe(g, n)}: shortcut {ins[1]!r} is {sc['out_channels']} ch "
                f"at stride {sc['reduction']}, the block gives {a['out_channels']} ch at "
                f"stride {a['reduction']}"
            )


_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_INT_ATTRS = (
    "in_channels",
    "out_channels",
    "kernel_size",
    "stride",
    "convs",
    "reduction",
    "dilation",
    "factor",
    "scale",
    "index",
    "level",
)
_BOOL_ATTRS = ("residual", "trainable", "flatten", "sequential", "num_classes_arg", "unused")


def _is_path(text: object) -> bool:
    """A dotted module path of identifiers (what may reach generated source as ``self.<path>``)."""
    return (
        isinstance(text, str)
        and _PATH.fullmatch(text) is not None
        and not any(keyword.iskeyword(part) for part in text.split("."))
    )


def _check_attrs(g: nx.DiGraph, n: str, problems: list[str]) -> None:
    """Every attribute a backend turns into source or a module has its declared type: a graph
    reloaded from JSON cannot smuggle code into generated files."""
    a = g.nodes[n]
    shown = clip(repr(n))
    if not _is_path(n):
        problems.append(f"node {shown}: ids must be dotted identifiers")
    mod = a.get("module", n)
    if not _is_path(mod) or not (mod == n or mod.endswith("." + n)):
        problems.append(
            f"node {shown}: `module` {clip(repr(mod))} is not the node's module path "
            f"(its id, or its id under a prefix)"
        )
    for key in _INT_ATTRS:
        v = a.get(key)
        if v is not None and (type(v) is not int or not 0 <= v <= 10**7):
            problems.append(
                f"node {shown}: `{key}` must be a non-negative int (got {clip(repr(v))})"
            )
    for key in _BOOL_ATTRS:
        if key in a and type(a[key]) is not bool:
            problems.append(f"node {shown}: `{key}` must be true or false")
    if "p" in a and not (type(a["p"]) is float and 0.0 <= a["p"] < 1.0):
        problems.append(f"node {shown}: `p` must be a float in [0, 1)")
    if a.get("op") == "block":
        try:
            get_block_type(a.get("block")).options.model_validate(a.get("block_options"))
        except Exception as e:  # unknown type, or options that do not validate
            problems.append(
                f"node {shown}: block {clip(repr(a.get('block')))}: {clip(str(e), 120)}"
            )


def check(g: nx.DiGraph) -> list[str]:
    """Lint the IR; return the ids of the unused (checkpoint-only) nodes.

    Checks: acyclic; ops in the vocabulary; ports contiguous from 0; one input and one output;
    channel sums at every aggregation node; channel and resolution agreement on every other edge;
    every node reachable from the input and reaching the output, except nodes marked ``unused``,
    which must *not* reach it; every module-owning node registered exactly once.

    Raises:
        GraphError: naming each offending node and the spec path that produced it.
    """
    problems: list[str] = []
    if not nx.is_directed_acyclic_graph(g):
        cycle = nx.find_cycle(g)
        _fail([f"graph has a cycle: {' -> '.join(u for u, _ in cycle)}"])
    for n, a in g.nodes(data=True):
        if a.get("op") not in OPS:
            problems.append(f"node {clip(repr(n))}: unknown op {clip(repr(a.get('op')))}")
        _check_attrs(g, n, problems)
    _fail(problems)
    _check_ports(g, problems)
    ins = [n for n, a in g.nodes(data=True) if a["op"] == "input"]
    outs = [n for n, a in g.nodes(data=True) if a["op"] == "output"]
    if len(ins) != 1 or len(outs) != 1:
        _fail([f"graph needs exactly one input and one output node (got {ins} and {outs})"])
    src, dst = ins[0], outs[0]
    for n in g.nodes:
        _check_channels(g, n, problems)
    reach = nx.descendants(g, src) | {src}
    live = nx.ancestors(g, dst) | {dst}
    unused = []
    for n, a in g.nodes(data=True):
        if n not in reach:
            problems.append(f"node {describe(g, n)}: not reachable from the input")
        if a.get("unused"):
            unused.append(n)
            if n in live:
                problems.append(f"node {describe(g, n)}: marked unused but reaches the output")
        elif n not in live:
            problems.append(f"node {describe(g, n)}: does not reach the output")
    modules = g.graph.get("modules", [])
    owners = [n for n, a in g.nodes(data=True) if a["op"] in MODULE_OPS]
    if sorted(modules) != sorted(owners):
        missing = sorted(set(owners) - set(modules))
        extra = sorted(set(modules) - set(owners))
        dup = sorted({m for m in modules if modules.count(m) > 1})
        problems.append(
            f"graph['modules'] does not list each module node once "
            f"(missing {missing}, extra {extra}, repeated {dup})"
        )
    _fail(problems)
    return sorted(unused, key=lambda n: g.nodes[n]["index"])


def node_table(g: nx.DiGraph, nodes: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """One row per node (fx ``print_tabular`` style): name, op, inputs, channels, stride, source."""
    rows = []
    for n in nodes if nodes is not None else topo_order(g):
        a = g.nodes[n]
        rows.append(
            {
                "name": n,
                "op": a["op"],
                "inputs": inputs(g, n),
                "channels": f"{a.get('in_channels', '')}->{a.get('out_channels', '')}",
                "stride": a.get("reduction"),
                "source": a.get("spec_path", ""),
            }
        )
    return rows
