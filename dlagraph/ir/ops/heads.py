"""The ops heads are made of: global pooling, dropout, the 1x1 classifier and its flatten,
IDA's learned upsampling, a fixed bilinear resize, log-softmax."""

from __future__ import annotations

from typing_extensions import TypedDict

from ...blocks import Layer
from .core import ChannelsRec, Expr, In, Mem, NodeView, Op, _builtin, _conv, _sym, _where, box

__all__ = [
    "GlobalPool",
    "DropoutRec",
    "Dropout",
    "ClassifierRec",
    "Classifier",
    "Flatten",
    "UpsampleRec",
    "Upsample",
    "InterpolateRec",
    "Interpolate",
    "LogSoftmax",
]


@_builtin
class GlobalPool(Op):
    """Global average pooling."""

    name, record = "pool", ChannelsRec

    def shape(self, v: NodeView) -> tuple[int, ...]:
        return (v["channels"], 1, 1)

    def module(self, v: NodeView) -> Expr:
        return Expr("nn.AdaptiveAvgPool2d", (1,))

    def memory(self, v: NodeView, out: int) -> Mem:
        return Mem(out)  # torch pools to 1x1 by a mean, whose backward needs only the shape

    def comment(self, v: NodeView) -> str:
        return f"global average pool: {v['channels']} ch {_where(v)}"

    def look(self, v: NodeView, detail: str) -> dict[str, str]:
        return box("global avg pool")


class DropoutRec(TypedDict):
    channels: int
    p: float


@_builtin
class Dropout(Op):
    name, record = "dropout", DropoutRec

    def module(self, v: NodeView) -> Expr:
        return Expr("nn.Dropout", (v["p"],))

    def memory(self, v: NodeView, out: int) -> Mem:
        return Mem(0, alias=True)  # in eval, and at p=0, the input itself

    def lint(self, v: NodeView) -> list[str]:
        ok = 0.0 <= v["p"] < 1.0
        return super().lint(v) + ([] if ok else ["`p` must be in [0, 1)"])

    def comment(self, v: NodeView) -> str:
        return f"dropout p={v['p']} {_where(v)}"

    def look(self, v: NodeView, detail: str) -> dict[str, str]:
        return box(f"dropout {v['p']}")


class ClassifierRec(TypedDict):
    in_channels: int
    out_channels: int
    sequential: bool  # the official DLASeg holds it as Sequential(conv)


@_builtin
class Classifier(Op):
    """A 1x1 conv with bias (timm's and the official ``fc``)."""

    name, record = "classifier", ClassifierRec

    def layers(self, v: NodeView) -> list[Layer]:
        name = "0" if v["sequential"] else ""
        return [_conv(name, v["in_channels"], v["out_channels"], 1, bias=True)]

    def module(self, v: NodeView) -> Expr:
        args = (v["in_channels"], _sym(v, "out_channels"), 1)
        conv = Expr("nn.Conv2d", args, (("bias", True),))
        return Expr("nn.Sequential", (conv,)) if v["sequential"] else conv

    def comment(self, v: NodeView) -> str:
        classes = v.syms.get("out_channels", v["out_channels"])
        return f"{v['in_channels']} ch -> {classes} class logits {_where(v)}"

    def look(self, v: NodeView, detail: str) -> dict[str, str]:
        return box(f"fc 1x1 {v['in_channels']}→{v['out_channels']}")


@_builtin
class Flatten(Op):
    """(N, C, 1, 1) -> (N, C) after a classifier: a module (``nn.Flatten``), so that timm's
    ``reset_classifier(0, "")`` can swap it for an identity and keep the maps."""

    name, record = "flatten", ChannelsRec

    def shape(self, v: NodeView) -> tuple[int, ...]:
        return (v["channels"],)

    def module(self, v: NodeView) -> Expr:
        return Expr("nn.Flatten", (1,))

    def memory(self, v: NodeView, out: int) -> Mem:
        return Mem(0, alias=True)

    def comment(self, v: NodeView) -> str:
        return f"logits as (N, {v.syms.get('channels', v['channels'])}) {_where(v)}"

    def look(self, v: NodeView, detail: str) -> dict[str, str]:
        return box("flatten")


class UpsampleRec(TypedDict):
    channels: int
    factor: int
    trainable: bool


@_builtin
class Upsample(Op):
    """A depthwise transposed conv (kernel 2f, stride f) initialised as bilinear upsampling."""

    name, record = "upsample", UpsampleRec

    def reduction(self, v: NodeView) -> int:
        return max(1, v.reds[0] // v["factor"])

    def shape(self, v: NodeView) -> tuple[int, ...]:
        f = v["factor"]  # ConvTranspose2d(k=2f, s=f, p=f//2): (H-1)f - 2(f//2) + 2f
        return (v["channels"], *((x - 1) * f - 2 * (f // 2) + 2 * f for x in v.hw[0]))

    def layers(self, v: NodeView) -> list[Layer]:
        c, f = v["channels"], v["factor"]
        return [Layer("", "conv", c, c, 2 * f, f, groups=c)]

    def memory(self, v: NodeView, out: int) -> Mem:
        return Mem(out, saves_input=True)

    def macs(self, v: NodeView) -> int:
        # a transposed conv scatters each input pixel over its k x k kernel
        return v.hw[0][0] * v.hw[0][1] * v["channels"] * (2 * v["factor"]) ** 2

    def module(self, v: NodeView) -> Expr:
        kw = () if v["trainable"] else (("trainable", False),)
        return Expr("bilinear_up", (_sym(v, "channels"), v["factor"]), kw)

    def comment(self, v: NodeView) -> str:
        what = f"U: x{v['factor']} bilinear-initialised, {v.syms.get('channels', v['channels'])}"
        what += " ch" + ("" if v["trainable"] else ", frozen")
        return f"{what} {_where(v, 'eq. 1' if v.meta.get('eq') == 'eq1' else '')}"

    def look(self, v: NodeView, detail: str) -> dict[str, str]:
        frozen = "" if v["trainable"] else ", frozen"
        return box(f"U x{v['factor']}{frozen}", "upsample", "house", height="0.3")


class InterpolateRec(TypedDict):
    channels: int
    scale: int


@_builtin
class Interpolate(Op):
    """A fixed bilinear resize by ``scale`` (no parameters, no module)."""

    name, record, owns_module = "interpolate", InterpolateRec, False

    def reduction(self, v: NodeView) -> int:
        return max(1, v.reds[0] // v["scale"])

    def shape(self, v: NodeView) -> tuple[int, ...]:
        return (v["channels"], *(x * v["scale"] for x in v.hw[0]))

    def call(self, v: NodeView) -> Expr:
        kw = (("scale_factor", float(v["scale"])), ("mode", "bilinear"), ("align_corners", False))
        return Expr("F.interpolate", (In(0),), kw)

    def comment(self, v: NodeView) -> str:
        return f"fixed bilinear x{v['scale']} {_where(v)}"

    def look(self, v: NodeView, detail: str) -> dict[str, str]:
        return box(f"bilinear x{v['scale']}")


@_builtin
class LogSoftmax(Op):
    name, record = "log_softmax", ChannelsRec

    def module(self, v: NodeView) -> Expr:
        return Expr("nn.LogSoftmax", (), (("dim", 1),))

    def memory(self, v: NodeView, out: int) -> Mem:
        return Mem(out, saves_output=True)

    def comment(self, v: NodeView) -> str:
        return f"log-probabilities over the classes {_where(v)}"

    def look(self, v: NodeView, detail: str) -> dict[str, str]:
        return box("log-softmax")
