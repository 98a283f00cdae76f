"""Measured latency for ``dlagraph fit --measure / --max-latency``: the front is measured (not
every candidate: a compile and a timing take seconds each), cached by spec hash and measurement
setting in ``DIR/latency.json``; with a latency limit, designs measured over it leave the front
and the designs that then join it are measured, until every design on the front is measured and
within the limit. The timing itself is a callable (the CLI passes
:func:`dlagraph.fit.measure.measure_latency`), so nothing here needs torch."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from .._version import __version__
from ..base.errors import SpecError, clip
from ..base.io import MARKER, read_bounded, write_outputs
from .search import FitResult, Member, cache_key, pareto

__all__ = ["measure_front", "CACHE"]

CACHE = "latency.json"
_MAX_CACHE = 16 * 2**20
Measure = Callable[[Sequence[dict[str, Any]]], Sequence[float]]


def measure_front(
    result: FitResult,
    measure: Measure,
    setting: str,
    cache: Path | None,
    limit: float | None = None,
    progress: Callable[[int, int], None] | None = None,
    identity: str = "",
) -> FitResult:
    """``result`` with the latency (seconds per batch) of its base and front, measured by
    ``measure`` under ``setting`` (its words, e.g. ``"int8, batch 1, 2 threads"``; also part of
    the cache key, so a new setting is measured anew, with ``identity``: the CPU, torch's
    version); with ``limit`` (seconds), the front of the designs within it. Each round's timings
    are saved to ``cache`` before the next."""
    assert result.base is not None
    entries = _read(cache) if cache is not None else {}
    done = [0]

    def key(m: Member) -> str:
        return cache_key(m.spec, setting, identity)

    def ensure(members: list[Member]) -> None:
        todo = list({key(m): m for m in members if key(m) not in entries}.values())
        if not todo:
            return
        if progress:
            progress(done[0], done[0] + len(todo))
        times = measure([m.spec for m in todo])
        entries.update({key(m): float(t) for m, t in zip(todo, times, strict=True)})
        done[0] += len(todo)
        if cache is not None:
            _write(cache, entries)

    feasible = [m for m in result.designs if m.feasible]
    over: set[int] = set()
    front = result.front
    ensure([result.base, *front])
    while limit is not None:
        slow = {m.trial for m in front if entries[key(m)] > limit}
        if not slow:
            break
        over |= slow
        front = pareto([m for m in feasible if m.trial not in over])
        ensure(front)
    timed = {m.trial: entries[key(m)] for m in feasible if key(m) in entries}
    designs = [
        replace(m, latency=timed.get(m.trial), feasible=m.feasible and m.trial not in over)
        for m in result.designs
    ]
    return replace(
        result,
        front=[replace(m, latency=timed[m.trial]) for m in front],
        designs=designs,
        feasible=sum(m.feasible for m in designs),
        base=replace(result.base, latency=entries[key(result.base)]),
        measured=setting,
    )


def _read(path: Path) -> dict[str, float]:
    if not path.exists() and not path.is_symlink():
        return {}
    problem = "not a latency cache dlagraph fit wrote; delete it or give another -o"
    try:
        data = json.loads(read_bounded(path, _MAX_CACHE))
    except (OSError, ValueError, RecursionError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise SpecError(f"{path}: {problem} ({clip(why, 80)})") from None
    entries = data.get("entries") if isinstance(data, dict) else None
    if (
        not isinstance(entries, dict)
        or str(data.get("generator")).split(" ")[:3] != MARKER.split(" ")
        or not all(isinstance(v, float) and math.isfinite(v) and v > 0 for v in entries.values())
    ):
        raise SpecError(f"{path}: {problem}")
    return {str(k): float(v) for k, v in entries.items()}


def _write(path: Path, entries: dict[str, float]) -> None:
    text = json.dumps(
        {"generator": f"{MARKER} {__version__}", "entries": dict(sorted(entries.items()))},
        indent=1,
    )
    write_outputs({path: text + "\n"})
