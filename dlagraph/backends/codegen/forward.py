"""The statements of generated ``forward`` methods: one per DAG node, and a method per tree level.

The backbone runs as timm's does, step by step (:func:`dlagraph.ir.graph.stages`): the stem and
the conv levels are single calls, each tree level is a method ``forward_level<i>`` whose body has
one statement per node. A ``del`` frees each activation after its last reader, so the flat bodies
hold no more memory than timm's nested modules.
"""

from __future__ import annotations

from typing import Any

import networkx as nx

from ...base.names import var_name
from ...ir.analysis import Summary
from ...ir.graph import inputs, op, stages, view
from ...ir.memory import run_order
from .layout import call_parts, del_lines, source, wrap_statement

__all__ = ["Bodies", "bodies"]

Item = tuple[list[str], str, list[str]]  # lines, the variable defined, the variables read


def _statement(g: nx.DiGraph, n: str, var: dict[str, str]) -> Item:
    a, definition = g.nodes[n], op(g, n)
    ins = [var.get(u, var_name(u)) for u in inputs(g, n)]
    v = view(g, n)
    call, comment = definition.call(v), definition.comment(v)
    lines = wrap_statement(var_name(n), *call_parts(call, ins, a["layout"].get("module")), comment)
    return lines, var_name(n), ins


def _with_frees(items: list[Item], keep: set[str]) -> list[str]:
    """The items' lines, each followed by ``del`` of the variables read there for the last time."""
    last: dict[str, int] = {}
    for i, (_, _, reads) in enumerate(items):
        for v in reads:
            last[v] = i
    frees: dict[int, list[str]] = {}
    for v, i in last.items():
        if v not in keep and v != "x":
            frees.setdefault(i, []).append(v)
    out: list[str] = []
    for i, (lines, _, _) in enumerate(items):
        out += lines + (del_lines(frees[i]) if i in frees else [])
    return out


class Bodies:
    """What the template prints: level methods, the backbone steps, and ``forward``'s body."""

    def __init__(self) -> None:
        self.levels: list[dict[str, Any]] = []  # {name, doc, lines}
        self.steps: list[tuple[int, str]] = []  # (level index, callable), the stem first
        self.forward: list[str] = []  # forward's body (networks without a classifier)
        self.return_type = "torch.Tensor"


def bodies(g: nx.DiGraph, summary: Summary | None = None) -> Bodies:
    """The forward methods of ``g`` (``summary``: its summary at the default input size, which
    the order of least memory is computed at, where the caller has it)."""
    out = Bodies()
    facts = {lv["index"]: lv for lv in g.graph["levels"]}
    top: dict[str, Item] = {}
    var = {g.graph["input"]: "x"}
    for st in stages(g):
        if len(st["nodes"]) == 1:
            top[st["output"]] = _statement(g, st["output"], var)
            out.steps.append((st["index"], f"self.{g.nodes[st['output']]['layout']['module']}"))
            continue
        name = f"forward_level{st['index']}"
        inner = {st["input"]: "x"}
        items = [
            _statement(g, n, inner) for n in st["nodes"] if not g.nodes[n]["layout"].get("unused")
        ]
        ret = var_name(st["output"])
        lv = facts[st["index"]]
        eq5 = g.nodes[st["output"]]["meta"].get("eq") == "eq5"
        out.levels.append(
            {
                "name": name,
                "doc": f"Level {lv['index'] + 1}: an HDA tree of depth {lv['depth']}, "
                f"{lv['channels']} ch (eq. 2{'; its root also takes S(x), eq. 5' if eq5 else ''}).",
                "lines": _with_frees(items, {ret}) + [f"return {ret}"],
            }
        )
        out.steps.append((st["index"], f"self.{name}"))
        read = var.get(st["input"], var_name(st["input"]))
        top[st["output"]] = ([f"{ret} = self.{name}({read})"], ret, [read])
    output = g.graph["output"]
    # the steps and the head's nodes in the order that keeps the fewest activations alive
    order = [n for n in run_order(g, summary) if n != output]
    lines = [top[n] if n in top else _statement(g, n, var) for n in order]
    ins = [var.get(u, var_name(u)) for u in inputs(g, output)]
    ret = source(op(g, output).call(view(g, output)), ins, None)
    lines.append(([f"return {ret}"], "", ins))
    out.forward = _with_frees(lines, set(ins))
    definition = op(g, output)
    out.return_type = definition.return_type(view(g, output))  # type: ignore[attr-defined]
    return out
