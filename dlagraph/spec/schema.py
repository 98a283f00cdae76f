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
    Tag,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ..blocks import get_block_type, registered_blocks
from ..errors import RegistryError, clip, safe_repr
from ..names import attribute_clash
from .errors import Loc, _message, _problems

__all__ = [
    "Spec",
    "SegmentationHead",
    "DlaUpHead",
    "CenterNetHead",
    "ConvLevel",
    "TreeLevel",
    "BlockSpec",
    "Aggregation",
    "ClassifierHead",
    "FeaturesHead",
    "MAX_BLOCKS",
    "MAX_TREE_LEVELS",
    "MAX_CHANNELS",
]

MAX_BLOCKS = 4096  # total blocks in a network: dla169 has 40, depth 10 in one level gives 1024
MAX_TREE_LEVELS = 16
MAX_CHANNELS = 65536
_IDENT = r"^[a-z_][a-z0-9_]*$"
# modules a generated `<name>.py` must not shadow: the standard library and what it imports
SHADOWED_MODULES = frozenset(sys.stdlib_module_names) | {
    "torch",
    "torchvision",
    "numpy",
    "timm",
    "dlagraph",
    "typing_extensions",
}


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
            raise _problems(
                [
                    (
                        ("type",),
                        "missing required key (one of: " + ", ".join(registered_blocks()) + ")",
                    )
                ]
            )
        name = v["type"]
        if not isinstance(name, str):
            raise _problems([(("type",), "must be a string")])
        try:
            bt = get_block_type(name)
        except RegistryError as e:
            raise _problems([(("type",), str(e))]) from None
        opts = {k: x for k, x in v.items() if k != "type"}
        try:
            # strict JSON-mode validation: YAML's strings may name an Enum member, but "2" is not
            # an int; Python values (an Enum member, a tuple) pass through their JSON form
            payload = json.dumps(opts, default=_plain_data, allow_nan=True)
        except (TypeError, ValueError) as e:
            raise _problems([((), clip(str(e), 120))]) from None
        try:
            options = bt.options.model_validate_json(payload, strict=True)
        except ValidationError as e:
            raise _problems([(tuple(err["loc"]), _message(err)) for err in e.errors()]) from None
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


class ClassifierHead(_Model):
    """Global average pool, dropout, then a 1x1 conv classifier (timm and official ``fc``)."""

    type: Literal["classifier"]
    num_classes: int = Field(1000, gt=0, le=1_000_000)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


class FeaturesHead(_Model):
    """Multi-scale outputs: the outputs of the chosen levels (0 = Level 1 … like timm ``features_only``)."""

    type: Literal["features"]
    out_indices: Annotated[tuple[int, ...], BeforeValidator(_as_tuple)] = Field(
        (1, 2, 3, 4, 5), min_length=1
    )


class SegmentationHead(_Model):
    """The paper's segmentation network (§4.2): optionally dilated Levels 5-6 (final maps at 1/8),
    then either a 1x1 classifier and 8x bilinear upsampling, or IDA upsampling: Levels 3.. projected
    to ``ida_channels``, upsampled to Level 2 by bilinear-initialised transposed convs, aggregated
    iteratively (eq. 1) with 3x3 nodes, classified, then 2x bilinear."""

    type: Literal["segmentation"]
    num_classes: int = Field(gt=0, le=100_000)
    dilation: bool = Field(True, description="dilate the last two levels instead of striding")
    upsample: Literal["bilinear", "ida"] = "ida"
    ida_channels: int = Field(32, gt=0, le=MAX_CHANNELS)


class DlaUpHead(_Model):
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


# module names of the CenterNet DLASeg: a head may not take one of them
CENTERNET_MODULES = frozenset({"base", "dla_up", "ida_up"})


def _head_name_problem(name: str) -> str | None:
    """Why a task head may not be called ``name``: it becomes a module attribute, a DAG node and a
    local variable of the generated forward, so it must be an identifier that is none of theirs."""
    if not re.fullmatch(_IDENT, name) or keyword.iskeyword(name) or keyword.issoftkeyword(name):
        return f"head names must be identifiers like hm or wh (got {safe_repr(name)})"
    if len(name) > 64:
        return f"head names may have at most 64 characters (got {len(name)})"
    if name in CENTERNET_MODULES or name in ("input", "output"):
        return f"head name {name!r} is taken by the network's own module or graph node"
    return attribute_clash(name)


class CenterNetHead(_Model):
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


