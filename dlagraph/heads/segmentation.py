"""The paper's segmentation network (§4.2): optionally dilated last two levels (final maps at 1/8),
then a 1x1 classifier and bilinear upsampling, or IDA upsampling (eq. 1 across resolutions)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ..base.limits import MAX_CHANNELS
from ..base.shapes import get
from ..blocks import get_block_type
from .parts import fc, ida_node, output, proj_up
from .registry import HeadBuilder, HeadOptions, Problems, Shapes, register_head

__all__ = ["SegmentationHead"]


def _build(b: HeadBuilder, x: str, head: SegmentationHead) -> None:
    x = b.level_outputs[len(b.spec.levels) - 1]
    if head.upsample == "ida":
        # eq. 1 over Level 2 .. the last level, every input brought to Level 2's resolution
        taps = [b.level_outputs[i] for i in range(1, len(b.spec.levels))]
        width, base = head.ida_channels, b.reduction(taps[0])
        layers = [
            proj_up(b, "ida_up", j, t, width, b.reduction(t) // base, "head.ida_channels")
            for j, t in enumerate(taps)
        ]
        x = layers[0]
        for j in range(1, len(layers)):
            x = ida_node(
                b, f"ida_up.node_{j}", x, layers[j], "aggregate", "head.upsample", residual=False
            )
    x = fc(b, "fc", x, head.num_classes, "head.num_classes")
    rec = {"channels": head.num_classes, "scale": b.reduction(x)}
    x = b.add("final_up", "interpolate", [x], rec, spec_path="head.upsample")
    output(b, [x], "tensor", "head")


def _dilations(head: SegmentationHead, n_levels: int) -> dict[int, int]:
    """Dilated instead of strided: the last two levels keep Level 4's resolution (§4.2)."""
    return {n_levels - 2: 2, n_levels - 1: 4} if head.dilation else {}


def _check(spec: Any, head: SegmentationHead) -> Problems:
    n_trees = len(spec.levels) - 2
    if head.dilation and n_trees < 3:
        return [
            (
                ("head", "dilation"),
                f"dilating the last two levels needs at least 3 tree levels (got {n_trees})",
            )
        ]
    if head.dilation and not get_block_type(spec.block.type).dilation:
        return [
            (
                ("head", "dilation"),
                f"block type {spec.block.type!r} does not take a `dilation` argument",
            )
        ]
    return []


def _recognise(shapes: Shapes, levels: list[dict[str, Any]]) -> tuple[dict, dict] | None:
    if not any(k.startswith("ida_up.") for k in shapes):
        return None
    if any(not k.startswith(("ida_up.", "fc.")) for k in shapes):
        return None
    return {
        "type": "segmentation",
        "num_classes": get(shapes, "fc.weight", 4, "a segmentation head")[0],
        "upsample": "ida",
        "ida_channels": get(shapes, "ida_up.proj_1.0.weight", 4, "IDA upsampling")[0],
        "dilation": True,
    }, {"head.dilation": "True (dilating the last two levels changes no weight shape)"}


@register_head(
    "segmentation",
    build=_build,
    check=_check,
    dilations=_dilations,
    recognise=_recognise,
    containers={"ida_up"},
    _builtin=True,
)
class SegmentationHead(HeadOptions):
    """The paper's segmentation network (§4.2): optionally dilated Levels 5-6 (final maps at 1/8),
    then either a 1x1 classifier and 8x bilinear upsampling, or IDA upsampling: Levels 3.. projected
    to ``ida_channels``, upsampled to Level 2 by bilinear-initialised transposed convs, aggregated
    iteratively (eq. 1) with 3x3 nodes, classified, then 2x bilinear."""

    type: Literal["segmentation"]
    num_classes: int = Field(gt=0, le=100_000)
    dilation: bool = Field(True, description="dilate the last two levels instead of striding")
    upsample: Literal["bilinear", "ida"] = "ida"
    ida_channels: int = Field(32, gt=0, le=MAX_CHANNELS)
