"""Graphviz diagrams of the aggregation tree, in the style of the paper's Figures 1(c, f) and 2(a).

One cluster per level, nested clusters per HDA subtree; blocks are boxes, aggregation nodes (N) are
circles, S(x) pools are trapezia; IDA edges (level to level, and the S(x) input of eq. 5) are drawn
bold and red, HDA edges inside a level thin and black. The small number at the head of each edge
into an aggregation node is its argument position (official concat order, or eq. 2 order with
``paper_order``). The view is curated: IR attributes reach labels only with ``ir=True``.

No torch here, and no Graphviz binary is needed to build the DOT source.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any, Literal

import graphviz
import networkx as nx

from . import __version__
from .analysis import node_layers, summarize
from .compile import compile_spec
from .graph import inputs, topo_order
from .io import MARKER

__all__ = ["draw", "DrawOptions"]

IDA_COLOR = "#c0392b"
COLORS = {
    "block": "#dbe9f6",
    "aggregate": "#f8c471",
    "downsample": "#d5f5e3",
    "project": "#ebdef0",
    "conv": "#eeeeee",
    "pool": "#eeeeee",
    "dropout": "#eeeeee",
    "classifier": "#eeeeee",
    "collapsed": "#d6eaf8",
}


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


def _level_of(n: str) -> str:
    top = n.split(".")[0]
    return "level0" if top == "base_layer" else top


def _level_title(g: nx.DiGraph, top: str) -> str:
    if top.startswith("level"):
        i = int(top[5:])
        lv = g.graph["spec"]["levels"][i]
        paper = f"Level {i + 1}"
        if "depth" in lv:
            dil = max(
                (
                    a.get("dilation", 1)
                    for n, a in g.nodes(data=True)
                    if n.startswith(top + ".") and a["op"] == "block"
                ),
                default=1,
            )
            extra = f", dilation {dil}" if dil > 1 else ""
            return f"{paper}: HDA depth {lv['depth']}, {lv['channels']} ch{extra} ({top})"
        return f"{paper}: {lv['channels']} ch ({top})"
    return "head"


def _collapse_key(n: str, depth: int | None) -> str:
    """The node that ``n`` is drawn as: itself, or the collapsed subtree containing it."""
    parts = n.split(".")  # level3.tree1.tree2.root: the node sits in subtree depth 2
    if depth is None or not parts[0].startswith("level") or len(parts) <= depth + 2:
        return n
    return ".".join(parts[: depth + 2])


def _node_attrs(g: nx.DiGraph, n: str, opts: DrawOptions) -> dict[str, str]:
    a = g.nodes[n]
    op = a["op"]
    short = n.split(".")[-1]
    cin, cout = a.get("in_channels"), a.get("out_channels")
    ir = f"\n{n}\n({a.get('spec_path', '')})" if opts.ir else ""
    style = {"style": "filled", "fillcolor": COLORS.get(op, "white"), "fontsize": "10"}
    if op == "input":
        return {"label": f"input\n{cout} ch", "shape": "oval", "fontsize": "10"}
    if op == "output":
        return {"label": "output", "shape": "oval", "fontsize": "10"}
    if op == "aggregate":
        extra = "+" if a.get("residual") else ""
        return {
            **style,
            "label": f"N{extra}",
            "shape": "circle",
            "width": "0.35",
            "fixedsize": "true",
            "xlabel": f"{cin}→{cout}{ir}",
            "fontsize": "11",
        }
    if op == "downsample":
        if any(g.nodes[u]["op"] == "aggregate" for u in g.successors(n)):
            return {**style, "label": f"S{ir}", "shape": "invtrapezium", "height": "0.3"}
        return {
            **style,
            "label": f"pool{ir}",
            "shape": "invtrapezium",
            "height": "0.25",
            "fillcolor": "#f4f6f6",
            "fontsize": "8",
        }
    if op == "project":
        return {**style, "label": f"P {cin}→{cout}{ir}", "shape": "box", "height": "0.3"}
    if op == "block":
        head = f"{a.get('role', '')} {a['block']} {cin}→{cout}" + (
            f" /{a['stride']}" if a["stride"] > 1 else ""
        )
        if opts.detail == "layers":
            rows = "".join(
                f"<TR><TD ALIGN='LEFT'>{html.escape(layer.name)}</TD><TD ALIGN='LEFT'>"
                f"{_layer_text(layer)}</TD></TR>"
                for layer in node_layers(a)
            )
            return {
                **style,
                "shape": "plain",
                "label": (
                    f"<<TABLE BORDER='1' CELLBORDER='0' CELLSPACING='0' BGCOLOR='{COLORS['block']}'>"
                    f"<TR><TD COLSPAN='2'><B>{html.escape(head)}</B></TD></TR>{rows}</TABLE>>"
                ),
            }
        return {**style, "label": head + ir, "shape": "box", "style": "filled,rounded"}
    if op == "conv" and a.get("eq") == "eq1":  # an IDA projection
        return {
            **style,
            "label": f"P {cin}→{cout}{ir}",
            "shape": "box",
            "height": "0.3",
            "fillcolor": COLORS["project"],
        }
    if op == "conv":
        label = f"{short}: {a['convs']}x conv{a['kernel_size']}x{a['kernel_size']} {cin}→{cout}"
        if a["stride"] > 1:
            label += f" /{a['stride']}"
        return {**style, "label": label + ir, "shape": "box"}
    if op == "upsample":
        frozen = "" if a.get("trainable", True) else ", frozen"
        return {
            **style,
            "label": f"U x{a['factor']}{frozen}{ir}",
            "shape": "house",
            "fillcolor": "#fadbd8",
            "height": "0.3",
        }
    names = {
        "pool": "global avg pool",
        "dropout": f"dropout {a.get('p')}",
        "classifier": f"fc 1x1 {cin}→{cout}",
        "interpolate": f"bilinear x{a.get('scale')}",
        "log_softmax": "log-softmax",
    }
    return {**style, "label": names.get(op, op) + ir, "shape": "box"}


def _layer_text(layer: Any) -> str:
    if layer.kind == "bn":
        return "BN"
    g = f" g{layer.groups}" if layer.groups > 1 else ""
    s = f" /{layer.stride}" if layer.stride > 1 else ""
    return f"{layer.kernel_size}x{layer.kernel_size} {layer.in_channels}→{layer.out_channels}{g}{s}"


def _collapsed_attrs(g: nx.DiGraph, key: str, members: list[str]) -> dict[str, str]:
    blocks = sum(g.nodes[m]["op"] == "block" for m in members)
    aggs = sum(g.nodes[m]["op"] == "aggregate" for m in members)
    out = g.nodes[members[-1]].get("out_channels")
    return {
        "label": f"{key.split('.', 1)[-1]}\n{blocks} blocks, {aggs} N\n→{out} ch",
        "shape": "box3d",
        "style": "filled",
        "fillcolor": COLORS["collapsed"],
        "fontsize": "10",
    }


def _edge_label(g: nx.DiGraph, u: str, opts: DrawOptions, shapes: dict[str, Any]) -> str:
    if opts.labels == "none":
        return ""
    if opts.labels == "shapes":
        return "x".join(map(str, shapes[u]))
    return f"{g.nodes[u].get('out_channels')}"


def _is_ida(g: nx.DiGraph, u: str, v: str) -> bool:
    lu, lv = _level_of(u), _level_of(v)
    if g.nodes[v]["op"] == "output" or g.nodes[u]["op"] == "input":
        return False
    cross = lu != lv and lu.startswith("level") and lv.startswith("level")
    s_input = g.nodes[u]["op"] == "downsample" and g.nodes[v]["op"] == "aggregate"
    upsampling_ida = "eq1" in (g.nodes[u].get("eq"), g.nodes[v].get("eq"))
    return cross or s_input or upsampling_ida


def draw(spec: Any, **options: Any) -> graphviz.Digraph:
    """The aggregation-tree diagram of a spec or compiled DAG as a ``graphviz.Digraph``.

    Options (see :class:`DrawOptions`): ``collapse_depth``, ``detail`` ("blocks" | "layers"),
    ``rankdir`` ("TB" | "LR"), ``paper_order``, ``labels`` ("none" | "channels" | "shapes"),
    ``input_size``, ``legend``, ``ir``. The DOT source is deterministic.

    Example:
        >>> dot = draw("specs/dla36.yaml", collapse_depth=0)
        >>> "cluster_level3" in dot.source
        True
    """
    opts = DrawOptions(**options)
    g = spec if isinstance(spec, nx.DiGraph) else compile_spec(spec)
    shapes: dict[str, Any] = {}
    if opts.labels == "shapes":  # the only option that needs a size the network can take
        shapes = {ni.name: ni.shape for ni in summarize(g, opts.input_size).nodes}
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
        + (f" ({g.graph['spec'].get('paper_name')})" if g.graph["spec"].get("paper_name") else ""),
        labelloc="t",
        fontsize="16",
    )
    dot.attr("node", fontname="Helvetica")
    dot.attr("edge", fontname="Helvetica", fontsize="8", arrowsize="0.6")
    order = [n for n in topo_order(g) if not g.nodes[n].get("unused") or opts.ir]
    drawn: dict[str, list[str]] = {}
    for n in order:
        drawn.setdefault(_collapse_key(n, opts.collapse_depth), []).append(n)
    _clusters(dot, g, drawn, opts)
    seen: set[tuple[str, str]] = set()
    for n in order:
        dv = _collapse_key(n, opts.collapse_depth)
        ins = inputs(g, n)
        positions = {
            u: g.edges[u, n].get("paper_port" if opts.paper_order else "port", 0) for u in ins
        }
        for u in ins:
            if u not in g or (g.nodes[u].get("unused") and not opts.ir):
                continue
            du = _collapse_key(u, opts.collapse_depth)
            if du == dv or (du, dv) in seen:
                continue
            seen.add((du, dv))
            attrs = {"label": _edge_label(g, u, opts, shapes)}
            if g.nodes[n]["op"] == "aggregate" and dv == n:
                # the argument position, 1-based, in the edge label: head labels collide at
                # nodes with many inputs
                attrs["label"] = f"[{positions[u] + 1}] {attrs['label']}".strip()
            if _is_ida(g, u, n):
                attrs.update(color=IDA_COLOR, penwidth="2", fontcolor=IDA_COLOR)
            if g.nodes[n]["op"] == "block" and len(ins) == 2 and u == ins[1]:
                attrs.update(style="dashed")  # the shortcut
            dot.edge(_id(du), _id(dv), **{k: v for k, v in attrs.items() if v != ""})
    if opts.legend:
        _legend(dot)
    return dot


def _id(n: str) -> str:
    return n.replace(".", "_")


def _clusters(
    dot: graphviz.Digraph, g: nx.DiGraph, drawn: dict[str, list[str]], opts: DrawOptions
) -> None:
    """Nested clusters: a level, then each HDA subtree (``level3.tree1`` …) inside it."""
    tree: dict[str, Any] = {}
    for key in drawn:
        parts = key.split(".")
        top = _level_of(key)
        op = g.nodes[drawn[key][0]]["op"]
        if op in ("input", "output"):
            dot.node(_id(key), **_attrs_for(g, key, drawn, opts))
            continue
        if top.startswith("level"):
            path = [top] + [".".join(parts[:i]) for i in range(2, len(parts))]
        else:  # head nodes: a cluster, with nested clusters for dotted paths (dla_up.ida_0 …)
            path = ["head"] + [".".join(parts[:i]) for i in range(1, len(parts))]
        node = tree
        for p in path:
            node = node.setdefault(p, {})
        node.setdefault("__nodes__", []).append(key)

    def emit(parent: graphviz.Digraph, name: str, sub: dict[str, Any], depth: int) -> None:
        with parent.subgraph(name=f"cluster_{_id(name)}") as c:
            if depth == 0:
                title = _level_title(g, name) if name.startswith("level") else "head"
                c.attr(
                    label=title,
                    style="rounded,filled",
                    fillcolor="#fbfcfc",
                    color="#7f8c8d",
                    fontsize="12",
                )
            else:
                c.attr(
                    label=name.split(".", 1)[-1],
                    style="rounded,dashed",
                    color="#95a5a6",
                    fontsize="9",
                    fillcolor="white",
                )
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
        return _node_attrs(g, key, opts)
    return _collapsed_attrs(g, key, members)


def _legend(dot: graphviz.Digraph) -> None:
    with dot.subgraph(name="cluster_legend") as c:
        c.attr(label="legend", fontsize="11", style="rounded", color="#bdc3c7")
        c.node(
            "legend_block",
            "block B (L1/L2)",
            shape="box",
            style="filled,rounded",
            fillcolor=COLORS["block"],
            fontsize="9",
        )
        c.node(
            "legend_n",
            "N",
            shape="circle",
            style="filled",
            fillcolor=COLORS["aggregate"],
            fixedsize="true",
            width="0.35",
            fontsize="10",
        )
        c.node(
            "legend_s",
            "S(x) 2x2 pool",
            shape="invtrapezium",
            style="filled",
            fillcolor=COLORS["downsample"],
            fontsize="9",
        )
        c.node(
            "legend_p",
            "P shortcut proj.",
            shape="box",
            style="filled",
            fillcolor=COLORS["project"],
            fontsize="9",
        )
        c.node(
            "legend_text",
            "N+ = residual node (eq. 4)\\l[k] = argument k of N\\l"
            "red = IDA (eq. 1/5), black = HDA (eq. 2)\\ldashed = block shortcut\\l",
            shape="note",
            fontsize="9",
        )
        c.edge(
            "legend_s", "legend_n", color=IDA_COLOR, penwidth="2", label="[1]", fontcolor=IDA_COLOR
        )
        c.edge("legend_block", "legend_n", label="[2]")
        c.edge("legend_p", "legend_block", style="dashed")