Head = Annotated[
    ClassifierHead | FeaturesHead | SegmentationHead | DlaUpHead | CenterNetHead,
    Field(discriminator="type"),
]


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
    head: Head = ClassifierHead(type="classifier")
    layout: Literal["timm", "official"] = "timm"
    in_channels: int = Field(3, gt=0, le=1024)

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
                bad(("levels", i), "Levels 1 and 2 are conv levels {channels, convs}; `depth` is "
                    "only for Levels 3 and up")  # fmt: skip
            if i >= 2 and not isinstance(lvl, TreeLevel):
                bad(
                    ("levels", i),
                    "Levels 3 and up are HDA trees and need `depth` (got a conv level)",
                )
        trees = [(i, lvl) for i, lvl in enumerate(self.levels) if isinstance(lvl, TreeLevel)]
        if len(self.levels) - 2 > MAX_TREE_LEVELS:
            bad(("levels",), f"at most {MAX_TREE_LEVELS} tree levels are allowed "
                f"(got {len(self.levels) - 2})")  # fmt: skip
        self._size_problems(trees, bad)
        bt = get_block_type(self.block.type)
        for i, lvl in trees:
            for m in bt.check(lvl.channels, self.block.options):
                bad(("levels", i, "channels"), m)
        if isinstance(self.head, FeaturesHead):
            n = len(self.levels)
            for j, idx in enumerate(self.head.out_indices):
                if not 0 <= idx < n:
                    bad(("head", "out_indices", j), f"level index {idx} is out of range 0..{n - 1}")
            if len(set(self.head.out_indices)) != len(self.head.out_indices):
                bad(("head", "out_indices"), "indices must be unique")
        self._head_problems(bt, bad)
        if problems:
            raise _problems(problems)
        return self

    def _head_problems(self, bt: Any, bad: Any) -> None:
        n_trees, head = len(self.levels) - 2, self.head
        if isinstance(head, SegmentationHead) and head.dilation and n_trees < 3:
            bad(("head", "dilation"), f"dilating the last two levels needs at least 3 tree "
                f"levels (got {n_trees})")  # fmt: skip
        elif isinstance(head, SegmentationHead) and head.dilation and not bt.dilation:
            bad(("head", "dilation"), f"block type {self.block.type!r} does not take a "
                "`dilation` argument")  # fmt: skip
        if isinstance(head, CenterNetHead):
            self._centernet_problems(head, bad)
        if isinstance(head, DlaUpHead) and int(math.log2(head.down_ratio)) >= len(self.levels) - 1:
            bad(("head", "down_ratio"), f"down_ratio {head.down_ratio} starts at level "
                f"{int(math.log2(head.down_ratio))}, which leaves fewer than two levels to "
                "aggregate")  # fmt: skip

    def _centernet_problems(self, head: CenterNetHead, bad: Any) -> None:
        for name in head.heads:
            if (why := _head_name_problem(name)) is not None:
                bad(("head", "heads", name), why)
        first, last = int(math.log2(head.down_ratio)), len(self.levels) - 1
        if first >= last:
            bad(("head", "down_ratio"), f"down_ratio {head.down_ratio} starts DLAUp at level index "
                f"{first}, which leaves fewer than two levels to aggregate (the last is {last})")  # fmt: skip
        elif head.last_level is not None and not first < head.last_level <= last:
            bad(("head", "last_level"), f"last_level must be above log2(down_ratio) = {first} and "
                f"at most the last level index {last} (got {head.last_level})")  # fmt: skip

    @staticmethod
    def _size_problems(trees: list[tuple[int, TreeLevel]], bad: Any) -> None:
        # Checked before anything is expanded: 2**depth itself must not be computed for huge depths.
        cap = int(math.log2(MAX_BLOCKS))
        total = 0
        for i, lvl in trees:
            if lvl.depth > cap:
                bad(("levels", i, "depth"), f"depth {lvl.depth} would expand to 2^{lvl.depth} "
                    f"blocks; a network may hold at most {MAX_BLOCKS:,} blocks")  # fmt: skip
                return
            total += 2**lvl.depth
        if total > MAX_BLOCKS:
            bad(("levels",), f"the trees hold {total:,} blocks in all; a network may hold at "
                f"most {MAX_BLOCKS:,}")  # fmt: skip

    # ---- derived views ----------------------------------------------------------------------

    def aggregates_input(self, index: int) -> bool:
        """Whether tree level ``levels[index]`` aggregates S(x) at its root (eq. 5), defaults applied."""
        lvl = self.levels[index]
        if isinstance(lvl, TreeLevel) and lvl.aggregate_input is not None:
            return lvl.aggregate_input
        return index > 2

    def to_dict(self) -> dict[str, Any]:
        """Plain data, defaults included and unset optionals left out (round-trips through YAML)."""
        return self.model_dump(mode="json", exclude_none=True)
