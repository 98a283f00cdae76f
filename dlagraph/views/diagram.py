"""Graphviz diagrams of the aggregation tree, in the style of the paper's Figures 1(c, f) and 2(a).

One cluster per level, nested clusters per HDA subtree; blocks are boxes, aggregation nodes (N) are
circles, S(x) pools are trapezia; IDA edges (level to level, and the S(x) input of eq. 5) are drawn
bold and red, HDA edges inside a level thin and black. The small number at the head of each edge
into an aggregation node is its argument position (official concat order, or eq. 2 order with
``paper_order``). The view is curated: IR attributes reach labels only with ``ir=True``.

No torch here, and no Graphviz binary is needed to build the DOT source.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import graphviz
import networkx as nx

from .._version import __version__
from ..base.errors import DlagraphError
from ..base.io import MARKER
from ..ir.analysis import Summary, summarize
from ..ir.compile import compile_spec
from ..ir.graph import (
    channels,
    inputs,
    is_aggregation,
    is_block,
    is_sx,
    op,
    topo_order,
    view,
)
from ..ir.ops import box

__all__ = ["draw", "DrawOptions", "cluster_path", "cluster_title"]

IDA_COLOR = "#c0392b"
_IDA = {"color": IDA_COLOR, "penwidth": "2", "fontcolor": IDA_COLOR}


@dataclass(frozen=True)
class DrawOptions:
    collapse_depth: int | None = None  # subtrees nested deeper than this become one node
    detail: Literal["blocks", "layers"] = "blocks"
    rankdir: Literal["LR", "TB"] = "TB"
    paper_order: bool = False
    labels: Literal["none", "channels", "shapes"] = "channels"
    input_size: tuple[int, int] | None = None  # for shape labels; default: the smallest valid
    legend: bool = True
    ir: bool = False  # show IR attributes (ids, spec paths, ports) in labels
    # SVG element ids from node names (n:NAME, c:CLUSTER, e:U->V): for scripts and the HTML view
    ids: bool = True


def _level_of(n: str) -> str:
    top = n.split(".")[0]
    return "level0" if top == "base_layer" else top


def _level_title(g: nx.DiGraph, top: str) -> str:
    lv = next((lv for lv in g.graph["levels"] if lv["module"] == top), None)
    if lv is None:
        return "head"
    paper = f"Level {lv['index'] + 1}"
    if lv["kind"] == "tree":
        extra = f", dilation {lv['dilation']}" if lv["dilation"] > 1 else ""
        return f"{paper}: HDA depth {lv['depth']}, {lv['channels']} ch{extra} ({top})"
    return f"{paper}: {lv['channels']} ch ({top})"


def _collapse_key(n: str, depth: int | None) -> str:
    """The node that ``n`` is drawn as: itself, or the collapsed subtree containing it."""
    parts = n.split(".")  # level3.tree1.tree2.root: the node sits in subtree depth 2
    if depth is None or not parts[0].startswith("level") or len(parts) <= depth + 2:
        return n
    return ".".join(parts[: depth + 2])


def _node_attrs(g: nx.DiGraph, n: str, opts: DrawOptions) -> dict[str, str]:
    a = g.nodes[n]
    attrs = op(g, n).look(view(g, n), opts.detail)
    if opts.ir and not attrs["label"].startswith("<"):
        attrs["label"] += f"\n{n}\n({a['meta'].get('spec_path', '')})"
    return attrs


def _collapsed_attrs(g: nx.DiGraph, key: str, members: list[str]) -> dict[str, str]:
    blocks = sum(is_block(g.nodes[m]["meta"]) for m in members)
    aggs = sum(is_aggregation(g.nodes[m]["meta"]) for m in members)
    label = f"{key.split('.', 1)[-1]}\n{blocks} blocks, {aggs} N\n→{channels(g, members[-1])} ch"
    return box(label, "collapsed", "box3d")


def _edge_label(g: nx.DiGraph, u: str, opts: DrawOptions, shapes: dict[str, Any]) -> str:
    if opts.labels == "none":
        return ""
    if opts.labels == "shapes":
        return "x".join(map(str, shapes[u]))
    return f"{channels(g, u)}"


def _is_ida(g: nx.DiGraph, u: str, v: str) -> bool:
    lu, lv = _level_of(u), _level_of(v)
    if v == g.graph["output"] or u == g.graph["input"]:
        return False
    cross = lu != lv and lu.startswith("level") and lv.startswith("level")
    s_input = is_sx(g.nodes[u]["meta"]) and is_aggregation(g.nodes[v]["meta"])
    upsampling_ida = "eq1" in (g.nodes[u]["meta"].get("eq"), g.nodes[v]["meta"].get("eq"))
    return cross or s_input or upsampling_ida


def draw(spec: Any, *, summary: Summary | None = None, **options: Any) -> graphviz.Digraph:
    """The aggregation-tree diagram of a spec (a ``Spec``, a preset name, a spec file or a
    mapping) or a compiled graph, as a ``graphviz.Digraph``.

    Options (see :class:`DrawOptions`): ``collapse_depth``, ``detail`` ("blocks" | "layers"),
    ``rankdir`` ("TB" | "LR"), ``paper_order``, ``labels`` ("none" | "channels" | "shapes"),
    ``input_size``, ``legend``, ``ir``, ``ids``. The DOT source is deterministic. ``summary``:
    the graph's :func:`~dlagraph.summarize` at ``input_size``, where the caller has it (shape
    labels read it instead of summarising again).

    Example:
        >>> dot = draw("dla36", collapse_depth=0)
        >>> "cluster_level3" in dot.source
        True
    """
    opts = DrawOptions(**options)
    g = spec if isinstance(spec, nx.DiGraph) else compile_spec(spec)
    shapes = edge_shapes(g, opts, summary)
    dot = header(g, opts)
    order = drawn_nodes(g, opts)
    drawn: dict[str, list[str]] = {}
    for n in order:
        drawn.setdefault(_collapse_key(n, opts.collapse_depth), []).append(n)
    _clusters(dot, g, drawn, opts)
    seen: set[tuple[str, str]] = set()
    for n in order:
        dv = _collapse_key(n, opts.collapse_depth)
        ins = inputs(g, n)
        positions = {u: port(g, u, n, opts) for u in ins}
        for u in ins:
            if u not in g or (g.nodes[u]["layout"].get("unused") and not opts.ir):
                continue
            du = _collapse_key(u, opts.collapse_depth)
            if du == dv or (du, dv) in seen:
                continue
            seen.add((du, dv))
            attrs = edge_attrs(g, u, n, opts, shapes, positions[u] if dv == n else None)
            if opts.ids:
                attrs["id"] = f"e:{du}->{dv}"
            dot.edge(_id(du), _id(dv), **attrs)
    if opts.legend:
        _legend(dot)
    return dot


def port(g: nx.DiGraph, u: str, n: str, opts: DrawOptions) -> int:
    """The argument position of ``u`` among ``n``'s inputs, in the order drawn."""
    return g.edges[u, n].get("paper_port" if opts.paper_order else "port", 0)


