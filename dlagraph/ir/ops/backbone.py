"""The backbone's ops: the image and the result, the conv levels (and IDA's projections), the
2x2 pools (S(x) of eq. 5, a first block's pooled shortcut), the shortcut projection, and the
block (eq. 2) from the block registry."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from typing_extensions import TypedDict

from ...blocks import Layer, get_block_type
from ..roles import is_projection, is_sx, role
from .core import (
    ChannelsRec,
    D,
    Expr,
    In,
    Mem,
    NodeView,
    Op,
    _bn,
    _builtin,
    _chans,
    _conv,
    _sizes,
    _sym,
    _where,
    box,
    is_name,
)

__all__ = [
    "Input",
    "OutputRec",
    "Output",
    "ConvRec",
    "Conv",
    "PoolRec",
    "Downsample",
    "ProjectRec",
    "Project",
    "BlockRec",
    "Block",
]


@_builtin
class Input(Op):
    """The image."""

    name, record, owns_module = "input", ChannelsRec, False

    def reduction(self, v: NodeView) -> int:
        return 1

    def lint(self, v: NodeView) -> list[str]:
        return []

    def look(self, v: NodeView, detail: str) -> dict[str, str]:
        return {"label": f"input\n{v['channels']} ch", "shape": "oval", "fontsize": "10"}

    def memory(self, v: NodeView, out: int) -> Mem:
        return Mem(out)


class OutputRec(TypedDict):
    kind: str  # "tensor" | "list" | "tuple" | "dict"
    names: list[str]  # the keys of a dict output, one per input


@_builtin
class Output(Op):
    """The network's result: one input (a tensor), or several (a list, a tuple, or a dict with
    ``names`` as keys)."""

    name, record, owns_module = "output", OutputRec, False

    def channels(self, v: NodeView) -> int:
        return 0

    def shape(self, v: NodeView) -> tuple[int, ...]:
        return ()

    def call(self, v: NodeView) -> Any:
        ins = [In(i) for i in range(len(v.inputs))]
        named = dict(zip(v["names"], ins, strict=False))
        return {"tensor": In(0), "list": ins, "tuple": tuple(ins), "dict": named}[v["kind"]]

    def memory(self, v: NodeView, out: int) -> Mem:
        return Mem(0, alias=True)

    def return_type(self, v: NodeView) -> str:
        """The annotation of ``forward``'s result in generated code."""
        if v["kind"] == "tuple":
            return f"tuple[{', '.join(['torch.Tensor'] * len(v.inputs))}]"
        kinds = {"list": "list[torch.Tensor]", "dict": "dict[str, torch.Tensor]"}
        return kinds.get(v["kind"], "torch.Tensor")

    def lint(self, v: NodeView) -> list[str]:
        if v["kind"] not in ("tensor", "list", "tuple", "dict"):
            return [f"output kind {v['kind']!r} is not tensor, list, tuple or dict"]
        if v["kind"] == "tensor" and len(v.chans) != 1:
            return [f"a tensor output takes one input, not {len(v.chans)}"]
        named = v["kind"] == "dict"
        if len(v["names"]) != (len(v.chans) if named else 0) or not all(map(is_name, v["names"])):
            return ["a dict output needs one identifier name per input, other outputs none"]
        return []

    def look(self, v: NodeView, detail: str) -> dict[str, str]:
        return {"label": "output", "shape": "oval", "fontsize": "10"}


class ConvRec(TypedDict):
    in_channels: int
    out_channels: int
    kernel_size: int
    convs: int
    stride: int


