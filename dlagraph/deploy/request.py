"""One deployment request, validated once: what ``dlagraph.optimize`` and ``dlagraph export`` were
asked for (precision, calibration, example batch, threads, compile, rewrites), checked here and
nowhere else, with one error type, and the report every runtime fills in."""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..base.errors import DeployError, safe_repr
from .accuracy import MAX_DROP, AccuracyCheck, Metric, max_drop_of, metric_of
from .registry import PRECISIONS

__all__ = ["DeployError", "DeployRequest", "OptimizeReport"]

ProgressFn = Callable[[str, float | None], None]


@dataclass
class OptimizeReport:
    """What a runtime did and how long each step took (seconds)."""

    precision: str
    compiled: bool
    steps: dict[str, float] = field(default_factory=dict)
    calibration_batches: int = 0
    float_modules: list[str] = field(default_factory=list)  # int8: left in floating point
    notes: list[str] = field(default_factory=list)
    accuracy: AccuracyCheck | None = None  # int8 with a validation: what it cost
    progress: ProgressFn | None = field(default=None, repr=False, compare=False)

    def __str__(self) -> str:
        steps = ", ".join(f"{k} {v:.1f} s" for k, v in self.steps.items())
        notes = "".join(f"; {note}" for note in self.notes)
        if self.accuracy is not None:
            notes += f"; {self.accuracy}"
        if self.float_modules:
            notes += f"; in floating point: {', '.join(self.float_modules)}"
        return f"{self.precision}{' + torch.compile' * self.compiled}: {steps}{notes}"

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Time one step (and tell ``progress`` when it starts and ends)."""
        say = self.progress or (lambda step, seconds: None)
        say(name, None)
        start = time.perf_counter()
        try:
            yield
        except BaseException:
            say(name, math.nan)  # the line ends (as failed) before the error is printed
            raise
        self.steps[name] = time.perf_counter() - start
        say(name, self.steps[name])


def _threads(value: object) -> int | None:
    if value is None:
        return None
    most = os.cpu_count() or 1
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise DeployError(
            f"threads: give 1 to {most}, this machine's CPUs (got {safe_repr(value)})"
        )
    return value


def _flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise DeployError(f"{name}: give True or False (got {safe_repr(value)})")
    return value


@dataclass(frozen=True)
class DeployRequest:
    """What to build: ``precision``; int8's ``calibration`` batches; an ``example`` batch to build
    and compile for (runtimes that build for one image size take it, or the first calibration
    batch); ``threads`` (None: the runtime's default); ``compile`` (PyTorch); ``rewrites`` (the
    rewrites measured to win, ``False`` for an A/B comparison); ``progress`` for the steps;
    int8's ``validation`` metric and the ``max_drop`` of it int8 may cost (:mod:`.accuracy`)."""

    precision: str = "fp32"
    calibration: tuple[torch.Tensor, ...] | None = None
    example: torch.Tensor | None = None
    threads: int | None = None
    compile: bool = True
    rewrites: bool = True
    progress: ProgressFn | None = field(default=None, compare=False)
    validation: Metric | None = field(default=None, compare=False)
    max_drop: float = MAX_DROP
    # images the caller will check the result on (export's check images): a format choosing
    # between candidates checks them first
    checked: tuple[torch.Tensor, ...] = field(default=(), compare=False)

    @classmethod
    def of(
        cls,
        precision: object = "fp32",
        calibration: Iterable[torch.Tensor] | None = None,
        example: torch.Tensor | None = None,
        threads: object = None,
        compile: object = True,
        rewrites: object = True,
        progress: ProgressFn | None = None,
        validation: object = None,
        max_drop: object = MAX_DROP,
    ) -> DeployRequest:
        """A validated request: every argument checked here, once."""
        if precision not in PRECISIONS:
            raise DeployError(
                f"precision: must be one of {', '.join(PRECISIONS)} (got {safe_repr(precision)})"
            )
        if calibration is not None and precision != "int8":
            raise DeployError(f"calibration: only int8 is calibrated (precision is {precision!r})")
        batches = None
        if calibration is not None:
            if isinstance(calibration, torch.Tensor):
                raise DeployError("calibration: give a list of NCHW batches, not one tensor")
            try:
                batches = tuple(calibration)
            except TypeError:
                raise DeployError(
                    f"calibration: give an iterable of NCHW batches "
                    f"(got {type(calibration).__name__})"
                ) from None
            if not batches:
                raise DeployError("calibration: holds no batches")
            for i, b in enumerate(batches):
                if not isinstance(b, torch.Tensor):
                    raise DeployError(
                        f"calibration[{i}]: must be a tensor (got {type(b).__name__})"
                    )
        if precision == "int8" and batches is None:
            raise DeployError(
                "int8 needs calibration batches: optimize(model, 'int8', calibration=[batch, ...]) "
                "with images from the training data (the CLI's --calibration random: a timing run)"
            )
        metric = None
        if validation is not None:
            if precision != "int8":
                raise DeployError(
                    f"validation: only int8 is checked against a metric (precision is {precision!r})"
                )
            metric = metric_of(validation)
        elif max_drop_of(max_drop) != MAX_DROP:
            raise DeployError(
                "max_drop: is the budget of a validation metric: give validation= too"
            )
        if example is not None and not isinstance(example, torch.Tensor):
            raise DeployError(f"example_input: must be a tensor (got {type(example).__name__})")
        return cls(
            precision,  # type: ignore[arg-type]
            batches,
            example,
            _threads(threads),
            _flag("compile", compile),
            _flag("rewrites", rewrites),
            progress,
            metric,
            max_drop_of(max_drop),
        )

    def replace(self, **changes: Any) -> DeployRequest:
        return dataclasses.replace(self, **changes)

    def batch(self, who: str) -> torch.Tensor:
        """The batch to build for: ``example``, else the first calibration batch."""
        x = self.example if self.example is not None else (
            self.calibration[0] if self.calibration else None
        )  # fmt: skip
        if x is None:
            raise DeployError(f"{who} builds for one image size: give example_input (a batch)")
        return x

    def report(self, compiled: bool = False) -> OptimizeReport:
        return OptimizeReport(self.precision, compiled, progress=self.progress)

    def check_batches(self, net: nn.Module) -> Callable[[Any, str], None]:
        """Check ``example`` and every calibration batch against ``net`` now (see
        :func:`batch_checker`); returns the checker for batches met later."""
        check = batch_checker(net)
        if self.calibration:
            check(self.calibration[0], "calibration[0]")  # the size int8 is built for
        if self.example is not None:
            check(self.example, "example_input")
            first = self.calibration[0] if self.calibration else None
            if first is not None and tuple(first.shape[1:]) != tuple(self.example.shape[1:]):
                raise DeployError(
                    f"example_input: images of {'x'.join(map(str, self.example.shape[1:]))}, the "
                    f"calibration batches' are {'x'.join(map(str, first.shape[1:]))}: give one size"
                )
        return check


