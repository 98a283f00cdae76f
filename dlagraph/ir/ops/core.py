"""The IR's ops, each defined once: its record, module, call, static shape, cost, comment and look.

This is dlagraph's one lowering layer (the role torch.fx's node semantics play for its interpreter
and its codegen). A node of the DAG is ``{"op": name, "rec": record, "meta": provenance, "layout":
backend details}``; its op, looked up in :data:`OPS`, says everything a backend needs, each
method given one :class:`NodeView` ``v`` of the node (its record read as ``v["field"]``):

* ``module(v)`` -- the torch module the node owns, as a constructor :class:`Expr` over
  helper and torch names (``conv_bn_relu(16, 32, 3, stride=2)``); symbolic arguments (``in_chans``,
  ``num_classes``) are :class:`Sym` values;
* ``call(v)`` -- how the inputs become the call in ``forward``, an :class:`Expr` whose
  leaves are :class:`In` (the k-th input, in port order);
* ``channels`` / ``reduction`` / ``shape`` -- static output facts;
* ``layers`` / ``params`` / ``macs`` -- parameter and MAC counts;
* ``lint`` / ``join_problem`` -- what the graph check and the shape analysis verify at the node;
* ``comment`` / ``look`` -- the generated-code comment and the diagram node.

The interpreter evaluates these expressions into an fx graph, the code generator prints them, the
analysis sums them and the diagram draws them; none of them switches on op names. To add an op,
subclass :class:`Op`, give it a record and register it with :func:`register_op` (README "How to add
an op"). No torch here.
"""

from __future__ import annotations

import html
import keyword
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from typing_extensions import TypedDict

from ...base.errors import GraphError
from ...blocks import Layer, get_block_type

__all__ = [
    "Expr",
    "In",
    "Sym",
    "NodeView",
    "Mem",
    "Op",
    "OPS",
    "register_op",
    "op_of",
    "COLORS",
    "box",
]

D = dict[str, Any]
HW = tuple[int, int]


@dataclass(frozen=True)
class In:
    """The ``port``-th input of the node."""

    port: int


@dataclass(frozen=True)
class Sym:
    """A constructor argument of the generated class (``in_chans``, ``num_classes``); the
    interpreter uses ``value``, the code generator prints ``name``."""

    name: str
    value: int


@dataclass(frozen=True)
class Expr:
    """A call ``fn(*args, **kwargs)``: ``fn`` is ``"self"`` (the node's own module), a torch name
    (``torch.cat``, ``nn.Conv2d``, ``F.interpolate``), a helper of ``nn/modules.py``
    (``conv_bn_relu``), or a registered block class, whose block type is ``source``."""

    fn: str
    args: tuple[Any, ...] = ()
    kwargs: tuple[tuple[str, Any], ...] = ()
    source: Any = None


COLORS = {
    "block": "#dbe9f6",
    "aggregate": "#f8c471",
    "downsample": "#d5f5e3",
    "project": "#ebdef0",
    "plain": "#eeeeee",
    "upsample": "#fadbd8",
    "collapsed": "#d6eaf8",
}
_EQ = {"eq1": "eq. 1", "eq2": "eq. 2", "eq5": "eq. 5"}


def is_name(text: object) -> bool:
    """A Python identifier that is not a keyword (what may reach generated source as a name)."""
    return isinstance(text, str) and text.isidentifier() and not keyword.iskeyword(text)


@dataclass(frozen=True)
class NodeView:
    """One node as its op sees it: the record (``v["channels"]``), provenance (``meta``), the
    backend's symbolic arguments (``syms``) and, in port order, its inputs' names, channels,
    reductions and H x W. Each caller fills what it knows; an op method reads only what it needs
    (``shape`` the H x W, ``lint`` the channels and reductions, ``call`` the number of inputs)."""

    name: str
    rec: D
    meta: D = field(default_factory=dict)
    syms: D = field(default_factory=dict)
    inputs: tuple[str, ...] = ()
    chans: tuple[int, ...] = ()
    reds: tuple[int, ...] = ()
    hw: tuple[HW, ...] = ()

    def __getitem__(self, key: str) -> Any:
        return self.rec[key]

    def __contains__(self, key: str) -> bool:
        return key in self.rec

    def get(self, key: str, default: Any = None) -> Any:
        return self.rec.get(key, default)


