"""Latency of candidate designs (``dlagraph fit --measure``): each spec built with random
weights, turned into a deployment module by :func:`.optimize.optimize` and timed by the bench
harness, all candidates interleaved run by run so that drift hits them alike."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..deploy.optimize import optimize
from ..deploy.prepare import seeded
from ..deploy.timing import interleaved, runner
from ..deploy.timing import threads as timing_threads
from ..spec import Spec, load_spec

__all__ = ["measure_latency"]


def measure_latency(
    specs: Sequence[Spec | dict[str, Any]],
    *,
    precision: str = "fp32",
    batch: int = 1,
    size: tuple[int, int] = (224, 224),
    threads: int | None = None,
    compile: bool = True,
    runs: int = 10,
    progress: Callable[[int, int], None] | None = None,
) -> list[float]:
    """The median seconds per batch of each spec, in ``precision`` (``optimize``'s, compiled
    unless ``compile=False``) at ``batch`` x ``size`` on ``threads`` threads (default: torch's).
    int8 calibrates on one random batch: a timing, not an accuracy. ``progress(i, n)`` is called
    as each model is prepared, and ``progress(n, n)`` as the timing starts."""
    from ..backends.torch.interpret import build_module

    fns: dict[str, Callable[[], Any]] = {}
    with timing_threads(threads):
        for i, data in enumerate(specs):
            if progress:
                progress(i, len(specs))
            spec = load_spec(data)
            channels = 3 if spec.in_channels is None else spec.in_channels
            with seeded(0):
                x = torch.randn(batch, channels, *size)
                model = build_module(spec).eval()
            calibration = [x] if precision == "int8" else None
            opt = optimize(model, precision, calibration, compile=compile, example_input=x)  # type: ignore[arg-type]
            fns[str(i)] = runner(opt, x)
        if progress:
            progress(len(specs), len(specs))
        times = interleaved(fns, runs)
    return [times[str(i)] for i in range(len(specs))]
