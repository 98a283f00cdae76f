"""CPU inference throughput of a spec in each deployment precision, against timm's fp32 eager model
of the same architecture (``reference: timm:NAME`` in the spec) or, without one, dlagraph's own
fp32 eager model. ``dlagraph bench`` and ``benchmarks/bench.py`` print this table.

Each row is built and run in a process of its own, one at a time, the rows alternating over three
rounds (:mod:`dlagraph.deploy.clock`): drift hits them alike, and no runtime's idle threads slow
the row after it. A row's time is the median of its rounds' medians of ``runs`` timed batches after
a warm-up; the table shows the rounds' range beside it.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..base.errors import DlagraphWarning
from ..base.system import cpu_description, native_bf16
from ..spec import Spec
from .clock import Timing, isolated, rounds
from .prepare import seeded
from .timing import interleaved, runner
from .timing import threads as torch_threads

__all__ = ["BenchRow", "bench_spec", "cpu_description", "interleaved", "table", "timm_equivalent"]

ProgressFn = Callable[[str, float | None], None]


@dataclass
class BenchRow:
    label: str
    seconds: float  # median per batch (the median of the rounds' medians)
    batch: int
    setup: str = ""  # compile / calibration time, as text
    low: float = 0.0  # the fastest and slowest round's median: the spread
    high: float = 0.0

    @property
    def images_per_second(self) -> float:
        return self.batch / self.seconds


def timm_equivalent(spec: Spec) -> str | None:
    """timm's model name for a spec built like one (``reference: timm:dla34``), if timm is here."""
    ref = spec.reference or ""
    if not ref.startswith("timm:"):
        return None
    try:
        import timm  # noqa: F401
    except ImportError:
        return None
    return ref.split(":", 1)[1].strip() or None


# --- the rows, each made in a process of its own (clock.isolated) ---------------------------------


def _input(batch: int, channels: int, size: tuple[int, int]) -> torch.Tensor:
    return torch.randn(batch, channels, *size, generator=torch.Generator().manual_seed(0))


def timm_row(
    name: str, batch: int, size: tuple[int, int], threads: int | None, autocast: bool
) -> Callable[[], Any]:
    """timm's model of the same architecture: fp32 eager, or bf16 autocast + channels_last."""
    import timm

    if threads:
        torch.set_num_threads(threads)
    model = timm.create_model(name, pretrained=False).eval()
    x = _input(batch, 3, size)
    if autocast:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    return runner(model, x, autocast=autocast)


def eager_row(
    spec: dict[str, Any], batch: int, size: tuple[int, int], threads: int | None
) -> Callable[[], Any]:
    """dlagraph's model as built (fp32 eager), with the weights every row of the table has."""
    from ..backends.torch.interpret import build_module

    if threads:
        torch.set_num_threads(threads)
    with seeded(0):
        model = build_module(spec).eval()
    return runner(model, _input(batch, model.dag.graph["in_channels"], size))


def optimized_row(
    spec: dict[str, Any],
    precision: str,
    backend: str,
    batch: int,
    size: tuple[int, int],
    threads: int | None,
    calibration_batches: int,
) -> tuple[Callable[[], Any], str]:
    """``dlagraph.optimize`` of the same model, and its setup time (compile, calibration)."""
    from ..backends.torch.interpret import build_module
    from .optimize import optimize as optimize_on

    if threads:
        torch.set_num_threads(threads)
    with seeded(0):
        model = build_module(spec).eval()
    x = _input(batch, model.dag.graph["in_channels"], size)
    calibration = None
    if precision == "int8":
        gen = torch.Generator().manual_seed(1)
        calibration = [torch.randn(x.shape, generator=gen) for _ in range(calibration_batches)]
    opt = optimize_on(
        model, precision, calibration, backend=backend, example_input=x, threads=threads
    )
    report = getattr(opt, "report", None)  # a user's runtime may keep none
    steps = getattr(report, "steps", {}) or {}
    setup = sum(v for k, v in steps.items() if k != "fold BN")
    return runner(opt, x), f"{setup:.1f} s"


