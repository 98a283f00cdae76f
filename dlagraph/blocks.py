"""The block registry: every block type a spec can name, with its static contract.

A block is the paper's ``B`` (eq. 2): a small residual network that maps ``in_channels`` to
``out_channels``, does its own striding (the first block of a tree gets the tree's stride) and adds
the shortcut the tree hands it. The contract a block type declares lets the compiler check channels
and count parameters and MACs without importing torch:

* ``options``: a pydantic model of the block's extra spec keys (``cardinality`` …), ``extra="forbid"``;
* ``layers(in, out, stride, dilation, options)``: the convs and BNs the block holds, named as its
  module names them and in registration order, for parameter and MAC counts, layer-level diagrams
  and the state_dict names and shapes of the HTML view;
* ``check(out, options)``: channel rules (e.g. a split block's width must be divisible by its cardinality);
* ``module_args(...)``: the constructor arguments of the torch module, used by both backends;
* ``recognise(blocks)``: ``infer``'s reading of the options from a checkpoint's tensor shapes
  (None when they are not this type's).

Built-in types point at their torch classes by import path, so this module stays torch-free.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .base.errors import GraphError, RegistryError, safe_repr
from .base.registry import Registry, check_options_model
from .base.shapes import Shapes, get

__all__ = [
    "Layer",
    "BlockShapes",
    "BlockType",
    "register_block",
    "unregister_block",
    "get_block_type",
    "registered_blocks",
]


# what the tree passes every block's constructor itself
RESERVED_OPTIONS = frozenset({"in_channels", "out_channels", "stride", "dilation"})


@dataclass(frozen=True)
class Layer:
    """One parametrised layer inside a block, as far as static analysis needs it.

    ``out_div`` is how much smaller the layer's output is than the block input (1 or the stride).
    """

    name: str
    kind: Literal["conv", "bn"]
    in_channels: int
    out_channels: int
    kernel_size: int = 1
    stride: int = 1
    groups: int = 1
    dilation: int = 1
    bias: bool = False
    out_div: int = 1

    @property
    def params(self) -> int:
        if self.kind == "bn":
            return 2 * self.out_channels
        weights = self.out_channels * (self.in_channels // self.groups) * self.kernel_size**2
        return weights + (self.out_channels if self.bias else 0)

    def tensors(self) -> list[tuple[str, tuple[int, ...]]]:
        """The layer's state_dict entries (name under the module that holds the layer, shape)
        in torch's order: a module's parameters, then its buffers. A BatchNorm's running statistics and
        batch counter are buffers, but they are in the state_dict all the same."""
        at = f"{self.name}." if self.name else ""
        c = self.out_channels
        if self.kind == "bn":
            stats = ("weight", "bias", "running_mean", "running_var")
            return [(at + k, (c,)) for k in stats] + [(at + "num_batches_tracked", ())]
        # (out, in / groups, k, k); a depthwise transposed conv (``Upsample``) has in = out =
        # groups, where its (in, out / groups, k, k) is the same shape
        weight = (c, self.in_channels // self.groups, self.kernel_size, self.kernel_size)
        return [(at + "weight", weight)] + ([(at + "bias", (c,))] if self.bias else [])

    def describe(self) -> str:
        """``3x3 64→128 g32 /2`` or ``BN``: one row of a layer-level diagram."""
        if self.kind == "bn":
            return "BN"
        g = f" g{self.groups}" if self.groups > 1 else ""
        s = f" /{self.stride}" if self.stride > 1 else ""
        k = self.kernel_size
        return f"{k}x{k} {self.in_channels}→{self.out_channels}{g}{s}"

    def macs(self, h: int, w: int) -> int:
        """Multiply-accumulates for an input of ``h x w`` at the block input."""
        if self.kind == "bn":
            return 0
        ho, wo = -(-h // self.out_div), -(-w // self.out_div)
        return ho * wo * self.out_channels * (self.in_channels // self.groups) * self.kernel_size**2


class NoOptions(BaseModel):
    """A block type without extra options."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def conv(
    name: str,
    cin: int,
    cout: int,
    k: int,
    stride: int = 1,
    groups: int = 1,
    dilation: int = 1,
    div: int = 1,
) -> list[Layer]:
    """A bias-free conv followed by its BatchNorm, named ``conv<name>`` / ``bn<name>``."""
    return [
        Layer(f"conv{name}", "conv", cin, cout, k, stride, groups, dilation, out_div=div),
        Layer(f"bn{name}", "bn", cout, cout, out_div=div),
    ]


