"""What int8 may cost, measured: a metric on held-out data (``validation``) and the drop of it
that int8 may cost (``max_drop``).

``validation`` is either labelled batches, ``[(images, labels), ...]`` (the metric is top-1
accuracy), or a function ``metric(model) -> float`` (higher is better: mAP, mIoU, ...) that runs
the model it is given, a module taking float32 NCHW batches. The OpenVINO runtime hands both to
NNCF's ``quantize_with_accuracy_control``, which keeps the most costly layers in floating point
until int8 is within ``max_drop``; ``auto`` keeps an int8 candidate only within it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..base.errors import DeployError, safe_repr
from .registry import MAX_DROP

# a drop this small, in the metric's units, is the runtimes' rounding (an fp32 OpenVINO or ONNX
# Runtime model scores ~1e-7 away from PyTorch's on a closeness metric): a metric on a scale
# where it matters should be scaled up (the docs say so)
ROUNDING = 1e-5

__all__ = ["Metric", "AccuracyCheck", "metric_of", "max_drop_of", "top1", "MAX_DROP"]


@dataclass(frozen=True)
class Metric:
    """A validated metric: ``name`` ("top-1" or the function's name), ``items`` (the labelled
    batches, each scored on its own by NNCF's ranking; None for a function, scored whole)."""

    name: str
    items: tuple[tuple[torch.Tensor, torch.Tensor], ...] | None
    function: Callable[[nn.Module], float] | None
    # the request's fp32 value, once measured (a metric may take minutes: measured once per call)
    measured: dict[str, float] = field(default_factory=dict, compare=False, repr=False)

    def fp32(self, model: Callable[[], Callable[[torch.Tensor], Any]]) -> float:
        """The metric of the request's fp32 model (``model()`` makes it), measured once:
        ``optimize`` measures it first, to fail fast, and each runtime's report reuses it."""
        if "fp32" not in self.measured:
            self.measured["fp32"] = self(model())
        return self.measured["fp32"]

    def __call__(self, model: Callable[[torch.Tensor], Any]) -> float:
        """The metric of ``model`` (finite, or a one-line error)."""
        if self.items is not None:
            value = top1(model, self.items)
        else:
            assert self.function is not None
            value = self.function(model)  # type: ignore[arg-type]
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                value = value.item()
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise DeployError(
                    f"validation: the metric must return a number (got {type(value).__name__})"
                )
        try:
            value = float(value)  # type: ignore[arg-type]
        except OverflowError:
            raise DeployError(
                "validation: the metric returned a number past float's range"
            ) from None
        if not math.isfinite(value):
            raise DeployError(f"validation: the metric returned {value} (not finite)")
        return value

    def of_item(self, model: Callable[[torch.Tensor], Any], item: Any) -> float:
        """The metric of one item of :meth:`dataset_items` (a labelled batch, or the whole)."""
        if self.items is not None:
            return top1(model, [item])
        return self(model)

    def dataset_items(self) -> list[Any]:
        """What NNCF's accuracy control iterates: the labelled batches, or one placeholder."""
        return list(self.items) if self.items is not None else [None]


@dataclass(frozen=True)
class AccuracyCheck:
    """The metric of fp32 and of the int8 model, and the drop allowed."""

    name: str
    fp32: float
    int8: float
    max_drop: float

    @property
    def drop(self) -> float:
        return self.fp32 - self.int8

    @property
    def within(self) -> bool:
        # runtimes' fp32 differ in the last digits (OpenVINO's from PyTorch's by ~1e-5 of a
        # metric): a drop that small is rounding, not int8
        return self.drop <= self.max_drop + ROUNDING

    def __str__(self) -> str:
        verdict = "within" if self.within else "over"
        change = f"drop {self.drop:.3g}" if self.drop >= 0 else f"gain {-self.drop:.3g}"
        return (
            f"{self.name}: int8 {self.int8:.6g}, fp32 {self.fp32:.6g} ({change}, "
            f"{verdict} max_drop {self.max_drop:g})"
        )


def top1(model: Callable[[torch.Tensor], Any], items: Iterable[tuple[torch.Tensor, Any]]) -> float:
    """Top-1 accuracy of ``model``'s logits over labelled batches."""
    right = total = 0
    with torch.inference_mode():
        for x, y in items:
            out = model(x)
            if not isinstance(out, torch.Tensor):
                raise DeployError(
                    "validation: labelled batches score a classifier's logits; this model "
                    f"returns {type(out).__name__}: give a metric function instead"
                )
            if out.dim() != 2:
                raise DeployError(
                    "validation: labelled batches score a classifier's logits (N x classes); "
                    f"this model returns a {out.dim()}-D output: give a metric function instead"
                )
            if int(y.min()) < 0 or int(y.max()) >= out.shape[1]:
                raise DeployError(
                    f"validation: labels must be class indices 0 to {out.shape[-1] - 1} "
                    f"(got {int(y.min())} to {int(y.max())})"
                )
            right += int((out.argmax(1) == y).sum())
            total += len(y)
    return right / total


def metric_of(validation: object) -> Metric:
    """``validation`` checked: a metric function, or labelled batches (one line per problem)."""
    if callable(validation) and not isinstance(validation, nn.Module):
        name = getattr(validation, "__name__", "metric")
        return Metric(name if name != "<lambda>" else "metric", None, validation)
    if isinstance(validation, torch.Tensor | str | bytes) or validation is None:
        raise DeployError(
            "validation: give labelled batches [(images, labels), ...] or a function "
            f"metric(model) -> float (got {type(validation).__name__})"
        )
    try:
        pairs = tuple(validation)  # type: ignore[call-overload]
    except TypeError:
        raise DeployError(
            "validation: give labelled batches [(images, labels), ...] or a function "
            f"metric(model) -> float (got {type(validation).__name__})"
        ) from None
    if not pairs:
        raise DeployError("validation: holds no batches")
    items = []
    for i, pair in enumerate(pairs):
        if not (isinstance(pair, tuple | list) and len(pair) == 2):
            raise DeployError(f"validation[{i}]: must be a pair (images, labels)")
        x, y = pair
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
            raise DeployError(f"validation[{i}]: images must be a float NCHW batch")
        if (
            not isinstance(y, torch.Tensor)
            or y.dim() != 1
            or y.is_floating_point()
            or y.dtype in (torch.bool, torch.complex64, torch.complex128)
        ):
            raise DeployError(f"validation[{i}]: labels must be a 1-D integer tensor")
        if len(y) != len(x):
            raise DeployError(f"validation[{i}]: {len(x)} images but {len(y)} labels")
        if len(x) == 0:
            raise DeployError(f"validation[{i}]: is empty")
        if not torch.isfinite(x).all():
            raise DeployError(f"validation[{i}]: images hold NaN or infinite values")
        items.append((x.float(), y.long()))
    return Metric("top-1", tuple(items), None)


def max_drop_of(value: object) -> float:
    """``max_drop`` checked: a finite number >= 0, in the metric's units."""
    try:
        ok = not isinstance(value, bool) and isinstance(value, numbers.Real)
        ok = ok and math.isfinite(float(value))  # type: ignore[arg-type]
    except OverflowError:
        ok = False
    if not ok:
        raise DeployError(f"max_drop: give a finite number >= 0 (got {safe_repr(value)})")
    if value < 0:
        raise DeployError(f"max_drop: give a finite number >= 0 (got {value})")
    return float(value) + 0.0  # type: ignore[arg-type]  # (-0.0 becomes 0.0)
