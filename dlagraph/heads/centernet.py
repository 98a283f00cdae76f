"""CenterNet / FairMOT's DLASeg (``pose_dla_dcn.py``): DLAUp over the levels from
``log2(down_ratio)`` on, IDAUp over the first ``last_level - log2(down_ratio)`` of its outputs,
aggregation by sum -> 3x3 deformable (``node: dcn``) or plain (``node: conv``) conv-BN-ReLU,
then one branch per task head."""

from __future__ import annotations

import keyword
import math
import re
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from ..base.errors import safe_repr
from ..base.limits import IDENT, MAX_CHANNELS
from ..base.names import attribute_clash
from ..base.shapes import get
from .parts import output
from .registry import HeadBuilder, HeadOptions, Problems, Shapes, register_head

__all__ = ["CenterNetHead", "MODULES"]

# module names of the CenterNet DLASeg: a head may not take one of them
MODULES = frozenset({"base", "dla_up", "ida_up"})


def _ida_up(
    b: HeadBuilder, path: str, layers: list[str], startp: int, o: int, ups: list[int], dcn: bool
) -> None:
    """CenterNet's IDAUp over ``layers[startp:]`` (in place, as its forward does): for each later
    layer, ``node(up(proj(layer)) + previous)``, where proj and node are DeformConvs and up a
    bilinear-initialised depthwise transposed conv."""
    meta = {"spec_path": "head.node", "eq": "eq1"}
    for t in range(startp + 1, len(layers)):
        k = t - startp
        proj = {"in_channels": b.channels(layers[t]), "out_channels": o, "deformable": dcn}
        x = b.add(f"{path}.proj_{k}", "deform_conv", [layers[t]], proj, role="P", **meta)
        up = {"channels": o, "factor": ups[k], "trainable": True}
        x = b.add(f"{path}.up_{k}", "upsample", [x], up, role="U", **meta)
        n = b.add(
            f"{path}.node_{k}",
            "sum_node",
            [x, layers[t - 1]],
            {"channels": o, "deformable": dcn},
            role="N",
            arg_roles=["I", "I"],
            **meta,
        )
        b.paper_order(n, [1, 0])  # eq. 1: N(previous, new)
        layers[t] = n


