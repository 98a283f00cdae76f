"""The knobs ``dlagraph fit`` turns, their ranges, and a candidate spec from a choice of them."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..base.errors import SpecError
from ..blocks import registered_blocks
from ..spec import Spec
from ..spec.errors import flatten_errors, format_loc, problem_message, problems_error
from ..spec.load import read_yaml

__all__ = ["Space", "Budget", "load_space", "candidate"]


class Space(BaseModel):
    """The search space around a base spec (every field may be set in a ``--space`` YAML file).

    ``width`` scales every level's channels (the spec's ``scale.width``, rounded as it documents),
    in steps of ``width_step``; ``depth`` bounds the HDA depth of each tree level, chosen per
    level; ``blocks`` are the block types tried (``split`` with a ``cardinality`` from its list);
    ``residual`` the aggregation choices (eq. 3, or eq. 4's residual root).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    width: tuple[float, float] = (0.25, 1.5)
    width_step: float = Field(0.125, ge=0.001, le=1)
    depth: tuple[int, int] = (1, 3)
    blocks: tuple[str, ...] = ("basic", "bottleneck", "split")
    cardinality: tuple[int, ...] = (8, 16, 32)
    residual: tuple[bool, ...] = (False, True)

    @model_validator(mode="after")
    def _ranges(self) -> Space:
        problems: list[tuple[tuple[str, ...], str]] = []
        lo, hi = self.width
        if not 0 < lo <= hi <= 16:
            problems.append((("width",), f"give [min, max], 0 < min <= max <= 16 (got {[lo, hi]})"))
        elif lo < hi:
            # optuna would narrow a range that is not a multiple of the step (with its own
            # warning): say it in dlagraph's words, with the range that fits
            # optuna's own rule (decimal arithmetic of the numbers as written), so that what
            # passes here is never narrowed there
            d_lo, d_hi, d_step = (Decimal(str(v)) for v in (lo, hi, self.width_step))
            if (d_hi - d_lo) % d_step != 0:
                fit = float(d_lo + (d_hi - d_lo) // d_step * d_step)
                problems.append(
                    (
                        ("width",),
                        f"{lo!r} to {hi!r} is not a whole number of width_step "
                        f"{self.width_step!r} steps; give [{lo!r}, {fit!r}] or another step",
                    )
                )
        dlo, dhi = self.depth
        if not 1 <= dlo <= dhi <= 8:
            problems.append(
                (("depth",), f"give [min, max], 1 <= min <= max <= 8 (got {[dlo, dhi]})")
            )
        for name in self.blocks:
            if name not in registered_blocks():
                known = ", ".join(registered_blocks())
                problems.append((("blocks",), f"{name!r} is not a registered block type ({known})"))
        for key in ("blocks", "cardinality", "residual"):
            if not getattr(self, key):
                problems.append(((key,), "needs at least one choice"))
        if any(not 1 <= c <= 1024 for c in self.cardinality):
            problems.append((("cardinality",), "each must be 1 to 1024"))
        if problems:
            raise problems_error(problems)
        return self


class Budget(BaseModel):
    """The limits a design must meet (None: no limit); memory is the inference peak at ``batch``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    params: int | None = Field(None, gt=0)
    macs: int | None = Field(None, gt=0)
    memory: int | None = Field(None, gt=0)
    batch: int = Field(1, ge=1, le=10**6)
    size: tuple[int, int] = (224, 224)


def load_space(source: str | Path | dict[str, Any] | None) -> Space:
    """The search space from a YAML file or a mapping (defaults for what it leaves out).

    Raises:
        SpecError: one line per problem, at ``space.<field>``.
    """
    if source is None:
        return Space()
    where = "space"
    if isinstance(source, dict):
        data: Any = source
    else:
        where = str(source)
        data = read_yaml(Path(source))[0]  # the spec files' reader: bounded, strict YAML
    if not isinstance(data, dict):
        raise SpecError(f"{where}: a search space is a mapping like {{width: [0.5, 1.0]}}")
    data = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    try:
        return Space.model_validate(data)
    except ValidationError as e:
        lines = []
        for loc, problem in flatten_errors(e):
            lines.append(f"{where}: space.{format_loc(loc)}: {problem_message(problem)}")
        raise SpecError(lines) from None


def candidate(base: Spec, space: Space, suggest: Any) -> dict[str, Any]:
    """The spec data of one candidate; ``suggest`` is an optuna trial (or anything with its
    ``suggest_float``, ``suggest_int`` and ``suggest_categorical``)."""
    data = base.to_dict()
    for key in ("paper_name", "reference", "scale"):
        data.pop(key, None)
    lo, hi = space.width
    width = suggest.suggest_float("width", lo, hi, step=space.width_step) if lo < hi else lo
    for i, lvl in enumerate(data["levels"]):
        if "depth" in lvl:
            lvl["depth"] = suggest.suggest_int(f"depth.{i}", *space.depth)
    block = suggest.suggest_categorical("block", list(space.blocks))
    data["block"] = {"type": block}
    if block == "split":
        data["block"]["cardinality"] = suggest.suggest_categorical(
            "cardinality", list(space.cardinality)
        )
    residual = suggest.suggest_categorical("residual", list(space.residual))
    data["aggregation"] = {**data["aggregation"], "residual": residual}
    data["scale"] = {"width": width}
    return data