def _sym(v: NodeView, key: str) -> Any:
    return Sym(v.syms[key], v[key]) if key in v.syms else v[key]


def _chans(v: NodeView) -> str:
    return f"{v['in_channels']} -> {v['out_channels']} ch"


def _where(v: NodeView, *extra: str) -> str:
    parts = [p for p in (v.meta.get("spec_path"), *extra) if p]
    return f"({', '.join(parts)})" if parts else ""


def box(label: str, kind: str = "plain", shape: str = "box", **extra: str) -> dict[str, str]:
    """A diagram node: filled with ``kind``'s colour."""
    style = {"style": "filled", "fillcolor": COLORS[kind], "fontsize": "10"}
    return {"label": label, "shape": shape, **style, **extra}


@dataclass(frozen=True)
class Mem:
    """What running a node keeps in memory, per image, in elements of the activation dtype:
    ``peak``, the most held at once by the node beyond its inputs (its output included);
    ``saved``, what autograd saves of the node's own intermediate tensors for backward (``index``:
    int64 elements, max pooling's indices); whether it saves its first input (a conv's) and its
    output (a ReLU saves its result); ``alias``: the output is a view of the input."""

    peak: int
    saved: int = 0
    index: int = 0
    saves_input: bool = False
    saves_output: bool = False
    alias: bool = False


