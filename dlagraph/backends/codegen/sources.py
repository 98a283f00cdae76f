"""The classes and helpers a generated file copies: the same source the interpreter runs.

Built-in blocks and helpers are read from ``nn/modules.py`` as text (parsed with
``ast``, so code generation never imports torch); a registered block's class is copied with
``inspect`` and stripped of its dlagraph contract (decorator, ``Options``, ``layers``).
"""

from __future__ import annotations

import ast
import builtins
import functools
import inspect
import textwrap
from pathlib import Path
from typing import Any

from ...base.errors import CodegenError
from ...base.names import IMPORTED

__all__ = [
    "IMPORTED",
    "library_names",
    "in_library_order",
    "generated_names",
    "builtin_source",
    "block_source",
    "with_dependencies",
]

# library classes a registered block may use too (the generated file then copies them)
BLOCK_HELPERS = {"DCN", "DeformConv"}
_MODULES = Path(__file__).resolve().parents[2] / "nn" / "modules.py"


@functools.cache
def _library() -> dict[str, str]:
    """Every top-level class and function of the module library, by name, in file order."""
    text = _MODULES.read_text()
    lines = text.splitlines(keepends=True)  # once: ast.get_source_segment splits per call
    return {
        node.name: _segment(lines, node)
        for node in ast.parse(text).body
        if isinstance(node, (ast.ClassDef, ast.FunctionDef))
    }


def _segment(lines: list[str], node: ast.stmt) -> str:
    """``ast.get_source_segment`` of a top-level statement (column 0) from the file's lines."""
    end = node.end_lineno or node.lineno
    last = lines[end - 1].encode()[: node.end_col_offset].decode()  # offsets count UTF-8 bytes
    return "".join(lines[node.lineno - 1 : end - 1]) + last


def library_names() -> frozenset[str]:
    """The names a generated file may define from the library: its helpers and classes."""
    return frozenset(_library())


def generated_names() -> frozenset[str]:
    """Every name a generated file defines or imports (a model class must take none of them)."""
    return library_names() | IMPORTED


def in_library_order(names: set[str]) -> list[str]:
    """``names`` in the library's file order (how a generated file lays them out).

    Raises:
        CodegenError: for a name the library does not define (never silently left out).
    """
    missing = sorted(names - library_names())
    if missing:
        raise CodegenError(f"the module library defines no {', '.join(map(repr, missing))}")
    return [n for n in _library() if n in names]


def with_dependencies(names: set[str], sources: list[str]) -> set[str]:
    """``names`` plus every library helper the given sources (and those helpers) refer to."""
    todo = [src for src in sources] + [builtin_source(n) for n in names]
    out = set(names)
    while todo:
        for dep in (_free_names(todo.pop()) & library_names()) - out:
            out.add(dep)
            todo.append(builtin_source(dep))
    return out


def builtin_source(name: str) -> str:
    """The source of a class or helper of ``nn/modules.py``."""
    try:
        return _library()[name].rstrip() + "\n"
    except KeyError:
        raise CodegenError(f"{name!r} is not in dlagraph's module library") from None


def block_source(block_type: Any) -> str:
    """The source of a block type's class, checked to need nothing a generated file lacks."""
    if isinstance(block_type.factory, str):
        return builtin_source(block_type.factory.rpartition(":")[2])
    obj = block_type.factory
    try:
        src = textwrap.dedent(inspect.getsource(obj))
    except (OSError, TypeError) as e:
        raise CodegenError(f"cannot copy the source of {obj!r} into generated code: {e}") from None
    src = _strip_contract(src)
    free = _free_names(src) - IMPORTED - BLOCK_HELPERS
    if free:
        raise CodegenError(
            f"{getattr(obj, '__qualname__', obj)} uses names a standalone file cannot import: "
            f"{', '.join(sorted(free))}; a registered block may use only "
            f"{', '.join(sorted(IMPORTED - set(dir(builtins))))}"
        )
    return src.rstrip() + "\n"


def _strip_contract(src: str) -> str:
    """Drop what only dlagraph needs from a block class: its registration decorator and the
    ``Options`` / ``layers`` contract members (they use pydantic and dlagraph, not torch)."""
    tree = ast.parse(src)
    top = tree.body[0]
    lines = src.splitlines()
    drop: set[int] = set()
    if isinstance(top, (ast.ClassDef, ast.FunctionDef)):
        drop |= set(range(0, top.lineno - 1))  # decorators
    if isinstance(top, ast.ClassDef):
        for node in top.body:
            named = getattr(node, "name", None)
            if named in ("Options", "layers"):
                first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
                drop |= set(range(first - 1, node.end_lineno or node.lineno))
    kept = [line for i, line in enumerate(lines) if i not in drop]
    out, blank = [], 0
    for line in kept:  # no runs of blank lines where members were removed
        blank = blank + 1 if not line.strip() else 0
        if blank <= 1:
            out.append(line)
    return "\n".join(out).rstrip() + "\n"


def _free_names(src: str) -> set[str]:
    tree = ast.parse(src)
    loaded = {
        n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
    }
    bound = {
        n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)
    }
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            bound.add(node.name)
        if isinstance(node, ast.arguments):
            bound |= {a.arg for a in node.args + node.kwonlyargs + node.posonlyargs}
            bound |= {a.arg for a in (node.vararg, node.kwarg) if a is not None}
        if isinstance(node, ast.comprehension):
            bound |= {n.id for n in ast.walk(node.target) if isinstance(n, ast.Name)}
    return loaded - bound
