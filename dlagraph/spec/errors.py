"""Turning pydantic validation errors into dlagraph's one-line problems.

``('levels', 3, 'tree', 'channels')`` becomes ``levels[3].channels`` (union tags dropped), and the
message is rephrased with the offending value, cut to a few dozen characters: ``must be greater
than 0 (got -3)``. Validators that find several problems at once raise :func:`problems_error`, whose
entries (paths relative to the model, as tuples) are expanded here. Paths stay tuples until they are
printed, so the YAML line of any key, dashed or quoted, can be looked up exactly.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from pydantic_core import PydanticCustomError

from ..base.errors import clip, safe_repr

__all__ = [
    "flatten_errors",
    "problem_message",
    "problems_error",
    "short_message",
    "format_loc",
    "PROBLEMS",
    "Loc",
]

PROBLEMS = "dlagraph_problems"  # error type carrying several (relative path, message) problems

Loc = tuple[Any, ...]


def problems_error(problems: list[tuple[Loc, str]]) -> PydanticCustomError:
    """A pydantic error that carries several problems, each with a path relative to the model."""
    return PydanticCustomError(
        PROBLEMS, "{count} problems", {"problems": problems, "count": len(problems)}
    )


# union tags pydantic puts into `loc`; they are not keys of the user's YAML
LEVEL_TAGS = frozenset({"conv", "tree"})


def strip_tags(loc: Loc) -> Loc:
    """``('levels', 3, 'tree', 'channels')`` -> ``('levels', 3, 'channels')``: the path in the YAML.

    Only the positions where pydantic inserts a union tag are looked at, so a user's key that
    happens to equal a tag name is kept.
    """
    out = list(loc)
    if len(out) >= 3 and out[0] == "levels" and isinstance(out[1], int) and out[2] in LEVEL_TAGS:
        del out[2]
    return tuple(out)


def format_loc(loc: Loc) -> str:
    """``('levels', 3, 'channels')`` -> ``levels[3].channels``; odd keys are quoted and cut."""
    out = ""
    for part in loc:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        elif isinstance(part, str) and part.isidentifier() and len(part) <= 40:
            out += f".{part}" if out else part
        else:  # quoted, bounded, one line
            out += f"[{clip(repr(str(part)), 40)}]"
    return out


_MESSAGES = {
    "missing": "missing required key",
    "extra_forbidden": "unknown key",
    "greater_than": "must be greater than {gt}",
    "greater_than_equal": "must be at least {ge}",
    "less_than": "must be less than {lt}",
    "less_than_equal": "must be at most {le}",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "string_too_long": "must be at most {max_length} characters",
    "string_pattern_mismatch": "must match {pattern}",
    "literal_error": "must be one of {expected}",
    "union_tag_invalid": "unknown type {tag}; expected one of {expected_tags}",
    "union_tag_not_found": "missing required key `type`",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "tuple_type": "must be a list",
    "list_type": "must be a list",
    "too_short": "must have at least {min_length} items",
    "too_long": "must have at most {max_length} items",
    "recursion_loop": "is nested too deeply (or refers to itself)",
}


def short_message(err: dict[str, Any]) -> str:
    """One pydantic error -> a short message in dlagraph's voice, with the offending value."""
    template = _MESSAGES.get(err["type"])
    if template is not None:
        ctx = dict(err.get("ctx", {}))
        if "tag" in ctx:  # an echoed value: quoted and cut
            ctx["tag"] = safe_repr(ctx["tag"])
        if err["type"] == "too_short" and ctx.get("min_length") == 1:
            template = "must not be empty"
        try:
            msg = template.format(**ctx)
        except (KeyError, IndexError):
            msg = template
    else:
        msg = str(err["msg"]).removeprefix("Value error, ")
        msg = msg[:1].lower() + msg[1:]
    if err["type"] not in ("missing", "extra_forbidden", "union_tag_not_found") and "input" in err:
        value = err["input"]
        if not isinstance(value, (dict, list, tuple)):
            msg += f" (got {safe_repr(value)})"
    return clip(msg, 300)


def flatten_errors(e: ValidationError) -> list[tuple[Loc, Any]]:
    """Every problem in a ValidationError as ``(path tuple, problem)``, tags stripped.

    ``problem`` is a message, or a pydantic error whose message :func:`problem_message` makes:
    with tens of thousands of errors, only the ones shown are worded.
    """
    out: list[tuple[Loc, Any]] = []
    errors = e.errors(include_url=False)
    shorts = [err["loc"] for err in errors if err["type"] == "too_short"]
    failed_items = {err["loc"][:-1] for err in errors if len(err["loc"]) > 1} if shorts else set()
    for err in errors:
        base = tuple(err["loc"])
        if err["type"] == "too_short" and any(
            base == prefix[: len(base)] for prefix in failed_items if len(prefix) >= len(base)
        ):
            continue  # pydantic also counts the items that failed: their own errors say enough
        if err["type"] == PROBLEMS:
            for rel, msg in err["ctx"]["problems"]:
                out.append((strip_tags(base + tuple(rel)), msg))
        else:
            out.append((strip_tags(base), err))
    return out


def problem_message(problem: Any) -> str:
    """The message of an entry of :func:`flatten_errors`."""
    return problem if isinstance(problem, str) else short_message(problem)
