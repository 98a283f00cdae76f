"""A fair clock for comparing runtimes on one CPU.

Runtimes keep their worker threads spinning for a while after a call (ONNX Runtime's and
OpenVINO's pools, torch's OpenMP): timed call by call in one process, one row's spinning threads
steal the cores from the next row, and the same comparison came out anywhere from 0.76x to 1.20x
over five runs on a 2-core machine. Two clocks that avoid it:

* :func:`rounds` (in one process, for ``optimize(backend="auto")``, which must return the model it
  timed): each row's calls in one block, rows in turn, rotated every round, with a pause before
  each block long enough for the previous row's pools to park; the row's time is the median of
  its rounds' medians, and the spread is the lowest and highest round median.
* :func:`isolated` (for ``benchmarks/bench.py`` and ``dlagraph bench``): each row built and run in
  a process of its own; the parent lets one process run its block at a time, the others waiting
  on a pipe (idle), alternating for ``rounds`` rounds.

``python benchmarks/bench.py --clock`` measures whether swapping two real runtimes' rows moves a
row beyond its spread (a measurement: a test suite's other worker shares the cores). In a pytest
worker the in-process clock did not agree with the isolated one (PyTorch's row 4x slower), so
``auto``'s choice is not yet shown fair; ``tests/test_clock.py`` checks the clocks' mechanics.
"""

from __future__ import annotations

import multiprocessing as mp
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Timing", "rounds", "isolated", "PAUSE"]

# seconds between one row's block and the next: torch's OpenMP (GNU) spins for about 0.3 ms by
# default and Intel's for 200 ms (KMP_BLOCKTIME); ONNX Runtime and OpenVINO (TBB) park their
# workers within milliseconds
PAUSE = 0.25


@dataclass
class Timing:
    """Seconds per call of one row: the median of its rounds' medians, and the lowest and highest
    round median (the spread a comparison must exceed to mean something)."""

    median: float
    low: float
    high: float
    per_round: list[float] = field(default_factory=list)
    info: str = ""  # what the row's maker said of it (e.g. its compile and calibration time)

    @property
    def spread(self) -> float:
        """The spread relative to the median (0.05: the rounds agree within 5%)."""
        return (self.high - self.low) / self.median if self.median else 0.0

    @classmethod
    def of(cls, per_round: Sequence[float]) -> Timing:
        return cls(statistics.median(per_round), min(per_round), max(per_round), list(per_round))


def _block(fn: Callable[[], Any], runs: int) -> float:
    """The median seconds of ``runs`` calls of ``fn``, after one untimed call."""
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def rounds(
    fns: dict[str, Callable[[], Any]],
    runs: int,
    n_rounds: int = 3,
    pause: float = PAUSE,
) -> dict[str, Timing]:
    """Each function timed in blocks of ``runs`` calls, the rows in turn (the order rotated every
    round, so no row always follows the same one), a pause before each block."""
    labels = list(fns)
    per: dict[str, list[float]] = {k: [] for k in labels}
    for r in range(n_rounds):
        shift = r % max(len(labels), 1)
        for k in labels[shift:] + labels[:shift]:
            time.sleep(pause)
            per[k].append(_block(fns[k], runs))
    return {k: Timing.of(v) for k, v in per.items()}


# --- each row in a process of its own ------------------------------------------------------------


def _worker(make: Callable[..., Any], args: tuple, conn: Any) -> None:
    """A row's process: build the row (``make(*args)`` returns the function to time, or that
    function and a line about it), say so, then time a block each time the parent says "go"."""
    try:
        made = make(*args)
        fn, info = made if isinstance(made, tuple) else (made, "")
        fn()  # the first call (compilation, lazy initialisation) is not the row's time
        conn.send(("ready", info))
        while True:
            message = conn.recv()
            if message is None:
                return
            conn.send(("time", _block(fn, message)))
    except BaseException as e:  # the parent reports it, naming the row
        conn.send(("error", f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"))


def _exitcode(proc: Any) -> Any:
    proc.join(5)
    return proc.exitcode


def isolated(
    rows: dict[str, tuple[Callable[..., Any], tuple]],
    runs: int,
    n_rounds: int = 3,
    pause: float = PAUSE,
    timeout: float = 1800.0,
    progress: Callable[[str, float | None], None] | None = None,
) -> dict[str, Timing | str]:
    """Each row built by ``make(*args)`` (a module-level function, its arguments picklable) in a
    process of its own (spawned: no state shared with this one), then timed in blocks of ``runs``
    calls, one process at a time, the order rotated each round. A row whose process fails is
    its error's one line instead of a timing. ``progress(label, None)`` as a row's build starts,
    ``progress(label, seconds)`` when it is ready."""
    ctx = mp.get_context("spawn")
    procs: dict[str, Any] = {}
    conns: dict[str, Any] = {}
    out: dict[str, Timing | str] = {}
    try:
        infos: dict[str, str] = {}
        for label, (make, args) in rows.items():  # built one after another: each has the CPU
            start = time.perf_counter()
            if progress:
                progress(label, None)
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(make, args, child), daemon=True)
            proc.start()
            child.close()
            if not parent.poll(timeout):
                out[label] = "no answer while building"
                proc.kill()
                continue
            try:
                kind, value = parent.recv()
            except EOFError:  # died without a word (killed, out of memory, a spawn refused)
                kind, value = "error", f"its process ended (exit code {_exitcode(proc)})"
            if progress:
                progress(label, float("nan") if kind == "error" else time.perf_counter() - start)
            if kind == "error":
                out[label] = value
                proc.join(5)
                continue
            procs[label], conns[label], infos[label] = proc, parent, value
        labels = list(procs)
        per: dict[str, list[float]] = {k: [] for k in labels}
        for r in range(n_rounds):
            shift = r % max(len(labels), 1)
            for k in labels[shift:] + labels[:shift]:
                if k in out:
                    continue
                time.sleep(pause)
                try:
                    conns[k].send(runs)
                    kind, value = conns[k].recv()
                except (EOFError, OSError):
                    kind, value = "error", f"its process ended (exit code {_exitcode(procs[k])})"
                if kind == "error":
                    out[k] = value
                else:
                    per[k].append(value)
        for k in labels:
            if k not in out:
                out[k] = Timing.of(per[k])
                out[k].info = infos[k]  # type: ignore[union-attr]
    finally:
        for conn in conns.values():
            try:
                conn.send(None)
            except OSError:
                pass
        for proc in procs.values():
            proc.join(10)
            if proc.is_alive():
                proc.kill()
    return {k: out[k] for k in rows if k in out}