def _build(b: HeadBuilder, x: str, head: CenterNetHead) -> None:
    first, dcn = int(math.log2(head.down_ratio)), head.node == "dcn"
    last_level = head.last_level or len(b.spec.levels) - 1
    layers = [b.level_outputs[i] for i in range(first, len(b.spec.levels))]
    channels = [b.channels(t) for t in layers]
    scales, n = [2**i for i in range(len(layers))], len(layers)
    out = [layers[-1]]
    for i in range(n - 1):  # DLAUp.__init__ and DLAUp.forward, step by step
        j = n - i - 2
        ups = [s // scales[j] for s in scales[j:]]
        _ida_up(b, f"dla_up.ida_{i}", layers, j, channels[j], ups, dcn)
        scales[j + 1 :] = [scales[j]] * (n - j - 1)
        out.insert(0, layers[-1])
    y = out[: last_level - first]
    _ida_up(b, "ida_up", y, 0, channels[0], [2**i for i in range(len(y))], dcn)
    for name, classes in head.heads.items():
        rec = {
            "in_channels": b.channels(y[-1]),
            "head_conv": head.head_conv,
            "out_channels": classes,
            "final_kernel": head.final_kernel,
            "heatmap": "hm" in name,
        }
        b.add(name, "head_branch", [y[-1]], rec, spec_path=f"head.heads.{name}")
    output(b, list(head.heads), "dict", "head.heads", names=list(head.heads))


def _name_problem(name: str) -> str | None:
    """Why a task head may not be called ``name``: it becomes a module attribute, a DAG node and a
    local variable of the generated forward, so it must be an identifier that is none of theirs."""
    if not re.fullmatch(IDENT, name) or keyword.iskeyword(name) or keyword.issoftkeyword(name):
        return f"head names must be identifiers like hm or wh (got {safe_repr(name)})"
    if len(name) > 64:
        return f"head names may have at most 64 characters (got {len(name)})"
    if name in MODULES or name in ("input", "output"):
        return f"head name {name!r} is taken by the network's own module or graph node"
    return attribute_clash(name)


def _check(spec: Any, head: CenterNetHead) -> Problems:
    problems: Problems = [
        (("head", "heads", name), why)
        for name in head.heads
        if (why := _name_problem(name)) is not None
    ]
    first, last = int(math.log2(head.down_ratio)), len(spec.levels) - 1
    if first >= last:
        problems.append(
            (
                ("head", "down_ratio"),
                f"down_ratio {head.down_ratio} starts DLAUp at "
                f"level index {first}, which leaves fewer than two levels to aggregate "
                f"(the last is {last})",
            )
        )
    elif head.last_level is not None and not first < head.last_level <= last:
        problems.append(
            (
                ("head", "last_level"),
                f"last_level must be above log2(down_ratio) = "
                f"{first} and at most the last level index {last} (got "
                f"{head.last_level})",
            )
        )
    return problems


def _recognise(shapes: Shapes, levels: list[dict[str, Any]]) -> tuple[dict, dict] | None:
    """The neck's tensors (``dla_up.*``, ``ida_up.*``) and task heads ``<name>.<i>.weight|bias``
    (``<name>.weight`` for a head of one conv)."""
    if not any(k.startswith("dla_up.") for k in shapes) or {"fc.0.weight", "up.weight"} <= set(
        shapes
    ):
        return None  # no neck, or the official segmentation DLASeg's classifier and upsampler
    convs: dict[str, list[tuple[int, ...]]] = {}
    for k in shapes:
        top = k.split(".")[0]
        if top in MODULES:
            continue
        if re.fullmatch(r"[a-z_][a-z0-9_]*(\.\d+)?\.(weight|bias)", k) is None:
            return None
        if k.endswith(".weight"):
            convs.setdefault(top, []).append(get(shapes, k, 4))
    if not convs:
        return None
    n = len(levels)
    stages = sorted({int(m.group(1)) for k in shapes if (m := re.match(r"dla_up\.ida_(\d+)\.", k))})
    first = n - 1 - len(stages)
    some = next(iter(convs.values()))
    ups = {int(m.group(1)) for k in shapes if (m := re.match(r"ida_up\.proj_(\d+)\.", k))}
    return {
        "type": "centernet",
        "heads": {top: ws[-1][0] for top, ws in convs.items()},
        "head_conv": some[0][0] if len(some) > 1 else 0,
        "down_ratio": 2**first,
        "last_level": None if first + len(ups) + 1 == n - 1 else first + len(ups) + 1,
        "node": "dcn" if any("conv_offset_mask" in k for k in shapes) else "conv",
        "final_kernel": some[-1][2],
    }, {}


@register_head(
    "centernet",
    build=_build,
    check=_check,
    backbone_prefix="base.",
    # CenterNet's pose_dla_dcn.py leaves its base at PyTorch's default init (it loads ImageNet
    # weights); the DCNs and heads initialise themselves
    init="pytorch",
    num_classes=lambda head: None,
    recognise=_recognise,
    containers=MODULES,
    _builtin=True,
)
class CenterNetHead(HeadOptions):
    """CenterNet / FairMOT's DLASeg (``pose_dla_dcn.py``): DLAUp over the levels from
    ``log2(down_ratio)`` on, IDAUp over the first ``last_level - log2(down_ratio)`` of its outputs,
    aggregation by sum -> 3x3 deformable (``node: dcn``) or plain (``node: conv``) conv-BN-ReLU,
    then one branch per task head. The network returns ``{head name: map}`` at 1/``down_ratio``."""

    type: Literal["centernet"]
    heads: dict[str, Annotated[int, Field(gt=0, le=100_000)]] = Field(
        min_length=1, max_length=64, description="task heads in output order, name -> channels"
    )
    head_conv: int = Field(
        256, ge=0, le=MAX_CHANNELS, description="hidden width of each head (0: one conv)"
    )
    down_ratio: Literal[2, 4, 8, 16] = 4
    last_level: int | None = Field(
        None, ge=1, description="levels before it feed the final IDAUp (default: the last level)"
    )
    node: Literal["dcn", "conv"] = "dcn"
    final_kernel: int = Field(1, ge=1, le=7, description="kernel of each head's last conv (odd)")

    @field_validator("final_kernel")
    @classmethod
    def _odd(cls, k: int) -> int:
        if k % 2 == 0:
            raise PydanticCustomError("odd", "must be odd, so the head keeps the resolution")
        return k
