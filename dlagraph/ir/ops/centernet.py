"""CenterNet's ops: the deformable (DCNv2) projection, the IDAUp node that sums instead of
concatenating, and the task heads."""

from __future__ import annotations

from typing_extensions import TypedDict

from ...blocks import Layer
from .aggregation import _Aggregation
from .core import Expr, In, Mem, NodeView, Op, _bn, _builtin, _chans, _conv, _where, box

__all__ = ["DeformConvRec", "DeformConv", "SumNodeRec", "SumNode", "HeadBranchRec", "HeadBranch"]


class DeformConvRec(TypedDict):
    in_channels: int
    out_channels: int
    deformable: bool  # DCNv2 (CenterNet's DeformConv), or a plain 3x3 conv (FairMOT's conv variant)


def _dcn_layers(v: NodeView, cin: int, cout: int) -> list[Layer]:
    # registration order: the published DeformConv registers its BN (``actf``) before the conv
    if not v["deformable"]:
        return [_bn("actf.0", cout), _conv("conv", cin, cout, 3)]
    offsets = _conv("conv.conv_offset_mask", cin, 27, 3, bias=True)  # 3 x 3x3: dy, dx, mask
    return [_bn("actf.0", cout), _conv("conv", cin, cout, 3, bias=True), offsets]


def _dcn_memory(v: NodeView, out: int) -> tuple[int, int]:
    """(peak, saved) of ``DeformConv`` (DCN -> BN -> ReLU) beyond its input, per image: the offset
    conv's 27 maps live (chunked into views) while the 18 offsets are concatenated, the 9-map
    mask is a sigmoid and the DCN runs; autograd saves the offsets and the mask (and the input),
    and the BN its input. The plain-conv variant is a conv -> BN -> ReLU."""
    if not v["deformable"]:
        return 2 * out, out
    maps = out // (v["channels"] if "channels" in v else v["out_channels"])
    return max((27 + 18 + 9) * maps + out, 2 * out), 27 * maps + out


def _dcn_comment(v: NodeView) -> str:
    return "DCNv2 3x3" if v["deformable"] else "3x3 conv"


@_builtin
class DeformConv(Op):
    """CenterNet's ``DeformConv``: a modulated deformable 3x3 conv (DCNv2: offsets and a sigmoid
    mask from ``conv_offset_mask``, computed by ``torchvision.ops.deform_conv2d``) -> BN -> ReLU.

    MACs count the conv of the same shape plus the offset conv; the bilinear sampling and the
    modulation (about 5 multiply-adds per input channel, kernel tap and output pixel) are left out,
    as FLOP counters leave out elementwise work.
    """

    name, record = "deform_conv", DeformConvRec

    def layers(self, v: NodeView) -> list[Layer]:
        return _dcn_layers(v, v["in_channels"], v["out_channels"])

    def memory(self, v: NodeView, out: int) -> Mem:
        peak, saved = _dcn_memory(v, out)
        return Mem(peak, saved, saves_input=True, saves_output=True)

    def module(self, v: NodeView) -> Expr:
        args = (v["in_channels"], v["out_channels"])
        return Expr("DeformConv", args, () if v["deformable"] else (("deformable", False),))

    def comment(self, v: NodeView) -> str:
        what = f"P: {_dcn_comment(v)}, {_chans(v)}, reduction {v.meta['reduction']}"
        return f"{what} {_where(v, 'eq. 1')}"

    def look(self, v: NodeView, detail: str) -> dict[str, str]:
        kind = "DCN" if v["deformable"] else "conv"
        return box(f"P {kind} {v['in_channels']}→{v['out_channels']}", "project", height="0.3")


class SumNodeRec(TypedDict):
    channels: int
    deformable: bool


@_builtin
class SumNode(_Aggregation):
    """CenterNet's IDAUp aggregation node: N(new, previous) = DeformConv(new + previous) (eq. 1 by
    summation instead of concatenation)."""

    name, record = "sum_node", SumNodeRec

    def layers(self, v: NodeView) -> list[Layer]:
        return _dcn_layers(v, v["channels"], v["channels"])

    def memory(self, v: NodeView, out: int) -> Mem:
        # DeformConv(a + b): the caller holds the sum, which the DCN (or conv) saves
        peak, saved = _dcn_memory(v, out)
        return Mem(out + peak, out + saved, saves_output=True)

    def module(self, v: NodeView) -> Expr:
        args = (v["channels"], v["channels"])
        return Expr("DeformConv", args, () if v["deformable"] else (("deformable", False),))

    def call(self, v: NodeView) -> Expr:
        return Expr("self", (Expr("torch.add", (In(0), In(1))),))

    def lint(self, v: NodeView) -> list[str]:
        bad = [f"sums 2 inputs of {v['channels']} ch, got {list(v.chans)}"]
        return (bad if v.chans != (v["channels"],) * 2 else []) + (
            [f"inputs have different reductions {list(v.reds)}"] if len(set(v.reds)) > 1 else []
        )

    def comment(self, v: NodeView) -> str:
        what = f"N: sum -> {_dcn_comment(v)}, {v['channels']} ch"
        return f"{what} {_where(v, 'eq. 1')}"

    def look(self, v: NodeView, detail: str) -> dict[str, str]:
        size = {"width": "0.35", "fixedsize": "true", "fontsize": "11"}
        xlabel = f"Σ {'DCN' if v['deformable'] else 'conv'} {v['channels']}"
        return box("N", "aggregate", "circle", xlabel=xlabel, **size)


class HeadBranchRec(TypedDict):
    in_channels: int
    head_conv: int  # hidden width; 0: a single conv
    out_channels: int
    final_kernel: int
    heatmap: bool  # a center heatmap: its last bias starts at -2.19 (focal-loss prior 0.1)


@_builtin
class HeadBranch(Op):
    """A CenterNet task head: 3x3 conv (bias) -> ReLU -> ``final_kernel`` conv (bias), or one conv
    when ``head_conv`` is 0; initialised like the published code."""

    name, record = "head_branch", HeadBranchRec

    def layers(self, v: NodeView) -> list[Layer]:
        cin, hidden, cout, k = (
            v[f] for f in ("in_channels", "head_conv", "out_channels", "final_kernel")
        )
        if not hidden:
            return [_conv("", cin, cout, k, bias=True)]
        return [_conv("0", cin, hidden, 3, bias=True), _conv("2", hidden, cout, k, bias=True)]

    def module(self, v: NodeView) -> Expr:
        args = (v["in_channels"], v["head_conv"], v["out_channels"])
        kw = (("final_kernel", v["final_kernel"]), ("heatmap", v["heatmap"]))
        return Expr("centernet_head", args, kw)

    def comment(self, v: NodeView) -> str:
        hidden = f" via {v['head_conv']}" if v["head_conv"] else ""
        return f"head: {v['in_channels']}{hidden} -> {v['out_channels']} ch {_where(v)}"

    def look(self, v: NodeView, detail: str) -> dict[str, str]:
        return box(f"{v.name} {v['in_channels']}→{v['out_channels']}", "block")
