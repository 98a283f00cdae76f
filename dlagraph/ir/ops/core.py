"""What every op shares: the :class:`Op` base (the default semantics), the expressions its
methods return (:class:`Expr`, :class:`In`, :class:`Sym`), the :class:`NodeView` they read, the
:class:`Mem` they report, and the op registry (:data:`OPS`, :func:`register_op`). The ``_``
helpers (a conv or BN layer, a comment's parts) are shared by the op families of this package.
No torch here.
"""

from __future__ import annotations

import keyword
from dataclasses import dataclass, field
from typing import Any, ClassVar

from typing_extensions import TypedDict

from ...base.errors import GraphError, RegistryError, safe_repr
from ...base.registry import Registry
from ...blocks import Layer

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
    "is_name",
    "ChannelsRec",
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
        """The parametrised layers (names relative to the node's module, in the module's
        registration order: :meth:`tensors` lists the state_dict from them)."""
        return []

    def params(self, v: NodeView) -> int:
        return sum(layer.params for layer in self.layers(v))

    def tensors(self, v: NodeView) -> list[tuple[str, tuple[int, ...]]]:
        """The state_dict entries of the node's module: (name relative to it, shape)."""
        return [t for layer in self.layers(v) for t in layer.tensors()]

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


OPS: Registry[Op] = Registry("op")


def register_op(cls: type[Op], *, replace: bool = False) -> type[Op]:
    """Make ``cls`` an op of the IR (``OPS[cls.name]``); every backend picks it up. A built-in
    op is never replaced, a user's own only with ``replace=True``."""
    if not (isinstance(cls, type) and issubclass(cls, Op)):
        raise RegistryError(f"register_op: give a subclass of Op (got {safe_repr(cls)})")
    OPS.add(getattr(cls, "name", None), cls(), replace=replace)  # type: ignore[arg-type]
    return cls


def _builtin(cls: type[Op]) -> type[Op]:
    """Register one of dlagraph's own ops (it cannot be replaced or removed)."""
    OPS.add(cls.name, cls(), builtin=True)
    return cls


def op_of(name: Any) -> Op:
    if name not in OPS:
        raise GraphError(f"unknown op {name!r}")
    return OPS[name]


class ChannelsRec(TypedDict):
    channels: int
