"""Timing models the way every dlagraph benchmark does: one call of each in turn, the median of
``runs``, after a warm-up call each (drift and other load hit all of them alike)."""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

__all__ = ["interleaved", "threads", "runner"]


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