def bench_spec(
    spec: Spec,
    precisions: list[str],
    batch: int = 8,
    size: int | tuple[int, int] = 224,
    runs: int = 7,
    calibration_batches: int = 0,
    timm_best: bool = True,
    progress: ProgressFn | None = None,
    backends: list[str] | None = None,
    threads: int | None = None,
    rounds: int = 3,
) -> tuple[list[BenchRow], str]:
    """Time ``spec`` in each precision on each backend (``torch``, ``openvino``,
    ``onnxruntime``; default torch); returns the rows (the baseline first) and its name.

    Each row is built and run in a process of its own, one at a time, alternating over
    ``rounds`` rounds of ``runs`` batches (:func:`dlagraph.deploy.clock.isolated`: one runtime's
    idle threads cannot slow the next row). int8 calibrates on ``calibration_batches`` random
    batches (a timing, not an accuracy run).
    """
    from .registry import RUNTIMES, get_runtime

    h, w = (size, size) if isinstance(size, int) else size
    data = spec.to_dict()
    recipes: dict[str, tuple[Callable[..., Any], tuple]] = {}
    timm_name = timm_equivalent(spec)
    if timm_name:
        recipes[f"timm {timm_name}, fp32 eager"] = (
            timm_row,
            (timm_name, batch, (h, w), threads, False),
        )
        if timm_best and native_bf16():  # emulated bf16 is slower than fp32: no "best" there
            label = f"timm {timm_name}, bf16 autocast + channels_last"
            recipes[label] = (timm_row, (timm_name, batch, (h, w), threads, True))
    recipes["dlagraph, fp32 eager (as built)"] = (eager_row, (data, batch, (h, w), threads))
    for backend in backends or ["torch"]:
        runtime = get_runtime(backend)
        for precision in precisions:
            if precision not in runtime.precisions:  # said, not dropped silently
                why = runtime.why_not.get(precision, f"it builds {', '.join(runtime.precisions)}")
                warnings.warn(f"{backend} {precision}: not run ({why})", DlagraphWarning, 2)
                continue
            name = f"{runtime.title} (dlagraph.optimize), {precision}"
            args = (data, precision, backend, batch, (h, w), threads, max(calibration_batches, 1))
            recipes[name] = (optimized_row, args)
    builtin = all(RUNTIMES.is_builtin(b) for b in backends or ["torch"])
    if builtin:
        times = isolated(recipes, runs, rounds, progress=progress)
    else:  # a runtime registered in this process only: its rows cannot be made in another
        times = _in_process(recipes, runs, rounds, progress)
    rows = []
    for label, t in times.items():
        if isinstance(t, str):  # one runtime that cannot build this: a note, not the end
            warnings.warn(f"{label}: not run ({t})", DlagraphWarning, 2)
            continue
        rows.append(BenchRow(label, t.median, batch, t.info, t.low, t.high))
    return rows, rows[0].label


def _in_process(
    recipes: dict[str, tuple[Callable[..., Any], tuple]],
    runs: int,
    n_rounds: int,
    progress: ProgressFn | None,
) -> dict[str, Timing | str]:
    """The rows made and timed in this process (:func:`dlagraph.deploy.clock.rounds`: blocks,
    rotated, a pause before each), for runtimes another process would not know."""
    fns: dict[str, Callable[[], Any]] = {}
    infos: dict[str, str] = {}
    out: dict[str, Timing | str] = {}
    with torch_threads(None):  # the makers set torch's threads: restored after
        for label, (make, args) in recipes.items():
            if progress:
                progress(label, None)
            start = time.perf_counter()
            try:
                made = make(*args)
            except Exception as e:
                out[label] = str(e).splitlines()[0] if str(e) else type(e).__name__
                if progress:
                    progress(label, float("nan"))
                continue
            fns[label], infos[label] = made if isinstance(made, tuple) else (made, "")
            if progress:
                progress(label, time.perf_counter() - start)
        for label, t in rounds(fns, runs, n_rounds).items():
            t.info = infos[label]
            out[label] = t
    return {k: out[k] for k in recipes if k in out}


def table(rows: list[BenchRow], baseline: str) -> list[str]:
    """The rows as a Markdown table, with each one's ratio of throughput to the baseline."""
    base = next(r for r in rows if r.label == baseline)
    lines = [
        f"| model | ms / batch | rounds' range | images/s | vs {baseline} | compile + calibration |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = base.seconds / r.seconds
        lines.append(
            f"| {r.label} | {r.seconds * 1e3:.1f} | {r.low * 1e3:.1f}-{r.high * 1e3:.1f} | "
            f"{r.images_per_second:,.1f} | {ratio:.2f}x | {r.setup} |"
        )
    return lines