def _default_module_args(
    cin: int, cout: int, stride: int, dilation: int, options: BaseModel
) -> dict[str, Any]:
    args: dict[str, Any] = {"in_channels": cin, "out_channels": cout, "stride": stride}
    if dilation != 1:
        args["dilation"] = dilation
    # JSON-mode values (an Enum as its value): the same in both backends, and printable as
    # literals into generated files, which cannot import the user's option types
    args.update(options.model_dump(mode="json"))
    return args


@dataclass(frozen=True)
class BlockShapes:
    """The first block of one tree level in a checkpoint, as a block type's ``recognise`` reads
    it: its tensors' shapes, named relative to the block (``conv1.weight``), its input and output
    channels, and where it is (``level2.tree1.``; pass ``under=where`` to
    :func:`~dlagraph.base.shapes.get` so that an error names the whole tensor)."""

    shapes: Shapes
    in_channels: int
    out_channels: int
    where: str = ""

    def names(self) -> set[str]:
        """The block's child modules that hold tensors (``conv1``, ``bn1``, ``convs`` …)."""
        return {k.split(".")[0] for k in self.shapes}


# what ``recognise`` reads off a checkpoint: the spec options (without ``type``) and, per option
# the weights cannot show, the value taken and why
Recognised = tuple[dict[str, Any], dict[str, str]]
# (the first block of each tree level, Level 3's first) -> Recognised, or None: not this type
Recognise = Callable[[list[BlockShapes]], Recognised | None]


@dataclass(frozen=True)
class BlockType:
    """A registered block type: its torch factory and the static contract the compiler relies on."""

    name: str
    factory: Any  # an nn.Module class, or "package.module:Class" for lazy import
    options: type[BaseModel] = NoOptions
    layers: Callable[..., list[Layer]] | None = None
    check: Callable[[int, BaseModel], list[str]] = field(default=lambda out, opts: [])
    module_args: Callable[..., dict[str, Any]] = _default_module_args
    description: str = ""
    builtin: bool = False
    dilation: bool = True  # accepts a `dilation` argument (needed by dilated segmentation nets)
    # (cin, cout, stride, dilation, options, (h, w)) -> (peak, saved) elements per image, where
    # the layers' statement model (dlagraph.ir.ops.Block.memory) does not describe the forward
    memory: Callable[..., tuple[int, int]] | None = None
    recognise: Recognise | None = None

    def resolve(self) -> Any:
        """The torch class (imports it on first use for built-in types)."""
        if isinstance(self.factory, str):
            mod, _, attr = self.factory.partition(":")
            return getattr(importlib.import_module(mod), attr)
        return self.factory

    def static_layers(
        self, cin: int, cout: int, stride: int, dilation: int, options: BaseModel
    ) -> list[Layer] | None:
        if self.layers is None:
            return None
        return self._checked(self.layers(cin, cout, stride, dilation, options))

    def _checked(self, layers: object) -> list[Layer]:
        """A user's ``layers`` answer as static analysis needs it: a list of :class:`Layer`,
        each with positive channels, groups that divide them, one name each."""
        where = f"block type {self.name!r}: its layers"
        if not isinstance(layers, list) or not all(isinstance(x, Layer) for x in layers):
            raise GraphError(f"{where} must be a list of dlagraph.Layer (got {safe_repr(layers)})")
        names = [x.name for x in layers]
        if len(set(names)) != len(names):
            raise GraphError(f"{where} name a layer twice: {safe_repr(names)}")
        for x in layers:
            ints = (x.in_channels, x.out_channels, x.kernel_size, x.stride, x.groups, x.out_div)
            if x.kind not in ("conv", "bn") or not all(type(v) is int and v >= 1 for v in ints):
                raise GraphError(f"{where}: needs positive whole numbers: {safe_repr(x, 160)}")
            if x.in_channels % x.groups or x.out_channels % x.groups:
                raise GraphError(f"{where}: {x.name!r} has groups that do not divide its channels")
        return layers

    def count_params(
        self, cin: int, cout: int, stride: int, dilation: int, options: BaseModel
    ) -> int:
        """Parameters of one block: from ``layers`` when declared, else from a meta-device
        instance (the block is a torch class, so torch is already there; nothing is allocated)."""
        layers = self.static_layers(cin, cout, stride, dilation, options)
        if layers is not None:
            return sum(layer.params for layer in layers)
        m = self._meta_instance(cin, cout, stride, dilation, options)
        return sum(p.numel() for p in m.parameters())

    def tensors(
        self, cin: int, cout: int, stride: int, dilation: int, options: BaseModel
    ) -> list[tuple[str, tuple[int, ...]]]:
        """The state_dict entries of one block (name under the block's module, shape): from
        ``layers`` when declared, else from a meta-device instance, as :meth:`count_params`."""
        layers = self.static_layers(cin, cout, stride, dilation, options)
        if layers is not None:
            return [t for layer in layers for t in layer.tensors()]
        m = self._meta_instance(cin, cout, stride, dilation, options)
        return [(k, tuple(v.shape)) for k, v in m.state_dict().items()]

    def _meta_instance(
        self, cin: int, cout: int, stride: int, dilation: int, options: BaseModel
    ) -> Any:
        import torch

        with torch.device("meta"):
            return self.resolve()(**self.module_args(cin, cout, stride, dilation, options))


