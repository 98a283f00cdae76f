"""The DAG IR: a ``networkx.DiGraph`` whose node ids are dotted module paths (``level3.tree1.root``).

A node holds four things (README "The IR"):

* ``op`` -- a name in :data:`~dlagraph.ir.ops.OPS`, which defines everything about it;
* ``rec`` -- its semantic fields, a plain dict typed by the op's record (``channels``, ``kernel_size``…);
* ``meta`` -- provenance and static facts: ``spec_path``, paper ``level``, ``role`` (``L1``, ``L2``,
  ``N``, ``S``, ``P``, ``U``…, read with the predicates of :mod:`dlagraph.ir.roles`, re-exported
  here: :func:`is_aggregation`, :func:`is_block` …), ``eq``, and ``reduction`` (the resolution
  divisor);
* ``layout`` -- backend details: the ``module`` path, ``unused`` (checkpoint-only), ``symbols``
  (record fields that are constructor arguments of generated classes: ``in_chans``, ``num_classes``).

Every edge carries ``port``, the argument position at its consumer; read inputs only through
:func:`inputs`, never through ``G.predecessors`` (whose order networkx does not promise). Edges into
aggregation nodes also carry ``paper_port`` (eq. 2 / eq. 5 order). :func:`topo_order` breaks ties
with each node's creation ``index``. Graph attributes hold the facts computed once at compile time
(``total_stride``, ``levels``, ``modules`` in registration order, ``unused``, …).

:func:`check` is the lint: together with :mod:`dlagraph.ir.ops` it is the only code that looks at
op names. Nothing here imports torch.
"""

from __future__ import annotations

import keyword
import re
import weakref
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import networkx as nx
from pydantic import ConfigDict, TypeAdapter, ValidationError
from typing_extensions import TypedDict

from ..base.errors import GraphError, SpecError, clip
from ..spec import load_spec
from .ops import OPS, NodeView, Op, op_of
from .roles import is_aggregation, is_block, is_projection, is_stem, is_sx, is_upsampling, role

__all__ = [
    "IR_VERSION",
    "Meta",
    "Layout",
    "inputs",
    "paper_inputs",
    "topo_order",
    "check",
    "describe",
    "node_table",
    "channels",
    "reduction",
    "op",
    "view",
    "feature_info",
    "stages",
    "is_path",
    # the node roles (dlagraph.ir.roles)
    "role",
    "is_aggregation",
    "is_block",
    "is_sx",
    "is_projection",
    "is_upsampling",
    "is_stem",
]

IR_VERSION = 2


class Meta(TypedDict, total=False):
    """Provenance and static facts of a node (README "The IR")."""

    reduction: int
    spec_path: str
    level: int  # paper level (1 = the stem's level); absent for head nodes
    role: str
    eq: str
    arg_roles: list[str]


class Layout(TypedDict, total=False):
    """Backend details of a node."""

    module: str
    unused: bool
    symbols: dict[str, str]


class LevelFact(TypedDict):
    """One entry of the graph attribute ``levels``."""

    index: int
    kind: Literal["conv", "tree"]
    channels: int
    depth: int | None
    dilation: int
    module: str
    output: str


class Facts(TypedDict, total=False):
    """The graph attributes: the facts compile time computes once (see :func:`compile_spec`)."""

    ir_version: int
    name: str
    paper_name: str | None
    reference: str | None
    layout: Literal["timm", "official"]
    in_channels: int
    num_classes: int | None
    init: Literal["dla", "pytorch"]
    classifier: bool
    total_stride: int
    levels: list[LevelFact]
    official_only: list[str]
    input: str
    output: str
    modules: list[str]
    unused: list[str]
    spec: dict[str, Any]
    generator: str  # a .graph.json file's marker


# what strings in a node's meta may hold: they reach generated comments and diagram labels
_META_TEXT = {
    "spec_path": re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\[[0-9]+\]|\.[A-Za-z0-9_]+)*"),
    "role": re.compile(r"[A-Za-z][A-Za-z0-9_]{0,15}"),
    "eq": re.compile(r"eq[0-9]{1,2}"),
}


