"""The official ``dla_up.py`` DLASeg: DLAUp's IDAUp stages over the levels from
``log2(down_ratio)`` on, a 1x1 classifier, a frozen bilinear upsampler and log-softmax."""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import Field

from ..base.shapes import get
from .parts import fc, ida_node, output, proj_up
from .registry import HeadBuilder, HeadOptions, Problems, Shapes, register_head

__all__ = ["DlaUpHead"]


def _build(b: HeadBuilder, x: str, head: DlaUpHead) -> None:
    """DLAUp.__init__ and DLAUp.forward, step by step, then ``fc``, frozen ``up``, log-softmax."""
    last = len(b.spec.levels) - 1
    if head.base_classes:  # the base network keeps its ImageNet classifier, never run
        top = b.level_outputs[last]
        src = "head.base_classes"
        pool = b.add(
            "base.avgpool", "pool", [top], {"channels": b.channels(top)}, unused=True, spec_path=src
        )
        fc(b, "base.fc", pool, head.base_classes, src, unused=True)
    first = int(math.log2(head.down_ratio))
    layers = [b.level_outputs[i] for i in range(first, last + 1)]
    channels = [b.channels(t) for t in layers]
    scales = [2**i for i in range(len(layers))]
    x = layers[-1]
    for i in range(len(layers) - 1):
        j = len(layers) - i - 2
        path = f"dla_up.ida_{i}"
        ups = [s // scales[j] for s in scales[j:]]
        stage = [
            proj_up(b, path, idx, t, channels[j], f, "head.down_ratio")
            for idx, (t, f) in enumerate(zip(layers[j:], ups, strict=True))
        ]
        x, ys = stage[0], []
        for idx in range(1, len(stage)):
            x = ida_node(b, f"{path}.node_{idx}", x, stage[idx], "ida_node", "head.down_ratio")
            ys.append(x)
        layers[j + 1 :] = ys
        scales[j + 1 :] = [scales[j]] * (len(scales) - j - 1)
    k = head.num_classes
    logits = fc(b, "fc", x, k, "head.num_classes", sequential=True)
    rec = {"channels": k, "factor": head.down_ratio, "trainable": False}
    up = b.add(
        "up",
        "upsample",
        [logits],
        rec,
        symbols={"channels": "num_classes"},
        spec_path="head.down_ratio",
        role="U",
    )
    probs = b.add("softmax", "log_softmax", [up], {"channels": k}, spec_path="head")
    output(b, [probs, logits], "tuple", "head")


def _check(spec: Any, head: DlaUpHead) -> Problems:
    first = int(math.log2(head.down_ratio))
    if first >= len(spec.levels) - 1:
        return [
            (
                ("head", "down_ratio"),
                f"down_ratio {head.down_ratio} starts at level {first}, "
                "which leaves fewer than two levels to aggregate",
            )
        ]
    return []


def _recognise(shapes: Shapes, levels: list[dict[str, Any]]) -> tuple[dict, dict] | None:
    if not {"fc.0.weight", "up.weight"} <= set(shapes):
        return None
    tops = {"base", "dla_up", "fc", "up"}
    if any(
        k.split(".")[0] not in tops or k.startswith("base.") and not k.startswith("base.fc.")
        for k in shapes
    ):
        return None
    stages = {int(m.group(1)) for k in shapes if (m := re.match(r"dla_up\.ida_(\d+)\.", k))}
    return {
        "type": "dla_up",
        "num_classes": get(shapes, "fc.0.weight", 4)[0],
        "down_ratio": 2 ** (len(levels) - 1 - len(stages)),
        "base_classes": get(shapes, "base.fc.weight", 4)[0] if "base.fc.weight" in shapes else 0,
    }, {}


@register_head(
    "dla_up",
    build=_build,
    check=_check,
    backbone_prefix="base.",
    recognise=_recognise,
    containers={"base", "dla_up", "ida_up"},
    _builtin=True,
)
class DlaUpHead(HeadOptions):
    """The official ``dla_up.py`` DLASeg head: DLAUp + IDAUp over the levels from
    ``log2(down_ratio)`` on, a 1x1 classifier, a frozen bilinear upsampler and log-softmax. The
    network returns ``(log_probs, logits)`` like the official code."""

    type: Literal["dla_up"]
    num_classes: int = Field(gt=0, le=100_000)
    down_ratio: Literal[2, 4, 8, 16] = 2
    base_classes: int = Field(
        1000,
        ge=0,
        le=1_000_000,
        description="classes of the base network's (unused) ImageNet classifier, which the "
        "official model keeps; 0 drops it",
    )