BLOCKS: Registry[BlockType] = Registry("block type")


def register_block(
    name: str,
    *,
    options: type[BaseModel] | None = None,
    layers: Callable[..., list[Layer]] | None = None,
    check: Callable[[int, BaseModel], list[str]] | None = None,
    memory: Callable[..., tuple[int, int]] | None = None,
    recognise: Recognise | None = None,
    description: str = "",
    replace: bool = False,
) -> Callable[[type], type]:
    """Register an ``nn.Module`` class as a block type that specs can name with ``block: {type: name}``.

    The class is constructed as ``cls(in_channels, out_channels, stride=..., **options)`` and called
    as ``block(x, shortcut)``, where ``shortcut`` has the block's output shape (the tree supplies the
    projected, pooled input for the first block and the identity for the others) and must be added
    before the final activation. ``options`` (or a nested class ``Options``) is a pydantic model of the
    extra spec keys; ``layers`` (or a ``layers`` staticmethod) describes its convs for static parameter
    and MAC counts and the state_dict names. Without ``layers``, parameter counts and state_dict
    names are taken from a meta-device instance (which imports torch).
    ``memory(cin, cout, stride, dilation, options, (h, w))`` returns ``(peak, saved)`` activation
    elements per image, for :func:`~dlagraph.activation_memory`, where the forward is not the
    ``out = relu(bn(conv(out)))`` chain of its ``layers`` (``res2net``'s is an example).
    ``recognise(blocks)`` lets ``dlagraph infer`` find the block in a checkpoint: given the first
    block of each tree level (:class:`BlockShapes`), it returns the spec options and what it
    assumed (``({"expand": 4}, {})``), or None when the tensors are not this block's.

    Example:
        >>> import dlagraph
        >>> from torch import nn
        >>> @dlagraph.register_block("plain")
        ... class Plain(nn.Module):
        ...     def __init__(self, in_channels, out_channels, stride=1):
        ...         super().__init__()
        ...         self.conv = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        ...     def forward(self, x, shortcut=None):
        ...         return self.conv(x) + (x if shortcut is None else shortcut)
        >>> "plain" in dlagraph.registered_blocks()
        True
        >>> dlagraph.unregister_block("plain")
    """

    def deco(cls: type) -> type:
        BLOCKS.check(name, replace=replace)
        if not isinstance(cls, type):
            raise RegistryError(
                f"block type {name!r}: register an nn.Module class (got {safe_repr(cls)})"
            )
        opts = check_options_model(
            "block type", name, options or getattr(cls, "Options", None) or NoOptions
        )
        taken = sorted(set(opts.model_fields) & RESERVED_OPTIONS)
        if taken:  # the tree passes these itself: an option of the same name would override it
            raise RegistryError(
                f"block type {name!r}: option(s) {', '.join(taken)} are the constructor's own "
                "arguments, which the tree passes; rename them"
            )
        lay = layers or getattr(cls, "layers", None)
        try:
            takes_dilation = "dilation" in inspect.signature(cls).parameters
        except (TypeError, ValueError):
            takes_dilation = False
        bt = BlockType(
            name=name,
            factory=cls,
            options=opts,
            layers=lay,
            check=check or (lambda out, o: []),
            memory=memory,
            recognise=recognise,
            description=description or (cls.__doc__ or "").strip().split("\n")[0],
            dilation=takes_dilation,
        )
        BLOCKS.add(name, bt, replace=replace)
        return cls

    return deco


def unregister_block(name: str) -> None:
    """Remove a user-registered block type (built-in types stay)."""
    BLOCKS.remove(name)


def get_block_type(name: str) -> BlockType:
    return BLOCKS.get(name)


def registered_blocks() -> list[str]:
    """Names of every registered block type, built-ins first, in registration order."""
    return BLOCKS.names()


# ---- built-in block types ---------------------------------------------------------------------


