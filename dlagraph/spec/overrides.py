"""``--set FIELD=VALUE``: dotted-path overrides of a spec's data (``build``, ``infer``, ``fit``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from ..base.errors import SpecError, safe_repr
from .load import check_events

__all__ = ["apply_overrides", "parse_sets"]


def parse_sets(items: list[str]) -> dict[str, Any]:
    """``--set a.b=VALUE`` options as overrides; VALUE is read as YAML (``true``, ``3``, ``[1, 2]``)."""
    out: dict[str, Any] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise SpecError(f"--set {item!r}: give FIELD=VALUE, e.g. aggregation.residual=true")
        shown = f"--set {safe_repr(key.strip(), 60)}"
        try:
            check_events(value, shown)  # a spec file's bounds: nesting, huge integers
            out[key.strip()] = yaml.safe_load(value)
        except SpecError:
            raise
        except (yaml.YAMLError, RecursionError, ValueError):
            raise SpecError(f"{shown}: the value is not YAML") from None
    return out


def apply_overrides(data: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` with each dotted path (``aggregation.residual``, ``levels.3.aggregate_input``) set.

    Raises:
        SpecError: one line per path that does not lead into the spec (a list index that is not a
            number or out of range, a step into a value that is neither a mapping nor a list).
    """
    problems = []
    for path, value in overrides.items():
        shown = safe_repr(str(path), 80)
        node: Any = data
        *heads, leaf = str(path).split(".")
        try:
            for h in heads:
                node = node[_index(node, h)] if isinstance(node, list) else node.setdefault(h, {})
                if not isinstance(node, (dict, list)):
                    raise ValueError(f"{safe_repr(h)} is not a mapping or list in the spec")
            if isinstance(node, list):
                node[_index(node, leaf)] = value
            else:
                node[leaf] = value
        except ValueError as e:
            problems.append(f"--set {shown}: {e}")
    if problems:
        raise SpecError(problems)
    return _name_the_scale(data, overrides)


def _name_the_scale(data: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A spec scaled by ``--set scale.*`` (and not renamed by it) is named for its scale,
    ``dla36`` -> ``dla36_w0_5``, so that the files of its variants do not collide."""
    scale = data.get("scale")
    touched = any(str(k) == "scale" or str(k).startswith("scale.") for k in overrides)
    if not touched or "name" in overrides or not isinstance(scale, dict):
        return data
    parts = [
        f"{tag}{_number(scale[key])}"
        for key, tag in (("width", "w"), ("depth", "d"))
        if isinstance(scale.get(key), int | float) and scale[key] != 1
    ]
    if parts and isinstance(data.get("name"), str):
        data["name"] = "_".join([data["name"], *parts])
    return data


def _number(x: float) -> str:
    return f"{x:g}".replace(".", "_").replace("-", "m").replace("+", "")


def _index(items: list[Any], step: str) -> int:
    if not step.isdigit() or int(step) >= len(items):
        raise ValueError(f"{safe_repr(step)} is not an index 0..{len(items) - 1} of its list")
    return int(step)
