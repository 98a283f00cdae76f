"""The deploy rewrites' plans, read from the DAG (no torch, no forward pass): which convs read a
concatenation and how its input channels are laid out, which roots may be split per input, and
the spec whose levels are padded to a channel multiple. :mod:`dlagraph.deploy.rewrites` applies
them to built modules. The third plan of this kind, the node order of least live memory, is
:func:`dlagraph.ir.memory.run_order`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import networkx as nx

from .graph import channels, inputs, op, topo_order, view

__all__ = ["ConcatConv", "concat_convs", "padded_spec"]


@dataclass(frozen=True)
class ConcatConv:
    """A node whose conv reads ``cat(inputs)``: its module path (the layout's: the official
    layout's heads put the backbone under ``base.``), the conv weight's state_dict key, its
    inputs' channels in concat order, and whether it is a splittable ``DlaRoot``."""

    module: str
    weight: str
    splits: tuple[int, ...]
    splittable: bool


def concat_convs(g: nx.DiGraph) -> list[ConcatConv]:
    """Every conv over a concatenation in ``g``, in topological order."""
    out = []
    for n in topo_order(g):
        o = op(g, n)
        if not o.concat or g.nodes[n]["layout"].get("unused"):
            continue
        conv = o.layers(view(g, n))[0].name
        module = g.nodes[n]["layout"].get("module", n)
        out.append(
            ConcatConv(
                module=module,
                weight=f"{module}.{conv}.weight",
                splits=tuple(channels(g, i) for i in inputs(g, n)),
                splittable=o.concat == "split",
            )
        )
    return out


def padded_spec(g: nx.DiGraph, multiple: int) -> dict[str, Any] | None:
    """The spec of ``g`` with every level's channels rounded up to ``multiple``; ``None`` where
    they already are, or ``g`` carries no spec (a graph read from elsewhere)."""
    spec = g.graph.get("spec")
    if spec is None or multiple < 2:
        return None
    levels = [
        {**lv, "channels": math.ceil(lv["channels"] / multiple) * multiple} for lv in spec["levels"]
    ]
    return None if levels == spec["levels"] else {**spec, "levels": levels}