SYMBOLS = frozenset({"in_chans", "num_classes"})
_ADAPTERS: dict[type, TypeAdapter[Any]] = {}


def _adapter(t: type) -> TypeAdapter[Any]:
    if t not in _ADAPTERS:
        t.__pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[attr-defined]
        _ADAPTERS[t] = TypeAdapter(t)
    return _ADAPTERS[t]


def op(g: nx.DiGraph, n: str) -> Op:
    """The op definition of node ``n``."""
    return op_of(g.nodes[n]["op"])


def view(g: nx.DiGraph, n: str, hw: Sequence[tuple[int, int]] = ()) -> NodeView:
    """Node ``n`` as its op sees it; ``hw``: its inputs' H x W where the caller knows them."""
    a, ups = g.nodes[n], inputs(g, n)
    return NodeView(
        n,
        a["rec"],
        a["meta"],
        a["layout"].get("symbols", {}),
        tuple(ups),
        tuple(channels(g, u) for u in ups),
        tuple(reduction(g, u) for u in ups),
        tuple(hw),
    )


def channels(g: nx.DiGraph, n: str) -> int:
    """Output channels of node ``n``."""
    return op(g, n).channels(NodeView(n, g.nodes[n]["rec"]))


def reduction(g: nx.DiGraph, n: str) -> int:
    """Resolution divisor of node ``n``'s output (its cumulative stride)."""
    return int(g.nodes[n]["meta"]["reduction"])


def inputs(g: nx.DiGraph, n: str) -> list[str]:
    """The inputs of node ``n`` in argument (``port``) order."""
    pred = g._pred[n]  # networkx's adjacency dict: no view object per call (a hot path)
    return sorted(pred, key=lambda u: pred[u]["port"])


def paper_inputs(g: nx.DiGraph, n: str) -> list[str]:
    """The inputs of an aggregation node in the paper's argument order (eq. 2 / eq. 5)."""
    edges = g.in_edges(n, data=True)
    return [u for u, _, d in sorted(edges, key=lambda e: e[2].get("paper_port", e[2]["port"]))]


_ORDERS: weakref.WeakKeyDictionary[nx.DiGraph, tuple[Any, list[str]]] = weakref.WeakKeyDictionary()


def topo_order(g: nx.DiGraph) -> list[str]:
    """A deterministic topological order: ties are broken by creation index.

    Kept per graph while its nodes, indices and edges stay the same (the check, the analysis and
    every backend ask for it several times; ``dlagraph fit`` compiles thousands of graphs)."""
    key = (tuple((n, a.get("index")) for n, a in g.nodes(data=True)), frozenset(g.edges))
    hit = _ORDERS.get(g)
    if hit is None or hit[0] != key:
        order = list(nx.lexicographical_topological_sort(g, key=lambda n: g.nodes[n]["index"]))
        _ORDERS[g] = hit = (key, order)
    return list(hit[1])


def describe(g: nx.DiGraph, n: str) -> str:
    """``'level3.tree1.root' (from levels[3])``: how errors name a node."""
    src = g.nodes[n].get("meta", {}).get("spec_path")
    return f"{clip(repr(n))} (from {src})" if src else clip(repr(n))


def is_path(text: object) -> bool:
    """A dotted module path of identifiers (what may reach generated source as ``self.<path>``)."""
    return (
        isinstance(text, str)
        and _PATH.fullmatch(text) is not None
        and not any(keyword.iskeyword(part) for part in text.split("."))
    )


_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def _fail(problems: list[str]) -> None:
    if problems:
        raise GraphError("graph check failed:\n  " + "\n  ".join(problems))


