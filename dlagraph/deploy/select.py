"""``dlagraph.optimize`` with a choice of runtime: PyTorch (:mod:`.optimize`: BN folding, bf16,
torchao int8, ``torch.compile``), OpenVINO or ONNX Runtime (:mod:`.runtimes`), or ``auto``: each
candidate built and timed on this machine, interleaved, at the caller's batch and size, and the
fastest that keeps the model's outputs chosen. The choice is cached by spec, setting, CPU and
library versions, so the next ``auto`` builds only the winner.

No silent slow-downs: bf16 on a CPU without native bf16 is never an ``auto`` candidate (and warns
when asked for), and a lower precision that is slower than fp32 on this CPU loses to fp32.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._version import __version__
from ..errors import DlagraphError, DlagraphWarning, safe_repr
from ..io import MARKER, read_bounded, write_outputs
from ..system import cpu_description, native_bf16
from .optimize import (
    PRECISIONS,
    OptimizeReport,
    _batch_checker,
    _prepare,
    _warn_emulated_bf16,
)
from .optimize import optimize as optimize_torch
from .rewrites import padding
from .runtimes import (
    RuntimeModule,
    compile_openvino,
    need,
    onnx_bytes,
    onnxruntime_session,
    openvino_model,
    quantize_onnx,
    structure,
)
from .timing import _eager, compare, interleaved
from .timing import threads as torch_threads

__all__ = ["optimize", "BACKENDS", "AutoReport"]

BACKENDS = ("torch", "openvino", "onnxruntime", "auto")
RUNTIMES = {"openvino": "OpenVINO", "onnxruntime": "ONNX Runtime", "torch": "PyTorch"}
# what "keeps the model's outputs" means for auto (measured int8 rows: about 0.02 relative
# error, full top-1 agreement on real images)
MAX_ERROR = {"fp32": 1e-3, "bf16": 0.1, "int8": 0.2}
MIN_AGREEMENT = 0.9


@dataclass
class AutoReport:
    """What ``backend="auto"`` measured: ms per batch of every candidate (None: not kept, with
    why), and the one it chose."""

    chosen: str
    rows: dict[str, float | None] = field(default_factory=dict)
    why: dict[str, str] = field(default_factory=dict)
    cached: bool = False

    def __str__(self) -> str:
        parts = [
            f"{k} {v * 1e3:.1f} ms" if v is not None else f"{k}: {self.why.get(k, 'not kept')}"
            for k, v in self.rows.items()
        ]
        how = " (cached choice)" if self.cached else ""
        return f"auto chose {self.chosen}{how}: " + "; ".join(parts)


def optimize(
    model: nn.Module | Any,
    precision: str = "fp32",
    calibration: Iterable[torch.Tensor] | None = None,
    *,
    backend: str = "torch",
    compile: bool = True,
    example_input: torch.Tensor | None = None,
    progress: Callable[[str, float | None], None] | None = None,
    threads: int | None = None,
    cache: str | Path | None = None,
    rewrites: bool = True,
) -> nn.Module:
    """A copy of ``model`` ready for fast CPU inference in ``precision``, on ``backend``.

    ``backend="torch"`` (the default) is :func:`dlagraph.deploy.optimize.optimize` (BN folded,
    channels_last, bf16 or torchao int8, ``torch.compile``; its arguments are the same).
    ``"openvino"`` and ``"onnxruntime"`` convert the folded model with the runtime's own
    toolchain (int8: NNCF, or ONNX Runtime's static QDQ) and return a module that runs it, with
    any batch size, at the image size of ``example_input`` or the first calibration batch.
    ``"auto"`` builds every backend in ``precision`` (and fp32, which a lower precision must beat),
    times them interleaved at ``example_input``'s batch on ``threads`` threads, and returns the
    fastest whose outputs stay close to the original model's; ``.auto`` says what it measured.
    Its choice is cached in ``cache`` (default ``$XDG_CACHE_HOME/dlagraph/auto.json``).
    ``rewrites``: channel padding (torch and OpenVINO, where it was measured to win) and split
    roots (torch fp32); ``False`` for an A/B comparison.

    Raises:
        DlagraphError: an unknown backend or precision, a runtime that is not installed (naming
            the extra), int8 without calibration, or no input shape to build for.
    """
    if backend not in BACKENDS:
        raise DlagraphError(
            f"backend: must be one of {', '.join(BACKENDS)} (got {safe_repr(backend)})"
        )
    if precision not in PRECISIONS:
        raise DlagraphError(
            f"precision: must be one of {', '.join(PRECISIONS)} (got {safe_repr(precision)})"
        )
    calibration = None if calibration is None else list(calibration)
    if backend == "torch":
        return optimize_torch(
            model,
            precision,  # type: ignore[arg-type]
            calibration,
            compile=compile,
            example_input=example_input,
            progress=progress,
            rewrites=rewrites,
        )
    if backend == "auto":
        if not rewrites:
            raise DlagraphError(
                "rewrites=False: an A/B comparison on one backend; 'auto' times the candidates "
                "as they deploy, rewrites included"
            )
        return _auto(model, precision, calibration, example_input, threads, cache, compile)
    return _runtime(
        model, backend, precision, calibration, example_input, threads, progress, rewrites
    )


def _runtime(
    model: Any,
    backend: str,
    precision: str,
    calibration: list[torch.Tensor] | None,
    example: torch.Tensor | None,
    threads: int | None,
    progress: Callable[[str, float | None], None] | None = None,
    rewrites: bool = True,
) -> RuntimeModule:
    if precision == "int8" and not calibration:
        raise DlagraphError(
            "int8 needs calibration batches: optimize(model, 'int8', calibration=[batch, ...])"
        )
    if calibration is not None and precision != "int8":
        raise DlagraphError(f"calibration: only int8 is calibrated (precision is {precision!r})")
    if backend == "onnxruntime" and precision == "bf16":
        raise DlagraphError(
            "onnxruntime bf16: ONNX Runtime's CPU provider has no bf16 convolutions"
        )
    need("openvino" if backend == "openvino" else "onnxruntime", f"backend={backend!r}")
    report = OptimizeReport(precision, False)
    say = progress or (lambda step, seconds: None)

    def step(name: str, fn: Callable[[], Any]) -> Any:
        say(name, None)
        start = time.perf_counter()
        value = fn()
        report.steps[name] = time.perf_counter() - start
        say(name, report.steps[name])
        return value

    # split roots: no steady gain in either runtime (docs/deployment.md); padding where it won
    pad = padding(backend, precision) if rewrites else None
    net = step("fold BN", lambda: _prepare(model, pad)).to(memory_format=torch.contiguous_format)
    if getattr(net, "channels_padded_to", None):
        report.notes.append(f"levels' channels padded to multiples of {net.channels_padded_to}")
    check = _batch_checker(net)
    x = example if example is not None else (calibration[0] if calibration else None)
    if x is None:
        raise DlagraphError(
            f"backend={backend!r} builds for one image size: give example_input (a batch)"
        )
    for i, b in enumerate(calibration or []):
        check(b, f"calibration[{i}]")
    check(x, "example_input")
    x = x.float().contiguous()
    out_structure, _ = structure(net, x[:1])
    if backend == "openvino":
        if precision == "bf16":
            _warn_emulated_bf16()
        ov_model = step(
            "convert" if precision != "int8" else "convert + NNCF int8",
            lambda: openvino_model(net, x, dynamic_batch=True, calibration=calibration),
        )
        hint = {"bf16": "bf16", "fp32": "f32"}.get(precision)
        run = step("compile", lambda: compile_openvino(ov_model, threads, hint))
    else:
        blob = step("export ONNX", lambda: onnx_bytes(net, x, dynamic_batch=True))
        if precision == "int8":
            blob = step("quantize (QDQ)", lambda: quantize_onnx(blob, calibration or []))
        run = step("session", lambda: onnxruntime_session(blob, threads))
    return RuntimeModule(run, out_structure, backend, precision, report)


def _auto(
    model: Any,
    precision: str,
    calibration: list[torch.Tensor] | None,
    example: torch.Tensor | None,
    threads: int | None,
    cache: str | Path | None,
    compile: bool,
) -> nn.Module:
    x = example if example is not None else (calibration[0] if calibration else None)
    if x is None:
        raise DlagraphError("backend='auto' times the candidates on a batch: give example_input")
    if precision == "int8" and not calibration:
        raise DlagraphError(
            "int8 needs calibration batches: optimize(model, 'int8', calibration=[...])"
        )
    reference = _prepare(model)  # folded: the outputs the candidates must keep
    precisions = ["fp32"] + ([precision] if precision != "fp32" else [])
    if "bf16" in precisions and not native_bf16():
        precisions.remove("bf16")  # emulated: always slower than fp32 here
    candidates = [
        (b, p)
        for p in precisions
        for b in ("torch", "openvino", "onnxruntime")
        if _available(b) and not (b == "onnxruntime" and p == "bf16")
    ]
    path = Path(cache) if cache else _default_cache()
    key = _key(reference, x, precision, threads, [*candidates, ("compile", str(compile))])
    entries = _read(path)
    if key in entries:  # the choice measured before on this machine: build only it
        b, p = entries[key]["chosen"].split(" ")
        # an fp32 row may win an int8 request (fp32 is always a candidate): not calibrated
        built = _build(model, b, p, calibration if p == "int8" else None, x, threads, compile)
        built.auto = AutoReport(entries[key]["chosen"], entries[key]["rows"], {}, cached=True)
        return built
    built_all: dict[str, nn.Module] = {}
    why: dict[str, str] = {}
    for b, p in candidates:
        label = f"{b} {p}"
        try:
            built_all[label] = _build(
                model, b, p, calibration if p == "int8" else None, x, threads, compile
            )
        except DlagraphError as e:  # a candidate this model cannot take (e.g. DCN in a runtime)
            why[label] = str(e).splitlines()[0]
    check = calibration[-1] if calibration else x
    for label, m in list(built_all.items()):
        problem = _keeps_outputs(reference, m, check, label.split(" ")[1])
        if problem:
            why[label] = problem
            del built_all[label]
    if not built_all:
        raise DlagraphError(
            "auto: no candidate kept the model's outputs: "
            + "; ".join(f"{k}: {v}" for k, v in why.items())
        )
    with torch_threads(threads):
        times = interleaved({k: _eager(m, x) for k, m in built_all.items()}, runs=7)
    chosen = min(times, key=times.__getitem__)
    rows: dict[str, float | None] = {f"{b} {p}": times.get(f"{b} {p}") for b, p in candidates}
    entries[key] = {"chosen": chosen, "rows": rows}
    _write(path, entries)
    out = built_all[chosen]
    out.auto = AutoReport(chosen, rows, why)
    return out


def _build(
    model: Any,
    backend: str,
    precision: str,
    calibration: Any,
    x: torch.Tensor,
    threads: int | None,
    compile: bool,
) -> nn.Module:
    if backend == "torch":
        with torch_threads(threads), warnings.catch_warnings():
            warnings.simplefilter("ignore", DlagraphWarning)
            return optimize_torch(model, precision, calibration, compile=compile, example_input=x)  # type: ignore[arg-type]
    return _runtime(model, backend, precision, calibration, x, threads)


def _keeps_outputs(
    reference: nn.Module, m: nn.Module, x: torch.Tensor, precision: str
) -> str | None:
    with torch.inference_mode():
        worst, ref, got = compare(reference(x), m(x))
    if worst > MAX_ERROR[precision]:
        return f"relative error {worst:.3f} > {MAX_ERROR[precision]}"
    dag = getattr(reference, "dag", None)
    if dag is not None and dag.graph.get("classifier") and len(x) > 1:
        agree = (ref[0].argmax(1) == got[0].argmax(1)).float().mean().item()
        if agree < MIN_AGREEMENT:
            return f"top-1 agreement {agree:.2f} < {MIN_AGREEMENT}"
    return None


def _available(backend: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(backend) is not None  # the backends' names are the packages


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for pkg in ("torch", "openvino", "onnxruntime", "torchao", "nncf"):
        try:
            out.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:
            pass
    return ", ".join(out)


def _key(
    reference: nn.Module,
    x: torch.Tensor,
    precision: str,
    threads: int | None,
    candidates: list[tuple[str, str]],
) -> str:
    dag = getattr(reference, "dag", None)
    spec = dag.graph.get("spec") if dag is not None else type(reference).__qualname__
    text = json.dumps(
        [spec, list(x.shape), precision, threads or torch.get_num_threads(), candidates,
         cpu_description(), _versions(), __version__],
        sort_keys=True, default=str,
    )  # fmt: skip
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _default_cache() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "dlagraph" / "auto.json"


def _read(path: Path) -> dict[str, Any]:
    """The cached choices; an unreadable or foreign cache is ignored (and rewritten)."""
    try:
        data = json.loads(read_bounded(path, 4 * 2**20))
    except (OSError, ValueError, RecursionError):
        return {}
    entries = data.get("entries") if isinstance(data, dict) else None
    if not isinstance(entries, dict) or not str(data.get("generator")).startswith(MARKER):
        return {}
    return {
        k: v
        for k, v in entries.items()
        if isinstance(v, dict) and isinstance(v.get("chosen"), str) and len(v["chosen"].split(" ")) == 2
        and v["chosen"].split(" ")[0] in RUNTIMES and v["chosen"].split(" ")[1] in PRECISIONS
        and isinstance(v.get("rows"), dict)
    }  # fmt: skip


def _write(path: Path, entries: dict[str, Any]) -> None:
    text = json.dumps({"generator": f"{MARKER} {__version__}", "entries": entries}, indent=1)
    try:
        write_outputs({path: text + "\n"})
    except DlagraphError:  # a foreign file there, an unwritable home: measure again next time
        pass