def edge_attrs(
    g: nx.DiGraph,
    u: str,
    n: str,
    opts: DrawOptions,
    shapes: dict[str, Any],
    position: int | None,
) -> dict[str, str]:
    """The look of the edge ``u -> n``; ``position``: its argument position when it is drawn
    into ``n`` itself (None when ``n`` is drawn inside a collapsed or folded box)."""
    attrs = {"label": _edge_label(g, u, opts, shapes)}
    if is_aggregation(g.nodes[n]["meta"]) and position is not None:
        # the argument position, 1-based, in the edge label: head labels collide at nodes with
        # many inputs
        attrs["label"] = f"[{position + 1}] {attrs['label']}".strip()
    if _is_ida(g, u, n):
        attrs.update(_IDA)
    ins = inputs(g, n)
    if is_block(g.nodes[n]["meta"]) and len(ins) == 2 and u == ins[1]:
        attrs.update(style="dashed")  # the shortcut
    return {k: v for k, v in attrs.items() if v != ""}


def edge_shapes(g: nx.DiGraph, opts: DrawOptions, summary: Summary | None) -> dict[str, Any]:
    """The output shape of every node, where the edges are labelled with shapes (else empty)."""
    if opts.labels != "shapes":  # the only option that needs a size the network can take
        return {}
    s = summary if summary is not None else summarize(g, opts.input_size)
    if opts.input_size is not None and s.input_size != tuple(opts.input_size):
        h, w = opts.input_size
        raise DlagraphError(
            f"the summary given is at {s.input_size[0]}x{s.input_size[1]}, not {h}x{w}"
        )
    return {ni.name: ni.shape for ni in s.nodes}


def drawn_nodes(g: nx.DiGraph, opts: DrawOptions) -> list[str]:
    """The nodes drawn, in order: the unused projections only with ``ir``."""
    return [n for n in topo_order(g) if not g.nodes[n]["layout"].get("unused") or opts.ir]


def header(g: nx.DiGraph, opts: DrawOptions) -> graphviz.Digraph:
    """An empty diagram with the graph's, nodes' and edges' defaults."""
    dot = graphviz.Digraph(name=g.graph["name"])
    dot.attr(
        rankdir=opts.rankdir,
        newrank="true",
        compound="true",
        fontname="Helvetica",
        nodesep="0.25",
        ranksep="0.35",
        comment=f"{MARKER} {__version__}",
        label=f"{g.graph['name']}"
        + (f" ({g.graph['paper_name']})" if g.graph["paper_name"] else ""),
        labelloc="t",
        fontsize="16",
    )
    dot.attr("node", fontname="Helvetica")
    dot.attr("edge", fontname="Helvetica", fontsize="8", arrowsize="0.6")
    return dot


