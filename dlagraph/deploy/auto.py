"""``dlagraph.optimize(..., backend="auto")``: every available runtime of the registry built in the
requested precision (and fp32, which a lower precision must beat), from one built model, timed
on this machine, interleaved, at the caller's batch and size; the fastest that keeps the model's
outputs is chosen. The choice is cached by spec, setting, CPU and library versions, so the next
``auto`` builds only the winner.

No silent slow-downs: bf16 on a CPU without native bf16 is never an ``auto`` candidate, and a
lower precision that is slower than fp32 on this CPU loses to fp32.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._version import __version__
from ..base.errors import DlagraphError, DlagraphWarning, clip
from ..base.io import MARKER, read_bounded, write_outputs
from ..base.system import cpu_description, native_bf16
from .accuracy import AccuracyCheck, Metric
from .check import compare
from .clock import rounds
from .prepare import prepare
from .registry import PRECISIONS, RUNTIMES, Runtime
from .request import DeployError, DeployRequest
from .timing import runner
from .timing import threads as torch_threads

__all__ = ["auto", "AutoReport"]

# what "keeps the model's outputs" means for auto (measured int8 rows: about 0.02 relative
# error, full top-1 agreement on real images). For int8 the rule is relative to the network: the
# error its exact quantization has (PyTorch's q/dq reference graph, the same calibration) is what
# quantizing it costs, trained or not; a candidate may be up to EXPECTED_FACTOR times that, and
# agree on top-1 as often as that reference does, less AGREEMENT_SLACK (a random network's argmax
# is noise: the reference itself agrees rarely there, and then so may the candidates)
MAX_ERROR = {"fp32": 1e-3, "bf16": 0.1, "int8": 0.2}
MIN_AGREEMENT = 0.9
EXPECTED_FACTOR = 2.0
AGREEMENT_SLACK = 0.1


@dataclass
class AutoReport:
    """What ``backend="auto"`` measured: ms per batch of every candidate (None: not kept, with
    why), and the one it chose."""

    chosen: str
    rows: dict[str, float | None] = field(default_factory=dict)
    why: dict[str, str] = field(default_factory=dict)  # not kept: why
    cached: bool = False
    kept: dict[str, str] = field(default_factory=dict)  # kept: the rule it met

    def __str__(self) -> str:
        parts = [
            f"{k} {v * 1e3:.1f} ms" if v is not None else f"{k}: {self.why.get(k, 'not kept')}"
            for k, v in self.rows.items()
        ]
        how = " (cached choice)" if self.cached else ""
        return f"auto chose {self.chosen}{how}: " + "; ".join(parts)


def auto(model: nn.Module, request: DeployRequest, cache: str | Path | None) -> nn.Module:
    """The fastest faithful build of ``model`` among the available runtimes (see the module)."""
    x = request.batch("backend='auto' times the candidates on a batch and")
    reference = prepare(model)  # folded: the outputs the candidates must keep
    int8 = request.precision == "int8"
    budget = _budget(reference, request) if int8 else None  # a failing metric fails first
    precisions = ["fp32"] + ([request.precision] if request.precision != "fp32" else [])
    if "bf16" in precisions and not native_bf16():
        precisions.remove("bf16")  # emulated: always slower than fp32 here
    candidates = [
        (rt, p)
        for p in precisions
        for _, rt in RUNTIMES.items()
        if rt.auto and p in rt.precisions and rt.available()
    ]
    labels = [f"{rt.name} {p}" for rt, p in candidates]
    if cache is not None and not isinstance(cache, str | Path):
        raise DeployError(f"cache: give a file path (got {type(cache).__name__})")
    path = Path(cache) if cache else _default_cache()
    budget_said = (
        f"{request.validation.name} within {request.max_drop!r}" if request.validation else ""
    )  # another metric or budget may choose another candidate
    key = _key(reference, x, request, [*labels, f"compile {request.compile}", budget_said])
    check = request.calibration[-1] if request.calibration else x
    cached = _read(path).get(key, {})
    if cached.get("chosen") in labels:  # measured before on this machine: build only it
        chosen = cached["chosen"]
        rt, p = candidates[labels.index(chosen)]
        try:
            built = _build(model, rt, p, request, x)
            expected = _expected_int8(reference, request, check) if p == "int8" else None
            problem, _ = _faithful(
                reference, built, check, p, expected, budget if p == "int8" else None
            )
        except DlagraphError as e:
            problem = str(e).splitlines()[0]
        if problem is None:  # else: the weights or the runtime changed; measure again
            built.auto = AutoReport(chosen, cached["rows"], {}, cached=True)
            return built
    built_all: dict[str, nn.Module] = {}
    why: dict[str, str] = {}
    report = request.report()  # its progress: the steps on a terminal
    for (rt, p), label in zip(candidates, labels, strict=True):
        try:
            with report.step(f"auto: build {label}"):
                built_all[label] = _build(model, rt, p, request, x)
        except Exception as e:  # a candidate this model (or a user's runtime) cannot build
            text = str(e).splitlines()[0] if str(e) else ""
            why[label] = text if isinstance(e, DlagraphError) else f"{type(e).__name__}: {text}"
    expected = (
        _expected_int8(reference, request, check) if int8 and not request.validation else None
    )
    kept: dict[str, str] = {}
    for label, m in list(built_all.items()):
        try:
            p = label.split(" ")[1]
            problem, rule = _faithful(
                reference, m, check, p, expected, budget if p == "int8" else None
            )
        except Exception as e:  # a build that fails when called (a user's runtime, a bad one)
            text = str(e).splitlines()[0] if str(e) else ""
            problem, rule = f"fails when run: {type(e).__name__}: {clip(text, 120)}", ""
        if problem:
            why[label] = problem
            del built_all[label]
        else:
            kept[label] = rule
    if not built_all:
        raise DeployError(
            "auto: no candidate kept the model's outputs: "
            + "; ".join(f"{k}: {v}" for k, v in why.items())
        )
    with torch_threads(request.threads), report.step(f"auto: time {len(built_all)} candidates"):
        # blocks in turn with a pause before each (clock.rounds): one runtime's spinning idle
        # threads once slowed whichever candidate ran next, and biased the choice
        timed = rounds({k: runner(m, x) for k, m in built_all.items()}, runs=3, n_rounds=3)
    times = {k: t.median for k, t in timed.items()}
    chosen = min(times, key=times.__getitem__)
    rows: dict[str, float | None] = {label: times.get(label) for label in labels}
    _update(path, key, {"chosen": chosen, "rows": rows})
    out = built_all[chosen]
    out.auto = AutoReport(chosen, rows, why, kept=kept)
    return out


def _build(
    model: nn.Module, rt: Runtime, precision: str, request: DeployRequest, x: torch.Tensor
) -> nn.Module:
    """One candidate: fp32 rows of an int8 request are built uncalibrated."""
    calibration = request.calibration if precision == "int8" else None
    req = request.replace(precision=precision, calibration=calibration, example=x, progress=None)
    with torch_threads(request.threads), warnings.catch_warnings():
        warnings.simplefilter("ignore", DlagraphWarning)
        return rt.require(precision)(model, req)  # type: ignore[no-any-return]


def _expected_int8(
    reference: nn.Module, request: DeployRequest, x: torch.Tensor
) -> tuple[float, float] | None:
    """The relative error and top-1 agreement on ``x`` of this network's exact int8 quantization
    (PyTorch's q/dq reference graph, uncompiled, from the same calibration batches): what
    quantizing it costs. None where it cannot be built (torchao missing)."""
    import copy

    try:
        from .prepare import is_deformable
        from .pytorch import quantize
        from .request import batch_checker

        net = copy.deepcopy(reference)
        keep = [n for n, m in net.named_modules() if is_deformable(m)]
        q, _, _ = quantize(
            net, request.calibration or (), keep, request.report(), batch_checker(net)
        )
        with torch.inference_mode():
            xc = x.float().contiguous(memory_format=torch.channels_last)
            c = compare(reference(xc), q(xc), "auto's check batch")
    except DlagraphError:
        return None
    return c.error, c.agreeing() / len(x)


def _budget(reference: nn.Module, request: DeployRequest) -> tuple[Metric, float, float] | None:
    """With a validation metric: (the metric, the reference's value, max_drop)."""
    if request.validation is None:
        return None
    return request.validation, request.validation(reference), request.max_drop


def _faithful(
    reference: nn.Module,
    m: nn.Module,
    x: torch.Tensor,
    precision: str,
    expected: tuple[float, float] | None = None,
    budget: tuple[Metric, float, float] | None = None,
) -> tuple[str | None, str]:
    """Whether ``m`` keeps the reference's outputs on ``x``: (why not, or None; the rule met).
    With a ``budget`` (int8 with a validation metric) the rule is the metric: within
    ``max_drop`` of the fp32 reference's, outputs finite."""
    with torch.inference_mode():
        c = compare(reference(x), m(x), "auto's check batch")
    if budget is not None:
        metric, ref, max_drop = budget
        if not math.isfinite(c.error):
            return "outputs are not finite", ""
        check = AccuracyCheck(metric.name, ref, metric(m), max_drop)
        return (None, str(check)) if check.within else (str(check), "")
    limit, floor, basis = MAX_ERROR[precision], MIN_AGREEMENT, ""
    if precision == "int8" and expected is not None:
        limit = max(limit, EXPECTED_FACTOR * expected[0])
        floor = min(floor, expected[1] - AGREEMENT_SLACK)
        basis = f" (exact int8 of this network: {expected[0]:.3f}, top-1 {expected[1]:.2f})"
    if not c.error <= limit:  # inf: an output that is not finite
        return f"relative error {c.error:.3f} > {limit:.3f}{basis}", ""
    rule = f"relative error {c.error:.3f} <= {limit:.3f}"
    dag = getattr(reference, "dag", None)
    if dag is not None and dag.graph.get("classifier") and len(x) > 1:
        agree = c.agreeing() / len(x)
        if agree < floor:
            return f"top-1 agreement {agree:.2f} < {floor:.2f}{basis}", ""
        rule += f", top-1 agreement {agree:.2f} >= {floor:.2f}"
    return None, rule + basis


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
    reference: nn.Module, x: torch.Tensor, request: DeployRequest, candidates: list[str]
) -> str:
    dag = getattr(reference, "dag", None)
    spec = dag.graph.get("spec") if dag is not None else type(reference).__qualname__
    text = json.dumps(
        [spec, list(x.shape), request.precision, request.threads or torch.get_num_threads(),
         candidates, cpu_description(), _versions(), __version__],
        sort_keys=True, default=str,
    )  # fmt: skip
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _default_cache() -> Path:
    # the XDG rule: a relative XDG_CACHE_HOME is invalid and ignored (it would be the cwd's)
    root = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(root) if root and Path(root).is_absolute() else Path.home() / ".cache"
    return base / "dlagraph" / "auto.json"


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
        and isinstance(v.get("rows"), dict) and all(_seconds(r) for r in v["rows"].values())
        and all(_label(k) for k in v["rows"]) and v["chosen"] in v["rows"]
    }  # fmt: skip