def _basic_layers(cin: int, cout: int, s: int, d: int, o: BaseModel) -> list[Layer]:
    return conv("1", cin, cout, 3, s, dilation=d, div=s) + conv(
        "2", cout, cout, 3, dilation=d, div=s
    )


def _basic_recognise(blocks: list[BlockShapes]) -> Recognised | None:
    if not {"conv1", "conv2"} <= blocks[0].names() or "conv3" in blocks[0].names():
        return None
    # two full convs to the output width at every level: a user's block may name its convs the
    # same (kernels are left to the comparison of every tensor that follows, which names one
    # that differs)
    full = all(
        get(b.shapes, "conv1.weight", 4, under=b.where)[:2] == (b.out_channels, b.in_channels)
        and get(b.shapes, "conv2.weight", 4, under=b.where)[:2] == (b.out_channels,) * 2
        for b in blocks
    )
    return ({}, {}) if full else None


def _bottleneck_layers(mid: int, groups: int, cin: int, cout: int, s: int, d: int) -> list[Layer]:
    return (
        conv("1", cin, mid, 1)
        + conv("2", mid, mid, 3, s, groups, d, div=s)
        + conv("3", mid, cout, 1, div=s)
    )


def _middle(b: BlockShapes) -> tuple[int, int] | None:
    """The width and groups of a bottleneck's (or split block's) 3x3 conv, or None: not one."""
    if not {"conv1", "conv2", "conv3"} <= b.names():
        return None
    mid, per_group = get(b.shapes, "conv2.weight", 4, under=b.where)[:2]
    return mid, mid // per_group