@_builtin
class Conv(Op):
    """``convs`` x (conv-BN-ReLU), the first strided: the stem, the conv levels (Levels 1-2) and
    IDA's 1x1 projections."""

    name, record = "conv", ConvRec

    def shape(self, v: NodeView) -> tuple[int, ...]:
        k, s = v["kernel_size"], v["stride"]
        return (v["out_channels"], *((x + 2 * (k // 2) - k) // s + 1 for x in v.hw[0]))

    def layers(self, v: NodeView) -> list[Layer]:
        cin, cout, k, s = v["in_channels"], v["out_channels"], v["kernel_size"], v["stride"]
        out: list[Layer] = []
        for j in range(v["convs"]):
            out += [_conv(str(3 * j), cout if j else cin, cout, k, 1 if j else s, s)]
            out += [_bn(str(3 * j + 1), cout, s)]
        return out

    def module(self, v: NodeView) -> Expr:
        kw = tuple((k, v[k]) for k in ("convs", "stride") if v[k] != 1)
        args = (_sym(v, "in_channels"), v["out_channels"], v["kernel_size"])
        return Expr("conv_bn_relu", args, kw)

    def comment(self, v: NodeView) -> str:
        if is_projection(v.meta):  # IDA's projection to the aggregation width
            return f"P: {_chans(v)}, reduction {v.meta['reduction']} {_where(v, 'eq. 1')}"
        return super().comment(v)

    def look(self, v: NodeView, detail: str) -> dict[str, str]:
        arrow = f"{v['in_channels']}→{v['out_channels']}"
        if is_projection(v.meta):
            return box(f"P {arrow}", "project", height="0.3")
        k, s = v["kernel_size"], v["stride"]
        label = f"{v.name.rsplit('.', 1)[-1]}: {v['convs']}x conv{k}x{k} {arrow}"
        return box(label + (f" /{s}" if s > 1 else ""))


class PoolRec(TypedDict):
    channels: int
    stride: int


@_builtin
class Downsample(Op):
    """S(x) of eq. 5, or the pooled input of a first block's shortcut: 2x2 max pooling."""

    name, record = "downsample", PoolRec

    def shape(self, v: NodeView) -> tuple[int, ...]:
        s = v["stride"]
        return (v["channels"], *((x - s) // s + 1 for x in v.hw[0]))

    def module(self, v: NodeView) -> Expr:
        return Expr("nn.MaxPool2d", (v["stride"],), (("stride", v["stride"]),))

    def memory(self, v: NodeView, out: int) -> Mem:
        return Mem(out, index=out, saves_input=True)  # backward reads the input and the indices

    def comment(self, v: NodeView) -> str:
        what = "S(x), eq. 5" if is_sx(v.meta) else "for the shortcut"
        return f"2x2 max pool to reduction {v.meta['reduction']} {_where(v, what)}"

    def look(self, v: NodeView, detail: str) -> dict[str, str]:
        if is_sx(v.meta):
            return box("S", "downsample", "invtrapezium", height="0.3")
        small = {"height": "0.25", "fillcolor": "#f4f6f6", "fontsize": "8"}
        return box("pool", "downsample", "invtrapezium", **small)


class ProjectRec(TypedDict):
    in_channels: int
    out_channels: int


@_builtin
class Project(Op):
    """The first block's shortcut projection: 1x1 conv + BN, no ReLU."""

    name, record = "project", ProjectRec

    def layers(self, v: NodeView) -> list[Layer]:
        return [
            _conv("0", v["in_channels"], v["out_channels"], 1),
            _bn("1", v["out_channels"]),
        ]

    def module(self, v: NodeView) -> Expr:
        return Expr("project", (v["in_channels"], v["out_channels"]))

    def memory(self, v: NodeView, out: int) -> Mem:
        return replace(super().memory(v, out), saves_output=False)  # no ReLU after its BN

    def comment(self, v: NodeView) -> str:
        return f"shortcut: {_chans(v)} {_where(v)}"

    def look(self, v: NodeView, detail: str) -> dict[str, str]:
        return box(f"P {v['in_channels']}→{v['out_channels']}", "project", height="0.3")


class BlockRec(TypedDict):
    block: str
    options: D
    in_channels: int
    out_channels: int
    stride: int
    dilation: int


@_builtin
class Block(Op):
    """B of eq. 2, from the block registry, called as ``block(x, shortcut)``."""

    name, record = "block", BlockRec

    def _args(self, v: NodeView) -> tuple[Any, tuple[Any, ...]]:
        bt = get_block_type(v["block"])
        opts = bt.options.model_validate(v["options"])
        return bt, (v["in_channels"], v["out_channels"], v["stride"], v["dilation"], opts)

    def shape(self, v: NodeView) -> tuple[int, ...]:
        return (v["out_channels"], *((x - 1) // v["stride"] + 1 for x in v.hw[0]))

    def join_problem(self, v: NodeView, out: tuple[int, ...]) -> str | None:
        if len(v.hw) == 2 and tuple(v.hw[1]) != tuple(out[1:]):
            return f"the block gives {out[1]}x{out[2]}, its shortcut {v.hw[1][0]}x{v.hw[1][1]}"
        return None

    def layers(self, v: NodeView) -> list[Layer]:
        bt, args = self._args(v)
        return bt.static_layers(*args) or []

    def params(self, v: NodeView) -> int:
        bt, args = self._args(v)
        return bt.count_params(*args)

    def tensors(self, v: NodeView) -> list[tuple[str, tuple[int, ...]]]:
        bt, args = self._args(v)
        return bt.tensors(*args)

    def memory(self, v: NodeView, out: int) -> Mem:
        """Statements ``out = relu(bn(conv(out)))``: the previous ``out`` lives until each
        returns, the conv's output until the BN returns; the shortcut is added in place. A block
        without static layers is counted as its output alone."""
        bt, args = self._args(v)
        if bt.memory is not None:
            peak, saved = bt.memory(*args, v.hw[0])
            return Mem(peak, saved, saves_input=True, saves_output=True)
        layers = self.layers(v)
        if not layers:
            return Mem(out, saves_input=True, saves_output=True)
        sizes = _sizes(layers, v.hw[0])
        # any conv/BN sequence: a statement runs up to a BN (``out = relu(bn(conv(out)))`` for
        # the pairs of the built-in blocks); its input ``out`` lives until it returns, and each
        # layer's output until the next layer's is made
        peak = stmt_in = last = 0
        for i, (layer, size) in enumerate(zip(layers, sizes, strict=True)):
            if i and layer.kind == "conv" and layers[i - 1].kind == "bn":
                stmt_in, last = last, 0  # a new statement reads the previous one's result
            peak = max(peak, stmt_in + last + size)
            last = size
        return Mem(peak, sum(sizes[:-1]), saves_input=True, saves_output=True)

    def module(self, v: NodeView) -> Expr:
        bt, args = self._args(v)
        kw = bt.module_args(*args)
        pos = (kw.pop("in_channels"), kw.pop("out_channels"))
        name = bt.factory.rpartition(":")[2] if isinstance(bt.factory, str) else None
        return Expr(name or bt.factory.__name__, pos, tuple(kw.items()), source=bt)

    def call(self, v: NodeView) -> Expr:
        return Expr("self", (In(0), In(1) if len(v.inputs) == 2 else In(0)))  # identity shortcut

    def lint(self, v: NodeView) -> list[str]:
        out = super().lint(v)
        gives = (v["out_channels"], v.reds[0] * v["stride"])
        if len(v.chans) == 2 and (v.chans[1], v.reds[1]) != gives:
            out.append(
                f"shortcut {v.inputs[1]!r} is {v.chans[1]} ch at reduction {v.reds[1]}, the block gives "
                f"{gives[0]} ch at reduction {gives[1]}"
            )
        return out

    def comment(self, v: NodeView) -> str:
        text = f"{role(v.meta)} block: {_chans(v)}, reduction {v.meta['reduction']}"
        text = f"{text} {_where(v)}".strip()
        return text + ("" if len(v.inputs) == 2 else ", identity shortcut")

    def look(self, v: NodeView, detail: str) -> dict[str, str]:
        head = f"{role(v.meta)} {v['block']} {v['in_channels']}→{v['out_channels']}"
        head += f" /{v['stride']}" if v["stride"] > 1 else ""
        if detail != "layers":
            return box(head, "block", style="filled,rounded")
        # plain text, left-justified lines, not an HTML-like table: Graphviz compiled to
        # WebAssembly (the SVG without `dot`, the HTML view) is built without the XML parser
        # those need, and would draw the node's name instead
        layers = self.layers(v)
        width = max((len(layer.name) for layer in layers), default=0)
        rows = "".join(f"{layer.name.ljust(width)}  {layer.describe()}\\l" for layer in layers)
        return box(f"{head}\\l{rows}", "block", style="filled,rounded", fontname="Courier")
