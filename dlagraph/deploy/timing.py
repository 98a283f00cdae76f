"""Timing models the way every dlagraph benchmark does: one call of each in turn, the median of
``runs``, after a warm-up call each (drift and other load hit all of them alike)."""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

__all__ = ["interleaved", "threads", "compare"]


def runner(model: nn.Module, x: torch.Tensor, autocast: bool = False) -> Callable[[], Any]:
    def run() -> Any:
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=autocast):
            return model(x)

    return run


def interleaved(fns: dict[str, Callable[[], Any]], runs: int) -> dict[str, float]:
    """The median seconds of each function over ``runs`` calls, one call of each in turn (so
    that drift hits them alike), after one warm-up call each."""
    for f in fns.values():  # warm-up (and any compile left)
        f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(runs):
        for k, f in fns.items():
            start = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


@contextlib.contextmanager
def threads(n: int | None) -> Iterator[None]:
    """torch on ``n`` threads inside (None: as it is), its setting restored after."""
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def compare(ref_out: Any, out: Any) -> tuple[float, list[torch.Tensor], list[torch.Tensor]]:
    """The largest error of ``out`` against ``ref_out`` (relative to each reference output's
    largest value), and both flattened (the first output's top-1 is a classifier's)."""
    ref = [t.float() for t in tree_flatten(ref_out)[0]]
    got = [t.float() for t in tree_flatten(out)[0]]
    if len(ref) != len(got) or any(a.shape != b.shape for a, b in zip(ref, got, strict=False)):
        raise ValueError(
            f"outputs {[tuple(t.shape) for t in got]} are not the model's "
            f"{[tuple(t.shape) for t in ref]}"
        )
    errors = [
        ((a - b).abs().max() / a.abs().max().clamp_min(1e-12)).item()
        for a, b in zip(ref, got, strict=True)
    ]
    # NaN compares False with every limit: an output that is not finite is infinitely wrong
    worst = max(errors, default=0.0)
    if any(math.isnan(e) for e in errors) or not all(torch.isfinite(t).all() for t in got):
        worst = math.inf
    return worst, ref, got