def _check_node(g: nx.DiGraph, n: str) -> list[str]:
    """The node's op, record, meta and layout have their declared types: a graph reloaded from
    JSON cannot smuggle code or nonsense into a backend."""
    a = g.nodes[n]
    shown = clip(repr(n))
    if a.get("op") not in OPS:
        return [f"node {shown}: unknown op {clip(repr(a.get('op')))}"]
    problems = []
    if not is_path(n):
        problems.append(f"node {shown}: ids must be dotted identifiers")
    if type(a.get("index")) is not int:
        problems.append(f"node {shown}: `index` must be an int")
    definition = OPS[a["op"]]
    for key, t in (("rec", definition.record), ("meta", Meta), ("layout", Layout)):
        try:
            _adapter(t).validate_python(a.get(key), strict=True)
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(map(str, err["loc"]))
            problems.append(f"node {shown}: `{key}.{where}`: {clip(err['msg'], 80)}".rstrip("."))
    if problems:
        return problems
    rec, layout, meta = a["rec"], a["layout"], a["meta"]
    for key, pattern in _META_TEXT.items():
        texts = meta.get("arg_roles", []) if key == "role" else []
        for text in ([meta[key]] if key in meta else []) + texts:
            if len(text) > 200 or not pattern.fullmatch(text):
                problems.append(f"node {shown}: `meta.{key}` {clip(repr(text))} is not a {key}")
    ints = [v for v in rec.values() if type(v) is int]
    if any(not 0 <= v <= 10**7 for v in ints):
        problems.append(f"node {shown}: record values must be non-negative and at most 10^7")
    if definition.owns_module:
        mod = layout.get("module", "")
        if not is_path(mod) or not (mod == n or mod.endswith("." + n)):
            problems.append(
                f"node {shown}: `layout.module` {clip(repr(mod))} is not the node's module path "
                f"(its id, or its id under a prefix)"
            )
    for field, name in layout.get("symbols", {}).items():
        if name not in SYMBOLS or field not in rec:
            problems.append(f"node {shown}: symbol {clip(repr(name))} for {clip(repr(field))}")
    try:
        definition.layers(
            NodeView(n, rec)
        )  # a block's type and options are validated by the registry here
    except Exception as e:
        problems.append(f"node {shown}: {a['op']}: {clip(str(e), 120)}")
    return problems


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


def _check_facts(g: nx.DiGraph) -> list[str]:
    """The graph attributes have their declared types, and every string among them the content
    its kind allows (they reach generated source, docstrings and diagrams); a reloaded graph's
    ``spec`` must be a valid spec whose name, texts, layout and input channels are the graph's."""
    facts = g.graph
    try:
        _adapter(Facts).validate_python(
            {k: v for k, v in facts.items() if k in Facts.__annotations__}, strict=True
        )
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(map(str, err["loc"]))
        return [f"graph attribute `{where}`: {clip(err['msg'], 80)}".rstrip(".")]
    problems = []
    paths = [(k, facts[k]) for k in ("input", "output") if k in facts]
    for key in ("modules", "official_only", "unused"):
        paths += [(f"{key}[{i}]", p) for i, p in enumerate(facts.get(key, []))]
    for i, lv in enumerate(facts.get("levels", [])):
        paths += [(f"levels[{i}].module", lv["module"]), (f"levels[{i}].output", lv["output"])]
    for where, text in paths:
        if not is_path(text):
            problems.append(f"graph attribute `{where}` {clip(repr(text))} is not a module path")
    if "spec" not in facts:
        problems.append("graph attribute `spec` is missing (the spec the graph was compiled from)")
    else:
        try:
            spec = load_spec(facts["spec"])
        except SpecError as e:
            return problems + [f"graph attribute `spec` is not a valid spec: {clip(str(e), 120)}"]
        for key in ("name", "paper_name", "reference", "layout", "in_channels"):
            if key in facts and facts[key] != getattr(spec, key):
                problems.append(
                    f"graph attribute `{key}` {clip(repr(facts[key]))} is not the spec's "
                    f"{clip(repr(getattr(spec, key)))}"
                )
    return problems


