"""The spec schema: a DLA network as data (paper Table 1), validated by pydantic.

A spec names the paper's levels (Levels 1 and 2 are plain conv levels; Levels 3.. are HDA trees of
depth ``d`` joined by IDA, eq. 5), the block type (basic / bottleneck / split / registered), the
aggregation node options (eq. 3, or eq. 4 when residual), the head and the module layout (timm or
the official ucbdrive code). Every model is frozen and rejects unknown keys.

Use :func:`dlagraph.load_spec` to read YAML: it turns every validation problem into one line of a
:class:`~dlagraph.SpecError`, with the field path, the offending value and, for files, the YAML line.
"""

from __future__ import annotations

import enum
import json
import keyword
import math
import re
import sys
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    SerializeAsAny,
    Tag,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ..base.errors import RegistryError, clip
from ..base.limits import IDENT, MAX_BLOCKS, MAX_CHANNELS, MAX_INPUT_SIDE, MAX_TREE_LEVELS
from ..blocks import get_block_type, registered_blocks
from ..heads import (
    CenterNetHead,
    ClassifierHead,
    DlaUpHead,
    FeaturesHead,
    SegmentationHead,
    get_head_type,
    registered_heads,
)
from .errors import Loc, flatten_errors, format_loc, problem_message, problems_error, short_message

__all__ = [
    "Spec",
    "SegmentationHead",
    "DlaUpHead",
    "CenterNetHead",
    "ConvLevel",
    "TreeLevel",
    "BlockSpec",
    "Aggregation",
    "Scale",
    "ClassifierHead",
    "FeaturesHead",
    "MAX_BLOCKS",
    "MAX_TREE_LEVELS",
    "MAX_CHANNELS",
]

_IDENT = IDENT
# modules a generated `<name>.py` must not shadow: the standard library and what it imports
SHADOWED_MODULES = frozenset(sys.stdlib_module_names) | {
    "torch",
    "torchvision",
    "numpy",
    "timm",
    "dlagraph",
    "typing_extensions",
}


_Side = Annotated[int, Field(gt=0, le=MAX_INPUT_SIDE)]  # pixels of one side of an input


def _height_width(v: Any) -> Any:
    """``[height, width]``: a list of two (what each side must be, the tuple's items say)."""
    if isinstance(v, list | tuple) and len(v) != 2:
        raise PydanticCustomError(
            "height_width", "give [height, width]: 2 numbers (got {n})", {"n": len(v)}
        )
    return _as_tuple(v)


def _as_tuple(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, ser_json_inf_nan="constants"
    )


class ConvLevel(_Model):
    """Paper Levels 1 and 2: ``convs`` 3x3 conv-BN-ReLU layers (Level 1 adds the 7x7 stem first)."""

    channels: int = Field(gt=0, le=MAX_CHANNELS, description="output channels")
    convs: int = Field(1, ge=1, le=16, description="number of 3x3 conv layers")


class TreeLevel(_Model):
    """Paper Levels 3..: an HDA tree of depth ``depth`` (2^depth blocks), stride 2, rooted by eq. 5."""

    channels: int = Field(gt=0, le=MAX_CHANNELS, description="output channels of every block")
    depth: int = Field(ge=1, le=1000, description="HDA depth d (the tree holds 2^d blocks)")
    aggregate_input: bool | None = Field(
        None,
        description="whether the level root also aggregates the downsampled level input S(x) "
        "(eq. 5); default: off for the first tree level, on for the others (as the official code)",
    )


def _level_tag(v: Any) -> str:
    if isinstance(v, dict):
        return "tree" if "depth" in v or "aggregate_input" in v else "conv"
    return "tree" if isinstance(v, TreeLevel) else "conv"


Level = Annotated[
    Annotated[ConvLevel, Tag("conv")] | Annotated[TreeLevel, Tag("tree")],
    Discriminator(_level_tag),
]


