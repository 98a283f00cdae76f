"""Printing the IR's expressions as Python, laid out exactly as ``ruff format`` would."""

from __future__ import annotations

import enum
import math
from typing import Any

from ...base.errors import CodegenError, one_line
from ...ir.ops import Expr, In, Sym

__all__ = ["WIDTH", "literal", "source", "call_parts", "wrap_statement", "del_lines"]

WIDTH = 100  # ruff's line length: lines are wrapped here exactly as `ruff format` would


def literal(value: Any) -> str:
    """Python source for a value: a literal that evaluates back to it (``float("nan")`` for
    non-finite floats, the value of an Enum), or a CodegenError."""
    if isinstance(value, enum.Enum):
        return literal(value.value)
    if isinstance(value, str) and value.isprintable() and not set(value) & {'"', "\\"}:
        return f'"{value}"'  # the quotes `ruff format` prefers
    if value is None or isinstance(value, (bool, int, str)):
        return repr(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return repr(value)
        return f'float("{value}")' if value == value else 'float("nan")'
    if isinstance(value, (list, tuple)):
        items = [literal(v) for v in value]
        if isinstance(value, list):
            return f"[{', '.join(items)}]"
        return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return "{" + ", ".join(f"{k!r}: {literal(v)}" for k, v in value.items()) + "}"
    raise CodegenError(
        f"a value of type {type(value).__name__} cannot be written into generated source; use "
        f"numbers, strings, booleans, enums, or lists and mappings of them"
    )


def source(value: Any, ins: list[str], module: str | None) -> str:
    """The source of an expression; ``ins`` are the variables of the node's inputs and
    ``module`` its module path (for ``self``)."""
    if isinstance(value, In):
        return ins[value.port]
    if isinstance(value, Sym):
        return value.name
    if isinstance(value, Expr):
        fn, args = call_parts(value, ins, module)
        return f"{fn}({', '.join(args)})"
    if isinstance(value, list):
        return f"[{', '.join(source(v, ins, module) for v in value)}]"
    if isinstance(value, tuple):
        items = [source(v, ins, module) for v in value]
        return f"({items[0]},)" if len(items) == 1 else ", ".join(items)
    if isinstance(value, dict):
        items = [f"{literal(k)}: {source(v, ins, module)}" for k, v in value.items()]
        return "{" + ", ".join(items) + "}"
    return literal(value)


def call_parts(e: Expr, ins: list[str], module: str | None) -> tuple[str, list[str]]:
    """``(callee, [argument sources])`` of a call expression."""
    if any(not k.isidentifier() for k, _ in e.kwargs):
        raise CodegenError(f"{e.fn}: keyword names must be identifiers")
    fn = f"self.{module}" if e.fn == "self" else e.fn
    args = [source(a, ins, module) for a in e.args]
    return fn, args + [f"{k}={source(v, ins, module)}" for k, v in e.kwargs]


def wrap_statement(
    lhs: str, fn: str, args: list[str], comment: str | None = None, indent: int = 8
) -> list[str]:
    """``lhs = fn(args)  # comment``, laid out exactly as ``ruff format`` would: on one line if it
    fits (the comment moves above the statement when only the comment does not fit), else the
    arguments on one indented line, else one argument per line."""
    flat = f"{lhs} = {fn}({', '.join(args)})"
    comment = one_line(comment) if comment else comment
    if comment and indent + len(flat) + 4 + len(comment) <= WIDTH:
        return [f"{flat}  # {comment}"]
    above = [f"# {comment}"] if comment else []
    if indent + len(flat) <= WIDTH:
        return above + [flat]
    inner = ", ".join(args)
    if indent + 4 + len(inner) <= WIDTH:
        return above + [f"{lhs} = {fn}(", f"    {inner}", ")"]
    if len(args) == 1 and args[0].startswith("["):  # a single list argument is hugged
        items = args[0][1:-1].split(", ")
        return (
            above + [f"{lhs} = {fn}(", "    ["] + [f"        {x}," for x in items] + ["    ]", ")"]
        )
    return above + [f"{lhs} = {fn}("] + [f"    {x}," for x in args] + [")"]


def del_lines(names: list[str], indent: int = 8) -> list[str]:
    """``del a, b`` lines within the width: activations are freed as soon as nothing reads them
    (as in timm's nested forwards), which keeps peak memory and CPU time equal to timm's."""
    lines, cur = [], "del"
    for name in names:
        nxt = f"{cur} {name}" if cur == "del" else f"{cur}, {name}"
        if indent + len(nxt) > WIDTH:
            lines.append(cur)
            nxt = f"del {name}"
        cur = nxt
    return lines + [cur]
