"""The fair clock (dlagraph.deploy.clock): rows timed in blocks, in turn, rotated, with a pause
before each (in one process), or each in a process of its own (isolated); a row's time is the
median of its rounds' medians, and the rounds' range is the spread a comparison must exceed.
Whether the order of real runtimes' rows moves a row beyond its spread is a measurement, not a
test (a test suite's other worker shares the cores): `python benchmarks/bench.py --clock`."""

from __future__ import annotations

import time
from typing import Any

import pytest

from dlagraph.deploy.clock import Timing, isolated, rounds


def sleeper(seconds: float) -> Any:
    """A row that takes ``seconds`` per call (module level: a spawned process imports it)."""
    return lambda: time.sleep(seconds)


def failing(why: str) -> Any:
    raise RuntimeError(why)


def test_rounds_time_each_row_and_give_its_spread() -> None:
    calls: list[str] = []

    def row(label: str, seconds: float) -> Any:
        def run() -> None:
            calls.append(label)
            time.sleep(seconds)

        return run

    t = rounds({"a": row("a", 0.002), "b": row("b", 0.006)}, runs=3, n_rounds=3, pause=0.0)
    assert set(t) == {"a", "b"} and all(len(v.per_round) == 3 for v in t.values())
    assert 0.002 <= t["a"].median < t["b"].median and t["b"].low <= t["b"].median <= t["b"].high
    # blocks: a row's calls (a warm-up and 3 timed) run together; the order rotates each round
    blocks = [calls[i] for i in range(0, len(calls), 4)]
    assert blocks == ["a", "b", "b", "a", "a", "b"] and len(calls) == 24
    assert Timing.of([1.0, 2.0, 4.0]).spread == pytest.approx(1.5)


def test_isolated_rows_run_in_their_own_processes_and_a_failure_is_one_line() -> None:
    out = isolated(
        {
            "fast": (sleeper, (0.002,)),
            "broken": (failing, ("no runtime here",)),
            "slow": (sleeper, (0.01,)),
        },
        runs=3,
        n_rounds=2,
        pause=0.0,
    )
    assert list(out) == ["fast", "broken", "slow"]
    assert out["broken"] == "RuntimeError: no runtime here"
    fast, slow = out["fast"], out["slow"]
    assert isinstance(fast, Timing) and isinstance(slow, Timing)
    assert 0.002 <= fast.median < slow.median and len(slow.per_round) == 2


def dies(when: str) -> Any:
    """A row whose process is killed while building, or on its first timed block."""
    import os

    if when == "building":
        os._exit(9)
    return lambda: os._exit(7)


def test_a_row_whose_process_dies_is_one_line_and_the_others_are_timed() -> None:
    out = isolated(
        {
            "dead": (dies, ("building",)),
            "ok": (sleeper, (0.001,)),
            "dies on its first call": (dies, ("called",)),
        },
        runs=2,
        n_rounds=1,
        pause=0.0,
    )
    assert out["dead"] == "its process ended (exit code 9)"
    assert out["dies on its first call"] == "its process ended (exit code 7)"
    assert isinstance(out["ok"], Timing)