def _sizes(layers: list[Layer], hw: HW) -> list[int]:
    """Each layer's output elements per image, for input ``hw`` at the node."""
    return [x.out_channels * -(-hw[0] // x.out_div) * -(-hw[1] // x.out_div) for x in layers]


def _conv(name: str, cin: int, cout: int, k: int, s: int = 1, div: int = 1, **kw: Any) -> Layer:
    return Layer(name, "conv", cin, cout, k, s, out_div=div, **kw)


def _bn(name: str, c: int, div: int = 1) -> Layer:
    return Layer(name, "bn", c, c, out_div=div)


class Op:
    """The default semantics of an op: one input, same resolution, no module, no parameters."""

    name: ClassVar[str]
    record: ClassVar[type]  # a TypedDict of the op's semantic fields
    owns_module: ClassVar[bool] = True
    # its first layer (a conv) reads the concatenation of its inputs in port order: rewrites
    # lay that conv's input channels out per input (ir/plans.py); ``"split"``: and the module
    # is a ``DlaRoot``, whose conv may be computed as one conv per input
    concat: ClassVar[str] = ""

    def channels(self, v: NodeView) -> int:
        return v["out_channels"] if "out_channels" in v else v["channels"]

    def reduction(self, v: NodeView) -> int:
        """The node's resolution divisor (cumulative stride), from its inputs'."""
        return v.reds[0] * v.get("stride", 1)

    def shape(self, v: NodeView) -> tuple[int, ...]:
        """The output shape without the batch dimension, from the inputs' H x W."""
        return (self.channels(v), *v.hw[0])

    def join_problem(self, v: NodeView, out: tuple[int, ...]) -> str | None:
        """Why maps joined at this node would differ in size, or None."""
        return None

    def layers(self, v: NodeView) -> list[Layer]:
        """The parametrised layers (names relative to the node's module)."""
        return []

    def params(self, v: NodeView) -> int:
        return sum(layer.params for layer in self.layers(v))

    def macs(self, v: NodeView) -> int:
        """Multiply-accumulates for the H x W at port 0."""
        return sum(layer.macs(*v.hw[0]) for layer in self.layers(v))

    def memory(self, v: NodeView, out: int) -> Mem:
        """Memory of the node (``out``: its output elements per image). Default: an
        ``nn.Sequential`` of its layers (each layer's input freed once the next returns), a ReLU
        after each BN in place; autograd saves each conv's and BN's input and each ReLU's output."""
        layers = self.layers(v)
        if not layers:
            return Mem(out)
        sizes = _sizes(layers, v.hw[0])
        peak = max(a + b for a, b in zip([0, *sizes], sizes, strict=False))
        ends_in_relu = layers[-1].kind == "bn"
        return Mem(peak, sum(sizes[:-1]), saves_input=True, saves_output=ends_in_relu)

    def module(self, v: NodeView) -> Expr | None:
        return None

    def call(self, v: NodeView) -> Any:
        return Expr("self", (In(0),))

    def lint(self, v: NodeView) -> list[str]:
        """Channel problems at the node, given its inputs, their channels and reductions."""
        want = v.get("in_channels", v.get("channels"))
        if v.chans and want is not None and v.chans[0] != want:
            return [f"expects {want} input channels, input {v.inputs[0]!r} provides {v.chans[0]}"]
        return []

    def comment(self, v: NodeView) -> str:
        return f"{_chans(v)}, reduction {v.meta['reduction']} {_where(v)}".strip()

    def look(self, v: NodeView, detail: str) -> dict[str, str]:
        return box(self.name)


OPS: dict[str, Op] = {}


def register_op(cls: type[Op]) -> type[Op]:
    """Make ``cls`` an op of the IR (``OPS[cls.name]``); every backend picks it up."""
    OPS[cls.name] = cls()
    return cls


def op_of(name: Any) -> Op:
    try:
        return OPS[name]
    except (KeyError, TypeError):
        raise GraphError(f"unknown op {name!r}") from None


# ---- records and ops ----------------------------------------------------------------------------


class ChannelsRec(TypedDict):
    channels: int


@register_op
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


@register_op
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


@register_op
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
        if v.meta.get("role") == "P":  # IDA's projection to the aggregation width
            return f"P: {_chans(v)}, reduction {v.meta['reduction']} {_where(v, 'eq. 1')}"
        return super().comment(v)

    def look(self, v: NodeView, detail: str) -> dict[str, str]:
        arrow = f"{v['in_channels']}→{v['out_channels']}"
        if v.meta.get("role") == "P":
            return box(f"P {arrow}", "project", height="0.3")
        k, s = v["kernel_size"], v["stride"]
        label = f"{v.name.rsplit('.', 1)[-1]}: {v['convs']}x conv{k}x{k} {arrow}"
        return box(label + (f" /{s}" if s > 1 else ""))


class PoolRec(TypedDict):
    channels: int
    stride: int


@register_op
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
        what = "S(x), eq. 5" if v.meta.get("role") == "S" else "for the shortcut"
        return f"2x2 max pool to reduction {v.meta['reduction']} {_where(v, what)}"

    def look(self, v: NodeView, detail: str) -> dict[str, str]:
        if v.meta.get("role") == "S":
            return box("S", "downsample", "invtrapezium", height="0.3")
        small = {"height": "0.25", "fillcolor": "#f4f6f6", "fontsize": "8"}
        return box("pool", "downsample", "invtrapezium", **small)


class ProjectRec(TypedDict):
    in_channels: int
    out_channels: int


@register_op
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


@register_op
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
        convs, bns = sizes[0::2], sizes[1::2]
        peak = max(p + c + b for p, c, b in zip([0, *bns], convs, bns, strict=False))
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
        text = f"{v.meta.get('role', '')} block: {_chans(v)}, reduction {v.meta['reduction']}"
        text = f"{text} {_where(v)}".strip()
        return text + ("" if len(v.inputs) == 2 else ", identity shortcut")

    def look(self, v: NodeView, detail: str) -> dict[str, str]:
        head = f"{v.meta.get('role', '')} {v['block']} {v['in_channels']}→{v['out_channels']}"
        head += f" /{v['stride']}" if v["stride"] > 1 else ""
        if detail != "layers":
            return box(head, "block", style="filled,rounded")
        rows = "".join(
            f"<TR><TD ALIGN='LEFT'>{html.escape(layer.name)}</TD><TD ALIGN='LEFT'>"
            f"{html.escape(layer.describe())}</TD></TR>"
            for layer in self.layers(v)
        )
        table = f"<TABLE BORDER='1' CELLBORDER='0' CELLSPACING='0' BGCOLOR='{COLORS['block']}'>"
        title = f"<TR><TD COLSPAN='2'><B>{html.escape(head)}</B></TD></TR>"
        return {"shape": "plain", "fontsize": "10", "label": f"<{table}{title}{rows}</TABLE>>"}


class _Aggregation(Op):
    """What every aggregation node N shares: channels concatenated, maps joined."""

    def lint(self, v: NodeView) -> list[str]:
        out = []
        if sum(v.chans) != v["in_channels"]:
            parts = " + ".join(map(str, v.chans))
            out.append(
                f"expects {v['in_channels']} input channels, its inputs {list(v.inputs)} provide "
                f"{sum(v.chans)} ({parts})"
            )
        if v.get("residual") and v.chans and v.chans[0] != v["out_channels"]:
            out.append(
                f"residual input {v.inputs[0]!r} has {v.chans[0]} channels, the node outputs "
                f"{v['out_channels']}"
            )
        if len(set(v.reds)) > 1:
            out.append(f"inputs have different reductions {sorted(set(v.reds))}")
        return out

    def join_problem(self, v: NodeView, out: tuple[int, ...]) -> str | None:
        if len({tuple(x) for x in v.hw}) > 1:
            return "the joined feature maps differ (" + ", ".join(f"{h}x{w}" for h, w in v.hw) + ")"
        return None

    def comment(self, v: NodeView) -> str:
        res = "residual" if v.get("residual") else ""
        return f"N: {_chans(v)} {_where(v, _EQ.get(v.meta.get('eq') or '', ''), res)}"

    def look(self, v: NodeView, detail: str) -> dict[str, str]:
        xlabel = f"{v['in_channels']}→{v['out_channels']}"
        label = "N+" if v.get("residual") else "N"
        size = {"width": "0.35", "fixedsize": "true", "fontsize": "11"}
        return box(label, "aggregate", "circle", xlabel=xlabel, **size)


class AggregateRec(TypedDict):
    in_channels: int
    out_channels: int
    kernel_size: int
    residual: bool


@register_op
class Aggregate(_Aggregation):
    """N of eq. 1-5 (``DlaRoot``): concat in argument order -> conv -> BN (-> + input 0) -> ReLU."""

    name, record, concat = "aggregate", AggregateRec, "split"

    def layers(self, v: NodeView) -> list[Layer]:
        cin, cout = v["in_channels"], v["out_channels"]
        return [_conv("conv", cin, cout, v["kernel_size"]), _bn("bn", cout)]

    def module(self, v: NodeView) -> Expr:
        kw = (("kernel_size", v["kernel_size"]), ("residual", v["residual"]))
        return Expr("DlaRoot", (v["in_channels"], v["out_channels"]), kw)

    def memory(self, v: NodeView, out: int) -> Mem:
        # bn(conv(cat(xs))): the concatenation lives until the conv returns, which the BN saves
        cat, c = v["in_channels"] * v.hw[0][0] * v.hw[0][1], out
        return Mem(max(cat + c, 2 * c), cat + c, saves_output=True)

    def call(self, v: NodeView) -> Expr:
        return Expr("self", ([In(i) for i in range(len(v.inputs))],))


class IdaNodeRec(TypedDict):
    in_channels: int
    out_channels: int
    kernel_size: int


@register_op
class IdaNode(_Aggregation):
    """The official ``dla_up.py`` IDAUp node: ``Sequential(conv, BN, ReLU)`` on the concatenation."""

    name, record, concat = "ida_node", IdaNodeRec, "concat"

    def layers(self, v: NodeView) -> list[Layer]:
        cin, cout = v["in_channels"], v["out_channels"]
        return [_conv("0", cin, cout, v["kernel_size"]), _bn("1", cout)]

    def module(self, v: NodeView) -> Expr:
        return Expr("ida_node", (v["in_channels"], v["out_channels"], v["kernel_size"]))

    def memory(self, v: NodeView, out: int) -> Mem:
        # Sequential(conv, BN, ReLU)(cat(xs)): the caller holds the concatenation throughout
        cat, c = v["in_channels"] * v.hw[0][0] * v.hw[0][1], out
        return Mem(cat + 2 * c, cat + c, saves_output=True)

    def call(self, v: NodeView) -> Expr:
        return Expr("self", (Expr("torch.cat", ([In(i) for i in range(len(v.inputs))], 1)),))


@register_op
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


@register_op
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


@register_op
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


@register_op
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


@register_op
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


@register_op
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


@register_op
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


class DeformConvRec(TypedDict):
    in_channels: int
    out_channels: int
    deformable: bool  # DCNv2 (CenterNet's DeformConv), or a plain 3x3 conv (FairMOT's conv variant)


def _dcn_layers(v: NodeView, cin: int, cout: int) -> list[Layer]:
    if not v["deformable"]:
        return [_conv("conv", cin, cout, 3), _bn("actf.0", cout)]
    offsets = _conv("conv.conv_offset_mask", cin, 27, 3, bias=True)  # 3 x 3x3: dy, dx, mask
    return [_conv("conv", cin, cout, 3, bias=True), offsets, _bn("actf.0", cout)]


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


@register_op
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


@register_op
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


@register_op
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
