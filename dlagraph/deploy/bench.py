"""CPU inference throughput of a spec in each deployment precision, against timm's fp32 eager model
of the same architecture (``reference: timm:NAME`` in the spec) or, without one, dlagraph's own
fp32 eager model. ``dlagraph bench`` and ``benchmarks/bench.py`` print this table.

All models run in one process, interleaved run by run, so that drift (thermal, other load) hits
them alike; each row is the median of ``runs`` timed batches after a warm-up.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..base.errors import DlagraphWarning
from ..base.system import cpu_description, native_bf16
from ..spec import Spec
from .prepare import seeded
from .timing import interleaved, runner

__all__ = ["BenchRow", "bench_spec", "cpu_description", "interleaved", "table", "timm_equivalent"]

ProgressFn = Callable[[str, float | None], None]


@dataclass
class BenchRow:
    label: str
    seconds: float  # median per batch
    batch: int
    setup: str = ""  # compile / calibration time, as text

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
) -> tuple[list[BenchRow], str]:
    """Time ``spec`` in each precision on each backend (``torch``, ``openvino``,
    ``onnxruntime``; default torch); returns the rows (the baseline first) and its name.

    int8 calibrates on ``calibration_batches`` random batches (a timing, not an accuracy run).
    """
    from ..backends.torch.interpret import build_module
    from .optimize import optimize as optimize_on
    from .registry import get_runtime

    with seeded(0):
        h, w = (size, size) if isinstance(size, int) else size
        x = torch.randn(batch, 3 if spec.in_channels is None else spec.in_channels, h, w)
        model = build_module(spec).eval()
    models: dict[str, tuple[Callable[[], Any], str]] = {}
    timm_name = timm_equivalent(spec)
    if timm_name:
        import timm

        ref = timm.create_model(timm_name, pretrained=False).eval()
        models[f"timm {timm_name}, fp32 eager"] = (runner(ref, x), "")
        if timm_best and native_bf16():  # emulated bf16 is slower than fp32: no "best" there
            best = timm.create_model(timm_name, pretrained=False).eval()
            best = best.to(memory_format=torch.channels_last)
            models[f"timm {timm_name}, bf16 autocast + channels_last"] = (
                runner(best, x.contiguous(memory_format=torch.channels_last), autocast=True),
                "",
            )
    models["dlagraph, fp32 eager (as built)"] = (runner(model, x), "")
    for backend in backends or ["torch"]:
        runtime = get_runtime(backend)
        for precision in precisions:
            if precision not in runtime.precisions:  # said, not dropped silently
                why = runtime.why_not.get(precision, f"it builds {', '.join(runtime.precisions)}")
                warnings.warn(f"{backend} {precision}: not run ({why})", DlagraphWarning, 2)
                continue
            calibration = None
            if precision == "int8":
                gen = torch.Generator().manual_seed(1)
                calibration = [
                    torch.randn(x.shape, generator=gen) for _ in range(max(calibration_batches, 1))
                ]
            label = f"{backend} {precision}"
            try:
                opt = optimize_on(
                    model,
                    precision,
                    calibration,
                    backend=backend,
                    example_input=x,
                    threads=threads,  # every runtime on the same threads as torch's rows
                    progress=(lambda s, t, p=label: progress(f"{p}: {s}", t)) if progress else None,
                )
            except Exception as e:  # one runtime that cannot build this: a note, not the end
                text = str(e).splitlines()[0] if str(e) else type(e).__name__
                warnings.warn(f"{label}: not run ({text})", DlagraphWarning, 2)
                continue
            report = getattr(opt, "report", None)  # a user's runtime may keep none
            steps = getattr(report, "steps", {}) or {}
            setup = sum(v for k, v in steps.items() if k != "fold BN")
            name = f"{runtime.title} (dlagraph.optimize), {precision}"
            models[name] = (runner(opt, x), f"{setup:.1f} s")
    times = interleaved({k: f for k, (f, _) in models.items()}, runs)
    rows = [BenchRow(k, times[k], batch, models[k][1]) for k in models]
    return rows, rows[0].label


def table(rows: list[BenchRow], baseline: str) -> list[str]:
    """The rows as a Markdown table, with each one's ratio of throughput to the baseline."""
    base = next(r for r in rows if r.label == baseline)
    lines = [
        f"| model | ms / batch | images/s | vs {baseline} | compile + calibration |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = base.seconds / r.seconds
        lines.append(
            f"| {r.label} | {r.seconds * 1e3:.1f} | {r.images_per_second:,.1f} | "
            f"{ratio:.2f}x | {r.setup} |"
        )
    return lines