def batch_checker(net: nn.Module) -> Callable[[Any, str], None]:
    """A check of input batches for ``net``: a float NCHW tensor, not empty, finite, with the
    network's input channels and sides its total stride divides, calibration batches of one
    size."""
    dag = getattr(net, "dag", None)
    stride = dag.graph["total_stride"] if dag is not None else 1
    chans = dag.graph["in_channels"] if dag is not None else getattr(net, "in_chans", None)
    seen: list[tuple[int, ...]] = []

    def check(x: Any, name: str) -> None:
        if not isinstance(x, torch.Tensor):
            raise DeployError(f"{name}: must be a tensor (got {type(x).__name__})")
        shape = tuple(x.shape)
        if x.dim() != 4 or not x.is_floating_point():
            raise DeployError(f"{name}: must be a float NCHW batch (got {x.dtype} {list(shape)})")
        if 0 in shape:
            raise DeployError(f"{name}: is empty ({list(shape)})")
        if chans is not None and shape[1] != chans:
            raise DeployError(f"{name}: has {shape[1]} channels, the network takes {chans}")
        if shape[2] % stride or shape[3] % stride:
            raise DeployError(
                f"{name}: sides {shape[2]}x{shape[3]} are not multiples of the network's total "
                f"stride {stride}"
            )
        if seen and shape[1:] != seen[0]:
            raise DeployError(
                f"{name}: images of {shape[2]}x{shape[3]} after {seen[0][1]}x{seen[0][2]}; "
                "calibrate at one size"
            )
        if not torch.isfinite(x).all():
            raise DeployError(f"{name}: holds NaN or infinite values")
        if name.startswith("calibration"):
            seen.append(shape[1:])

    return check