def _plain_data(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    raise TypeError(
        f"block options must be plain data (numbers, strings, lists, mappings); "
        f"got a {type(value).__name__}"
    )


class BlockSpec(BaseModel):
    """The block type and its options, written flat in YAML: ``{type: split, cardinality: 32}``."""

    model_config = ConfigDict(
        frozen=True, arbitrary_types_allowed=True, ser_json_inf_nan="constants"
    )
    type: str
    options: BaseModel

    @model_validator(mode="before")
    @classmethod
    def _resolve(cls, v: Any) -> Any:
        if isinstance(v, BlockSpec):
            return v
        if not isinstance(v, dict):
            raise PydanticCustomError("dict_type", "must be a mapping like {type: basic}")
        if "options" in v and set(v) <= {"type", "options"} and isinstance(v["options"], BaseModel):
            return v
        if "type" not in v:
            raise problems_error(
                [
                    (
                        ("type",),
                        "missing required key (one of: " + ", ".join(registered_blocks()) + ")",
                    )
                ]
            )
        name = v["type"]
        if not isinstance(name, str):
            raise problems_error([(("type",), "must be a string")])
        try:
            bt = get_block_type(name)
        except RegistryError as e:
            raise problems_error([(("type",), str(e))]) from None
        opts = {k: x for k, x in v.items() if k != "type"}
        try:
            # strict JSON-mode validation: YAML's strings may name an Enum member, but "2" is not
            # an int; Python values (an Enum member, a tuple) pass through their JSON form
            payload = json.dumps(opts, default=_plain_data, allow_nan=True)
        except (TypeError, ValueError) as e:
            raise problems_error([((), clip(str(e), 120))]) from None
        try:
            options = bt.options.model_validate_json(payload, strict=True)
        except ValidationError as e:
            raise problems_error(
                [(tuple(err["loc"]), short_message(err)) for err in e.errors()]
            ) from None
        return {"type": name, "options": options}

    @model_serializer
    def _flat(self) -> dict[str, Any]:
        return {"type": self.type, **self.options.model_dump()}


class Aggregation(_Model):
    """The aggregation node N: conv(kernel_size) -> BN (-> + first input when residual) -> ReLU."""

    kernel_size: int = Field(
        1, ge=1, le=7, description="conv kernel of every aggregation node (odd)"
    )
    residual: bool = Field(False, description="eq. 4: add the node's first input (the last block)")

    @field_validator("kernel_size")
    @classmethod
    def _odd(cls, k: int) -> int:
        if k % 2 == 0:
            raise PydanticCustomError("odd", "must be odd, so the node keeps the resolution")
        return k


class Scale(_Model):
    """Compound scaling of a spec's levels, applied when the spec is read (docs/spec.md "Scaling").

    Every level's channels become ``c * width`` rounded to the nearest multiple of ``divisor``
    (half up, at least ``divisor``, and one ``divisor`` more where rounding lost over 10%: timm's
    ``make_divisible``), then raised by ``divisor`` until the block type accepts them (a split
    block's middle width must divide by its cardinality); every HDA depth ``d`` becomes
    ``round(d * depth)`` (half up, at least 1). Conv counts, the aggregation and the head stay.
    """

    width: float = Field(1.0, gt=0, le=16, allow_inf_nan=False, description="channel multiplier")
    depth: float = Field(1.0, gt=0, le=16, allow_inf_nan=False, description="HDA depth multiplier")
    divisor: int = Field(8, ge=1, le=1024, description="channels round to multiples of this")

    def channels(self, c: int, accepts: Any = None) -> int:
        """``c`` scaled and rounded; ``accepts(c)`` is the block type's channel rule, if any."""
        d, v = self.divisor, c * self.width
        out = max(d, int(v + d / 2) // d * d)
        if out < 0.9 * v:
            out += d
        for _ in range(64):  # a rule no multiple of the divisor meets stops here: its error shows
            if accepts is None or accepts(out):
                break
            out += d
        return min(out, MAX_CHANNELS)

    def depth_of(self, d: int) -> int:
        return max(1, math.floor(d * self.depth + 0.5))


def _head_options(v: Any) -> Any:
    """The head's options model, chosen by ``type`` from the head registry (user heads too)."""
    if isinstance(v, BaseModel):
        if isinstance(v, get_head_type(getattr(v, "type", "")).options):
            return v
        v = v.model_dump()
    if not isinstance(v, dict):
        raise PydanticCustomError("dict_type", "must be a mapping like {type: classifier}")
    if "type" not in v:
        raise problems_error(
            [(("type",), f"missing required key (one of: {', '.join(registered_heads())})")]
        )
    try:
        ht = get_head_type(v["type"])
    except RegistryError as e:
        raise problems_error([(("type",), str(e))]) from None
    try:
        # strict JSON-mode validation, as for block options: a YAML list may fill a tuple field,
        # but "2" is not an int
        payload = json.dumps(v, default=_plain_data, allow_nan=True)
    except (TypeError, ValueError) as e:
        raise problems_error([((), clip(str(e), 120))]) from None
    try:
        return ht.options.model_validate_json(payload, strict=True)
    except ValidationError as e:
        raise problems_error(
            [(tuple(err["loc"]), short_message(err)) for err in e.errors()]
        ) from None


Head = Annotated[SerializeAsAny[BaseModel], BeforeValidator(_head_options)]


class Spec(_Model):
    """A whole network. See README "Spec reference" for every field."""

    name: str = Field(pattern=_IDENT, max_length=64, description="identifier of the network")
    paper_name: str | None = Field(
        None, max_length=100, description="the paper's name, e.g. DLA-104-S"
    )
    reference: str | None = Field(
        None,
        pattern=r"^(timm|official):[a-z0-9_]+$",
        max_length=100,
        description="the reference implementation it equals, e.g. timm:dla102x",
    )
    block: BlockSpec
    levels: Annotated[tuple[Level, ...], BeforeValidator(_as_tuple)] = Field(min_length=3)
    aggregation: Aggregation = Aggregation()
    head: Head = Field(
        default_factory=lambda: ClassifierHead(type="classifier"),
        description="what the network computes after the backbone: a registered head type",
    )
    layout: Literal["timm", "official"] = "timm"
    in_channels: int = Field(3, gt=0, le=1024)
    input_size: Annotated[tuple[_Side, _Side], BeforeValidator(_height_width)] | None = Field(
        None,
        description="[height, width] of the images the network is meant for: the size its "
        "costs, shapes, views and exports default to (default: the smallest square from 224)",
    )
    scale: Scale | None = Field(
        None,
        description="width/depth multipliers, applied when the spec is read: the spec then holds "
        "the scaled levels (and no longer claims a paper name or reference it does not equal)",
    )

    @field_validator("name")
    @classmethod
    def _not_keyword(cls, v: str) -> str:
        if keyword.iskeyword(v) or keyword.issoftkeyword(v):
            raise PydanticCustomError("keyword", "must not be a Python keyword")
        return v

    @field_validator("name")
    @classmethod
    def _not_a_module_name(cls, v: str) -> str:
        # the generated file is `<name>.py`: a name like `torch` or `math` would shadow the module
        # that file (or Python itself) imports, and the generated code could not run
        if v in SHADOWED_MODULES:
            raise PydanticCustomError(
                "module_name",
                "must not be the name of a Python module ({name}.py would shadow `import {name}`)",
                {"name": v},
            )
        return v

    @field_validator("paper_name")
    @classmethod
    def _plain_text(cls, v: str | None) -> str | None:
        # it is shown in generated docstrings and diagrams: plain text only, no quotes
        if v is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9 ._+()/-]*", v):
            raise PydanticCustomError(
                "plain_text", "may hold only letters, digits, spaces and . _ + ( ) / -"
            )
        return v

    @model_validator(mode="after")
    def _semantics(self) -> Spec:
        problems: list[tuple[Loc, str]] = []

        def bad(loc: Loc, msg: str) -> None:
            problems.append((loc, msg))

        for i, lvl in enumerate(self.levels):
            if i < 2 and not isinstance(lvl, ConvLevel):
                bad(
                    ("levels", i),
                    "Levels 1 and 2 are conv levels {channels, convs}; `depth` is "
                    "only for Levels 3 and up",
                )
            if i >= 2 and not isinstance(lvl, TreeLevel):
                bad(
                    ("levels", i),
                    "Levels 3 and up are HDA trees and need `depth` (got a conv level)",
                )
        trees = [(i, lvl) for i, lvl in enumerate(self.levels) if isinstance(lvl, TreeLevel)]
        if len(self.levels) - 2 > MAX_TREE_LEVELS:
            bad(
                ("levels",),
                f"at most {MAX_TREE_LEVELS} tree levels are allowed (got {len(self.levels) - 2})",
            )
        self._size_problems(trees, bad)
        bt = get_block_type(self.block.type)
        for i, lvl in trees:
            for m in bt.check(lvl.channels, self.block.options):
                bad(("levels", i, "channels"), m)
        head = get_head_type(self.head.type)
        for loc, msg in head.check(self, self.head):
            bad(loc, msg)
        if self.input_size and not problems:
            # the total stride: 2 per level after the first, but the levels the head dilates
            # (the compiler checks it again on the graph, for heads that reduce further)
            try:
                dilated = head.dilations(self.head, len(self.levels))
            except Exception:  # a user's head failing here fails at compile, naming itself
                dilated = {}
            # a head that returns earlier levels' features builds no level after its last
            built = len(self.levels)
            out_indices = getattr(self.head, "out_indices", None)
            if out_indices:
                built = min(built, max(out_indices) + 1)
            stride = 2 ** sum(1 for i in range(1, built) if i not in dilated)
            if any(side % stride for side in self.input_size):
                h, w = self.input_size
                bad(
                    ("input_size",),
                    f"{h}x{w}: both sides must be multiples of the network's total stride {stride}",
                )
        if problems:
            raise problems_error(problems)
        return self

    @staticmethod
    def _size_problems(trees: list[tuple[int, TreeLevel]], bad: Any) -> None:
        # Checked before anything is expanded: 2**depth itself must not be computed for huge depths.
        cap = int(math.log2(MAX_BLOCKS))
        total = 0
        for i, lvl in trees:
            if lvl.depth > cap:
                bad(
                    ("levels", i, "depth"),
                    f"depth {lvl.depth} would expand to 2^{lvl.depth} "
                    f"blocks; a network may hold at most {MAX_BLOCKS:,} blocks",
                )
                return
            total += 2**lvl.depth
        if total > MAX_BLOCKS:
            bad(
                ("levels",),
                f"the trees hold {total:,} blocks in all; a network may hold at "
                f"most {MAX_BLOCKS:,}",
            )

    @model_validator(mode="wrap")
    @classmethod
    def _apply_scale(cls, data: Any, handler: Any) -> Spec:
        # defined after `_semantics`, so that `handler` runs it too: the scaled spec is checked whole
        spec = handler(data)  # the spec as written, its scale included
        if spec.scale is None:
            return spec
        try:
            return handler(spec._scaled())
        except ValidationError as e:
            found = flatten_errors(e)
        where = "the scaled network fails at "
        raise problems_error(
            [(("scale",), f"{where}{format_loc(loc)}: {problem_message(p)}") for loc, p in found]
        )

    # ---- derived views ----------------------------------------------------------------------

    def _scaled(self) -> dict[str, Any]:
        """This spec's data with ``scale`` applied to the levels (and removed)."""
        s, bt = self.scale, get_block_type(self.block.type)
        assert s is not None
        data = self.to_dict()
        del data["scale"]
        before = [dict(lvl) for lvl in data["levels"]]

        def accepts(c: int) -> bool:
            return not bt.check(c, self.block.options)

        for lvl in data["levels"]:
            tree = "depth" in lvl
            lvl["channels"] = s.channels(lvl["channels"], accepts if tree else None)
            if tree:
                lvl["depth"] = s.depth_of(lvl["depth"])
        if data["levels"] != before:  # no longer the paper's or timm's network
            data.pop("paper_name", None)
            data.pop("reference", None)
        return data

    def aggregates_input(self, index: int) -> bool:
        """Whether tree level ``levels[index]`` aggregates S(x) at its root (eq. 5), defaults applied."""
        lvl = self.levels[index]
        if isinstance(lvl, TreeLevel) and lvl.aggregate_input is not None:
            return lvl.aggregate_input
        return index > 2

    def to_dict(self) -> dict[str, Any]:
        """Plain data, defaults included and unset optionals left out (round-trips through YAML)."""
        return self.model_dump(mode="json", exclude_none=True)