def _label(text: object) -> bool:
    """A cached row's label: a registered runtime and a precision (printed as they are)."""
    if not isinstance(text, str) or len(text.split(" ")) != 2:
        return False
    name, precision = text.split(" ")
    return name in RUNTIMES and precision in PRECISIONS


def _seconds(value: object) -> bool:
    """A cached row: seconds per batch (finite, positive) or None (not kept)."""
    if value is None:
        return True
    return type(value) in (int, float) and 0 < value < 1e6  # type: ignore[operator]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock beside the cache while it is read, updated and replaced, so concurrent
    ``auto`` calls merge their entries instead of losing one; without ``fcntl`` (Windows) or a
    writable folder, no lock (the write itself stays atomic)."""
    try:
        import fcntl

        path.parent.mkdir(parents=True, exist_ok=True)
        # never through a link: the lock file is ours, beside the cache, or there is no lock
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(path.with_name(path.name + ".lock"), flags, 0o644)
    except (ImportError, OSError):
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _update(path: Path, key: str, entry: dict[str, Any]) -> None:
    """Add one measured choice to the cache, merged with what other processes wrote."""
    with _locked(path):
        entries = _read(path)
        entries[key] = entry
        _write(path, entries)


def _write(path: Path, entries: dict[str, Any]) -> None:
    text = json.dumps({"generator": f"{MARKER} {__version__}", "entries": entries}, indent=1)
    try:
        write_outputs({path: text + "\n"})
    except DlagraphError:  # a foreign file there, an unwritable home: measure again next time
        pass