def _bottleneck_recognise(blocks: list[BlockShapes]) -> Recognised | None:
    fits = all(_middle(b) == (b.out_channels // 2, 1) for b in blocks)
    return ({}, {}) if fits else None


class SplitOptions(BaseModel):
    """Options of the split (ResNeXt) block."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    cardinality: int = Field(32, gt=0, le=1024, description="number of groups of the 3x3 conv")


def _split_mid(cout: int, card: int) -> int:
    # The paper halves ResNeXt's width ratio: middle width = out * cardinality / 32 (official
    # BottleneckX); timm's floor(out * 4 / 64) * cardinality // 2 gives the same for valid widths.
    return cout * card // 32


def _split_recognise(blocks: list[BlockShapes]) -> Recognised | None:
    found = _middle(blocks[0])
    if found is None:
        return None
    card = found[1]
    fits = all(_middle(b) == (_split_mid(b.out_channels, card), card) for b in blocks)
    return ({"cardinality": card}, {}) if fits else None


def _split_check(cout: int, o: BaseModel) -> list[str]:
    card = o.cardinality  # type: ignore[attr-defined]
    if (cout * card) % 32 or _split_mid(cout, card) % card or cout * card < 32:
        return [
            f"a split block with cardinality {card} has middle width channels * {card} / 32 = "
            f"{cout * card / 32:g}, which must be a whole multiple of {card}; "
            f"use channels that are a multiple of 32"
        ]
    return []


class Res2NetOptions(BaseModel):
    """Options of the Res2Net bottleneck (timm ``DlaBottle2neck``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    scale: int = Field(4, ge=1, le=16, description="number of hierarchical splits")
    cardinality: int = Field(8, gt=0, le=1024, description="groups of each 3x3 conv")
    base_width: int = Field(4, gt=0, le=1024, description="width per group at 64 channels")


def _res2_width(cout: int, o: Res2NetOptions) -> int:
    return _split_width(cout, o.base_width, o.cardinality)


def _split_width(cout: int, base_width: int, cardinality: int) -> int:
    return (cout * base_width // 64) * cardinality // 2


def _res2_layers(cin: int, cout: int, s: int, d: int, o: Any) -> list[Layer]:
    w = _res2_width(cout, o)
    out = [
        Layer("conv1", "conv", cin, w * o.scale, 1),
        Layer("bn1", "bn", w * o.scale, w * o.scale),
    ]
    for i in range(max(1, o.scale - 1)):
        out += [
            Layer(f"convs.{i}", "conv", w, w, 3, s, o.cardinality, d, out_div=s),
            Layer(f"bns.{i}", "bn", w, w, out_div=s),
        ]
    return out + conv("3", w * o.scale, cout, 1, div=s)


def _res2_memory(
    cin: int, cout: int, s: int, d: int, o: Any, hw: tuple[int, int]
) -> tuple[int, int]:
    """DlaBottle2neck's forward: ``out`` (the 1x1 output, split into views) and every group's
    output (``spo``) live to the end; a group's input is a view, or a new sum ``sp + spx[i]``;
    the concatenation lives until ``conv3`` returns. Saved: the BN inputs, the ReLU outputs, the
    sums and the concatenation (the convs' other inputs are views of saved tensors)."""
    w, n, a = _res2_width(cout, o), max(1, o.scale - 1), hw[0] * hw[1]
    b = -(-hw[0] // s) * -(-hw[1] // s)
    c1 = w * o.scale * a
    peaks, groups, sums = [2 * c1], 0, 0
    for i in range(n):
        summed = 0 if i == 0 or s > 1 else w * b
        peaks.append(c1 + groups + summed + 2 * w * b)
        groups, sums = groups + w * b, sums + summed
    groups += w * b if o.scale > 1 and s > 1 else 0  # the pooled last split (else a view)
    cat, c3 = w * o.scale * b, cout * b
    peaks += [c1 + groups + cat + c3, c1 + groups + 2 * c3]
    return max(peaks), 2 * c1 + sums + 2 * n * w * b + cat + c3


def _res2_recognise(blocks: list[BlockShapes]) -> Recognised | None:
    first = blocks[0]
    if not {"conv1", "convs", "conv3"} <= first.names():
        return None
    width, per_group = get(first.shapes, "convs.0.weight", 4, under=first.where)[:2]
    card = width // per_group
    scale = get(first.shapes, "conv1.weight", 4, under=first.where)[0] // width
    widths = [get(b.shapes, "convs.0.weight", 4, under=b.where)[0] for b in blocks]
    # every base_width that gives each level's split width builds the same network: the
    # default 4 when it fits, else the smallest
    fits = [
        bw
        for bw in range(1, 1025)
        if all(
            _split_width(b.out_channels, bw, card) == w for b, w in zip(blocks, widths, strict=True)
        )
    ]
    if not fits:
        return None
    bw = 4 if 4 in fits else fits[0]
    note = {}
    if len(fits) > 1:
        note["base_width"] = (
            f"{bw} (base widths {fits[0]}..{fits[-1]} all give these tensor shapes)"
        )
    return {"scale": scale, "cardinality": card, "base_width": bw}, note


def _res2_check(cout: int, o: Any) -> list[str]:
    w = _res2_width(cout, o)
    if w == 0 or w % o.cardinality:
        return [
            f"a res2net block needs a split width floor(channels * base_width / 64) * cardinality "
            f"/ 2 that is positive and divisible by cardinality ({o.cardinality}); "
            f"{cout} channels give {w}"
        ]
    return []


def _builtin(name: str, cls: str, description: str, **contract: Any) -> None:
    factory = f"dlagraph.nn.modules:{cls}"
    bt = BlockType(name, factory, description=description, builtin=True, **contract)
    BLOCKS.add(name, bt, builtin=True)


def _split_args(cin: int, cout: int, s: int, d: int, o: Any) -> dict[str, Any]:
    args = _default_module_args(cin, cout, s, d, NoOptions())
    return args | {"mid_channels": _split_mid(cout, o.cardinality), "groups": o.cardinality}


# registered in the order messages and the schema list them
_builtin(
    "basic",
    "DlaBasic",
    "two 3x3 convs with a residual add (paper Fig. 3a)",
    layers=_basic_layers,
    recognise=_basic_recognise,
)
_builtin(
    "bottleneck",
    "DlaBottleneck",
    "1x1 -> 3x3 -> 1x1 with middle width out/2 (paper Fig. 3b)",
    layers=lambda cin, cout, s, d, o: _bottleneck_layers(cout // 2, 1, cin, cout, s, d),
    check=lambda cout, o: [] if cout >= 2 else [f"a bottleneck needs >= 2 channels (got {cout})"],
    module_args=lambda cin, cout, s, d, o: (
        _default_module_args(cin, cout, s, d, o) | {"mid_channels": cout // 2}
    ),
    recognise=_bottleneck_recognise,
)
_builtin(
    "res2net",
    "DlaBottle2neck",
    "Res2Net bottleneck with hierarchical splits (timm DlaBottle2neck)",
    options=Res2NetOptions,
    layers=_res2_layers,
    check=_res2_check,
    memory=_res2_memory,
    recognise=_res2_recognise,
)
_builtin(
    "split",
    "DlaBottleneck",
    "ResNeXt split block, middle width out*cardinality/32 (paper Fig. 3c)",
    options=SplitOptions,
    layers=lambda cin, cout, s, d, o: _bottleneck_layers(
        _split_mid(cout, o.cardinality), o.cardinality, cin, cout, s, d
    ),
    check=_split_check,
    module_args=_split_args,
    recognise=_split_recognise,
)
