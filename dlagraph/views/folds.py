"""The HTML view's fold states: the diagram as parts, put together again for any set of folded
clusters (a level, an HDA subtree, a head module drawn as one box with its totals).

The page lays each fold state out again with the same Graphviz (:mod:`dlagraph.views.render`'s
WebAssembly build, shipped in the page), so a folded level takes the room of one box. The page
assembles the DOT text itself (``view.js``'s ``assemble``, the same rules as :func:`assemble`
here: a test keeps the two equal); Python assembles the state the page opens on.

Why parts and not one DOT per state: a network has thousands of fold states (DLA-169's level 4
alone, an HDA tree of depth 3, has 26), and a drawing is laid out in 0.1-1 s.
"""

from __future__ import annotations

from typing import Any

import networkx as nx
from graphviz import quoting

from ..ir.analysis import Summary
from ..ir.graph import inputs
from .diagram import (
    DrawOptions,
    cluster_attrs,
    cluster_path,
    dot_id,
    drawn_nodes,
    edge_attrs,
    edge_shapes,
    header,
    legend,
    node_attrs,
    port,
)

__all__ = ["fold_parts", "assemble", "fold_id"]


def fold_id(cluster: str) -> str:
    """The DOT id of a folded cluster's box: quoted, with a colon no node's id has."""
    return quoting.quote(f"fold:{cluster}")


def _attrs(attrs: dict[str, str]) -> str:
    return quoting.attr_list(None, kwargs=attrs).strip()  # ` [a=b c=d]` -> `[a=b c=d]`


def fold_parts(
    g: nx.DiGraph,
    opts: DrawOptions,
    fold_labels: dict[str, str],
    summary: Summary | None = None,
) -> dict[str, Any]:
    """The diagram of ``g`` as parts :func:`assemble` (and the page) put together.

    ``fold_labels``: the label of each cluster's box when it is folded (the page's totals).
    Returns ``head`` (the graph's attributes and defaults), ``items`` (the tree of clusters and
    nodes in the order they are declared: ``["n", KEY]`` or ``["c", NAME, [items]]``),
    ``nodes`` and ``clusters`` (their DOT statements), ``folds`` (each cluster's box), ``paths``
    (each node's clusters, outermost first), ``edges`` (``[u, v, attrs drawn into v, attrs drawn
    into v's folded box]``) and ``tail`` (the legend).
    """
    shapes = edge_shapes(g, opts, summary)
    order = drawn_nodes(g, opts)
    head = header(g, opts).source
    head = head[: head.rindex("}")]
    items: list[Any] = []
    clusters: dict[str, str] = {}
    index: dict[str, list[Any]] = {}
    paths: dict[str, list[str]] = {}
    for n in order:
        path = cluster_path(g, n)
        paths[n] = path
        level = items
        for depth, name in enumerate(path):
            if name not in index:
                index[name] = []
                level.append(["c", name, index[name]])
                clusters[name] = "graph " + _attrs(
                    {**cluster_attrs(g, name, depth), **({"id": f"c:{name}"} if opts.ids else {})}
                )
            level = index[name]
        level.append(["n", n])
    # input and output first, as `draw` declares them (the order of declarations steers dot)
    items.sort(key=lambda it: it[0] != "n")
    # quoted: a node may be named like a DOT keyword (a CenterNet task head `node`, `edge`)
    ids = {n: quoting.quote(dot_id(n)) for n in order}
    nodes = {n: f"{ids[n]} {_attrs(node_attrs(g, n, opts))}" for n in order}
    folds = {  # a cluster of nodes only `ir` draws (unused ones) has no totals: its name
        name: f"{fold_id(name)} {_attrs(_fold_look(fold_labels.get(name, name), name, opts))}"
        for name in clusters
    }
    opens = {name: f"subgraph {quoting.quote('cluster_' + name)} {{" for name in clusters}
    drawn = set(order)
    edges = []
    for n in order:
        for u in inputs(g, n):
            if u in drawn:
                edges.append(
                    [
                        u,
                        n,
                        _attrs(edge_attrs(g, u, n, opts, shapes, port(g, u, n, opts))),
                        _attrs(edge_attrs(g, u, n, opts, shapes, None)),
                    ]
                )
    tail = ""
    if opts.legend:
        tail = legend().source
        tail = tail[tail.index("{") + 2 : tail.rindex("}")]
    return {
        "head": head,
        "items": items,
        "nodes": nodes,
        "clusters": clusters,
        "opens": opens,
        "folds": folds,
        "dot_ids": ids,
        "fold_ids": {name: fold_id(name) for name in clusters},
        "paths": paths,
        "edges": edges,
        "tail": tail,
        "ids": opts.ids,
    }


def _fold_look(label: str, name: str, opts: DrawOptions) -> dict[str, str]:
    look = {
        "label": label,
        "shape": "box",
        "style": "rounded,filled",
        "fillcolor": "#eef3f8",
        "color": "#5d8aa8",
        "penwidth": "1.5",
        "fontsize": "10",
    }
    return {**look, "id": f"fold:{name}"} if opts.ids else look


def assemble(parts: dict[str, Any], folded: set[str] | frozenset[str]) -> str:
    """The DOT text of the diagram with the clusters in ``folded`` drawn as one box each (a
    cluster inside a folded one is hidden with it). ``view.js``'s ``assemble`` is this, line for
    line."""
    lines = [parts["head"].rstrip("\n")]

    def emit(items: list[Any], indent: str) -> None:
        for item in items:
            if item[0] == "n":
                lines.append(indent + parts["nodes"][item[1]])
            elif item[1] in folded:
                lines.append(indent + parts["folds"][item[1]])
            else:
                lines.append(indent + parts["opens"][item[1]])
                lines.append(f"{indent}\t{parts['clusters'][item[1]]}")
                emit(item[2], indent + "\t")
                lines.append(indent + "}")

    emit(parts["items"], "\t")

    def drawn_as(n: str) -> tuple[str, str]:
        """The name a node is drawn as (its own, or its outermost folded cluster's) and the
        DOT id of what it is drawn as."""
        c = next((c for c in parts["paths"][n] if c in folded), None)
        return (n, parts["dot_ids"][n]) if c is None else (c, parts["fold_ids"][c])

    seen: set[tuple[str, str]] = set()
    for u, v, into_node, into_fold in parts["edges"]:
        (du, iu), (dv, iv) = drawn_as(u), drawn_as(v)
        if du == dv or (du, dv) in seen:
            continue
        seen.add((du, dv))
        a = into_node if iv == parts["dot_ids"][v] else into_fold
        if parts["ids"]:
            a = (a[:-1] + " " if a else "[") + f'id="e:{du}->{dv}"]'
        lines.append(f"\t{iu} -> {iv} {a}".rstrip())
    if parts["tail"]:
        lines.append(parts["tail"].rstrip("\n"))
    lines.append("}")
    return "\n".join(lines) + "\n"