def cluster_attrs(g: nx.DiGraph, name: str, depth: int) -> dict[str, str]:
    """The look of a level's cluster (depth 0) or of a subtree's inside it."""
    if depth == 0:
        return dict(
            label=cluster_title(g, name),
            style="rounded,filled",
            fillcolor="#fbfcfc",
            color="#7f8c8d",
            fontsize="12",
        )
    return dict(
        label=cluster_title(g, name),
        style="rounded,dashed",
        color="#95a5a6",
        fontsize="9",
        fillcolor="white",
    )


def node_attrs(g: nx.DiGraph, n: str, opts: DrawOptions) -> dict[str, str]:
    """The look of a node drawn as itself (with its SVG id where ``opts.ids``)."""
    attrs = _node_attrs(g, n, opts)
    return {**attrs, "id": f"n:{n}"} if opts.ids else attrs


def dot_id(n: str) -> str:
    """A node's DOT id."""
    return _id(n)


def _id(n: str) -> str:
    return n.replace(".", "_")


def cluster_path(g: nx.DiGraph, key: str) -> list[str]:
    """The clusters a drawn node sits in, outermost first: its level (``level3``, the stem in
    ``level0``) then each HDA subtree (``level3.tree1`` …), or ``head`` then each dotted module
    path (``dla_up``, ``dla_up.ida_0`` …) or, for a CenterNet task head, ``heads``; none for the
    input and output."""
    if key in (g.graph["input"], g.graph["output"]):
        return []
    parts = key.split(".")
    top = _level_of(key)
    if top.startswith("level"):
        return [top] + [".".join(parts[:i]) for i in range(2, len(parts))]
    if g.nodes[key]["meta"].get("spec_path", "").startswith("head.heads."):
        return ["head", "heads"]  # CenterNet's task heads (hm, wh, reg …), from `head.heads`
    return ["head"] + [".".join(parts[:i]) for i in range(1, len(parts))]


def cluster_title(g: nx.DiGraph, name: str) -> str:
    """A cluster's caption: the level's (``Level 4: HDA depth 2, 128 ch (level3)``), ``head``,
    or the subtree's path below its level."""
    if name == "head":
        return name
    if "." not in name and name.startswith("level"):
        return _level_title(g, name)
    return name.split(".", 1)[-1]


def _clusters(
    dot: graphviz.Digraph, g: nx.DiGraph, drawn: dict[str, list[str]], opts: DrawOptions
) -> None:
    """Nested clusters: a level, then each HDA subtree (``level3.tree1`` …) inside it."""
    tree: dict[str, Any] = {}
    for key in drawn:
        if drawn[key][0] in (g.graph["input"], g.graph["output"]):
            dot.node(_id(key), **_attrs_for(g, key, drawn, opts))
            continue
        path = cluster_path(g, key)
        node = tree
        for p in path:
            node = node.setdefault(p, {})
        node.setdefault("__nodes__", []).append(key)

    def emit(parent: graphviz.Digraph, name: str, sub: dict[str, Any], depth: int) -> None:
        with parent.subgraph(name=f"cluster_{_id(name)}") as c:
            if opts.ids:
                c.attr(id=f"c:{name}")
            c.attr(**cluster_attrs(g, name, depth))
            for key in sub.get("__nodes__", []):
                c.node(_id(key), **_attrs_for(g, key, drawn, opts))
            for child, csub in sub.items():
                if child != "__nodes__":
                    emit(c, child, csub, depth + 1)

    for name, sub in tree.items():
        emit(dot, name, sub, 0)


def _attrs_for(
    g: nx.DiGraph, key: str, drawn: dict[str, list[str]], opts: DrawOptions
) -> dict[str, str]:
    members = drawn[key]
    if len(members) == 1 and members[0] == key:
        attrs = _node_attrs(g, key, opts)
    else:
        attrs = _collapsed_attrs(g, key, members)
    return {**attrs, "id": f"n:{key}"} if opts.ids else attrs


def legend() -> graphviz.Digraph:
    """A diagram holding only the legend."""
    dot = graphviz.Digraph()
    _legend(dot)
    return dot


def _legend(dot: graphviz.Digraph) -> None:
    with dot.subgraph(name="cluster_legend") as c:
        c.attr(label="legend", fontsize="11", style="rounded", color="#bdc3c7")
        for name, attrs in (
            ("legend_block", box("block B (L1/L2)", "block", style="filled,rounded", fontsize="9")),
            ("legend_n", box("N", "aggregate", "circle", fixedsize="true", width="0.35")),
            ("legend_s", box("S(x) 2x2 pool", "downsample", "invtrapezium", fontsize="9")),
            ("legend_p", box("P shortcut proj.", "project", fontsize="9")),
        ):
            c.node(name, **attrs)
        c.node(
            "legend_text",
            "N+ = residual node (eq. 4)\\l[k] = argument k of N\\l"
            "red = IDA (eq. 1/5), black = HDA (eq. 2)\\ldashed = block shortcut\\l",
            shape="note",
            fontsize="9",
        )
        c.edge("legend_s", "legend_n", label="[1]", **_IDA)
        c.edge("legend_block", "legend_n", label="[2]")
        c.edge("legend_p", "legend_block", style="dashed")
