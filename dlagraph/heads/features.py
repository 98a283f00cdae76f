"""Multi-scale features: the outputs of the chosen levels (timm's ``features_only``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field

from .parts import output
from .registry import HeadBuilder, HeadOptions, Problems, Shapes, register_head

__all__ = ["FeaturesHead"]


def _as_tuple(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


def _build(b: HeadBuilder, x: str, head: FeaturesHead) -> None:
    output(b, [b.level_outputs[i] for i in head.out_indices], "list", "head.out_indices")
    # like timm's prune_intermediate_layers: levels after the last tap are not built at all
    b.keep_levels_until(max(head.out_indices))


def _check(spec: Any, head: FeaturesHead) -> Problems:
    n = len(spec.levels)
    problems: Problems = [
        (("head", "out_indices", j), f"level index {idx} is out of range 0..{n - 1}")
        for j, idx in enumerate(head.out_indices)
        if not 0 <= idx < n
    ]
    if len(set(head.out_indices)) != len(head.out_indices):
        problems.append((("head", "out_indices"), "indices must be unique"))
    return problems


def _recognise(shapes: Shapes, levels: list[dict[str, Any]]) -> tuple[dict, dict] | None:
    if shapes:  # nothing but the backbone
        return None
    every = list(range(1, len(levels)))
    return {"type": "features", "out_indices": every}, {
        "head.out_indices": f"{every} (a features head keeps every level up to its last index; "
        "which ones it returns has no weights)"
    }


@register_head("features", build=_build, check=_check, recognise=_recognise, _builtin=True)
class FeaturesHead(HeadOptions):
    """Multi-scale outputs: the outputs of the chosen levels (0 = Level 1 … like timm ``features_only``)."""

    type: Literal["features"]
    out_indices: Annotated[tuple[int, ...], BeforeValidator(_as_tuple)] = Field(
        (1, 2, 3, 4, 5), min_length=1
    )
