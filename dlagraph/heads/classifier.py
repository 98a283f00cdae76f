"""timm's classifier: global average pool, dropout, a 1x1-conv classifier (``fc``), flatten."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ..base.shapes import get
from .parts import fc, output
from .registry import HeadBuilder, HeadOptions, Shapes, register_head

__all__ = ["ClassifierHead"]


def _build(b: HeadBuilder, x: str, head: ClassifierHead) -> None:
    c = b.channels(x)
    x = b.add("global_pool", "pool", [x], {"channels": c}, spec_path="head")
    x = b.add(
        "head_drop", "dropout", [x], {"channels": c, "p": head.dropout}, spec_path="head.dropout"
    )
    logits = fc(b, "fc", x, head.num_classes, "head.num_classes")
    flat = b.add(
        "flatten",
        "flatten",
        [logits],
        {"channels": head.num_classes},
        symbols={"channels": "num_classes"},
        spec_path="head",
    )
    output(b, [flat], "tensor", "head")
    b.mark_classifier()  # timm's model API: the head is global_pool .. flatten


def _recognise(shapes: Shapes, levels: list[dict[str, Any]]) -> tuple[dict, dict] | None:
    if not shapes or set(shapes) - {"fc.weight", "fc.bias"}:
        return None
    return {"type": "classifier", "num_classes": get(shapes, "fc.weight", 4)[0]}, {
        "head.dropout": "0.0 (dropout has no weights)",
        "head.type": "classifier (a segmentation head with bilinear upsampling has the same "
        "tensors: --set head.type=segmentation --set head.upsample=bilinear)",
    }


@register_head("classifier", build=_build, classifier=True, recognise=_recognise, _builtin=True)
class ClassifierHead(HeadOptions):
    """Global average pool, dropout, then a 1x1 conv classifier (timm and official ``fc``)."""

    type: Literal["classifier"]
    num_classes: int = Field(1000, gt=0, le=1_000_000)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