def check(g: nx.DiGraph) -> list[str]:
    """Lint the IR; return the ids of the unused (checkpoint-only) nodes.

    Checks: every node's record, meta and layout against its op's declared types; acyclic; ports
    contiguous from 0; one input and one output; the op's own channel rules (sums at aggregation
    nodes, agreement on every other edge and shortcut); every node reachable from the input and
    reaching the output, except nodes marked ``unused``, which must *not* reach it; every
    module-owning node registered exactly once.

    Raises:
        GraphError: naming each offending node and the spec path that produced it.
    """
    problems = [p for n in g.nodes for p in _check_node(g, n)] + _check_facts(g)
    _fail(problems)
    if not nx.is_directed_acyclic_graph(g):
        cycle = nx.find_cycle(g)
        _fail([f"graph has a cycle: {' -> '.join(u for u, _ in cycle)}"])
    _check_ports(g, problems)
    ins = [n for n, a in g.nodes(data=True) if a["op"] == "input"]
    outs = [n for n, a in g.nodes(data=True) if a["op"] == "output"]
    if len(ins) != 1 or len(outs) != 1:
        _fail([f"graph needs exactly one input and one output node (got {ins} and {outs})"])
    src, dst = ins[0], outs[0]
    for n in g.nodes:
        found = op(g, n).lint(view(g, n))
        problems += [f"node {describe(g, n)}: {p}" for p in found]
    reach = nx.descendants(g, src) | {src}
    live = nx.ancestors(g, dst) | {dst}
    unused = []
    for n, a in g.nodes(data=True):
        if n not in reach:
            problems.append(f"node {describe(g, n)}: not reachable from the input")
        if a["layout"].get("unused"):
            unused.append(n)
            if n in live:
                problems.append(f"node {describe(g, n)}: marked unused but reaches the output")
        elif n not in live:
            problems.append(f"node {describe(g, n)}: does not reach the output")
    modules = g.graph.get("modules", [])
    owners = [n for n, a in g.nodes(data=True) if OPS[a["op"]].owns_module]
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


def feature_info(g: nx.DiGraph) -> list[dict[str, Any]]:
    """timm-style ``feature_info`` of every level still in the graph: index, channels, reduction,
    module and node (the level's output)."""
    return [
        {
            "index": lv["index"],
            "num_chs": channels(g, lv["output"]),
            "reduction": reduction(g, lv["output"]),
            "module": lv["module"],
            "node": lv["output"],
        }
        for lv in g.graph["levels"]
        if lv["output"] in g
    ]


def stages(g: nx.DiGraph) -> list[dict[str, Any]]:
    """The backbone as a chain of callable steps, as timm's DLA runs it: the stem, the conv levels,
    then one step per tree level (eq. 1 chains the levels, so each step reads only the previous
    one's output). Each step: ``module`` (its module path), ``index`` (the level index, -1 for the
    stem), ``nodes`` (topological order, unused ones included), ``input`` and ``output`` nodes."""
    mods = {n: a["layout"].get("module") for n, a in g.nodes(data=True)}
    order = topo_order(g)
    out = []
    stem = next((n for n in order if is_stem(g.nodes[n]["meta"])), None)
    if stem is not None:
        out.append(
            {
                "module": mods[stem],
                "index": -1,
                "nodes": [stem],
                "input": g.graph["input"],
                "output": stem,
            }
        )
    for lv in g.graph["levels"]:
        prefix = mods[lv["output"]][: -len(lv["output"])]  # `base.` in a DLASeg
        path = prefix + lv["module"]
        nodes = [n for n in order if mods[n] == path or (mods[n] or "").startswith(path + ".")]
        entry = [u for n in nodes for u in inputs(g, n) if u not in nodes]
        out.append(
            {
                "module": path,
                "index": lv["index"],
                "nodes": nodes,
                "input": entry[0],
                "output": lv["output"],
            }
        )
    return out


def node_table(g: nx.DiGraph, nodes: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """One row per node (fx ``print_tabular`` style): name, op, inputs, channels, reduction,
    source."""
    rows = []
    for n in nodes if nodes is not None else topo_order(g):
        a = g.nodes[n]
        rec = a["rec"]
        cin = rec.get("in_channels", rec.get("channels", ""))
        rows.append(
            {
                "name": n,
                "op": a["op"],
                "inputs": inputs(g, n),
                "channels": f"{cin}->{channels(g, n) or ''}",
                "reduction": reduction(g, n),
                "source": a["meta"].get("spec_path", ""),
            }
        )
    return rows
