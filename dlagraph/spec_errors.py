"""Turning pydantic validation errors into dlagraph's one-line problems.

``('levels', 3, 'tree', 'channels')`` becomes ``levels[3].channels`` (union tags dropped), and the
message is rephrased with the offending value: ``must be greater than 0 (got -3)``. Validators that
find several problems at once raise :func:`_problems`, whose entries are expanded here.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from pydantic_core import PydanticCustomError

__all__ = ["flatten_errors", "PROBLEMS"]

PROBLEMS = "dlagraph_problems"  # error type carrying several (relative path, message) problems


def _problems(problems: list[tuple[str, str]]) -> PydanticCustomError:
    """A pydantic error that carries several problems, each with a path relative to the model."""
    return PydanticCustomError(
        PROBLEMS, "{count} problems", {"problems": problems, "count": len(problems)}
    )


def _loc(loc: tuple[Any, ...]) -> str:
    """``('levels', 3, 'tree', 'channels')`` -> ``levels[3].channels`` (union tags dropped)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in _TAGS:
            continue
        elif not str(part).isidentifier() or len(str(part)) > 40:  # quoted, bounded, one line
            text = repr(str(part))
            out += f"[{text[:40] + '…' if len(text) > 40 else text}]"
        else:
            out += f".{part}" if out else str(part)
    return out


_TAGS = {
    "conv",
    "tree",
    "classifier",
    "features",
    "segmentation",
    "dla_up",
}

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
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "string_too_long": "must be at most {max_length} characters",
    "string_pattern_mismatch": "must match {pattern}",
    "literal_error": "must be one of {expected}",
    "union_tag_invalid": "unknown type '{tag}'; expected one of {expected_tags}",
    "union_tag_not_found": "missing required key `type`",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "tuple_type": "must be a list",
    "list_type": "must be a list",
    "too_short": "must have at least {min_length} items",
    "too_long": "must have at most {max_length} items",
}


def _message(err: dict[str, Any]) -> str:
    """One pydantic error -> a short message in dlagraph's voice, with the offending value."""
    template = _MESSAGES.get(err["type"])
    if template is not None:
        try:
            msg = template.format(**err.get("ctx", {}))
        except (KeyError, IndexError):
            msg = template
    else:
        msg = err["msg"].removeprefix("Value error, ")
        msg = msg[:1].lower() + msg[1:]
    if err["type"] not in ("missing", "extra_forbidden", "union_tag_not_found") and "input" in err:
        value = err["input"]
        if not isinstance(value, (dict, list, tuple)):
            text = repr(value)
            msg += f" (got {text[:60] + '…' if len(text) > 60 else text})"
    return msg


def flatten_errors(e: ValidationError) -> list[tuple[str, str]]:
    """Every problem in a ValidationError as ``(dotted path, message)``, in document order."""
    out: list[tuple[str, str]] = []
    errors = e.errors()
    for err in errors:
        base = _loc(err["loc"])
        if err["type"] == "too_short" and any(
            len(o["loc"]) > len(err["loc"]) and o["loc"][: len(err["loc"])] == err["loc"]
            for o in errors
        ):
            continue  # pydantic also counts the items that failed: their own errors say enough
        if err["type"] == PROBLEMS:
            for rel, msg in err["ctx"]["problems"]:
                if base and rel.startswith("["):
                    out.append((base + rel, msg))
                else:
                    out.append((f"{base}.{rel}" if base and rel else base or rel, msg))
        else:
            out.append((base, _message(err)))
    return out
