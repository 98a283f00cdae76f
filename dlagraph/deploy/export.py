"""``dlagraph export``: a DLA as a deployment artifact, each format made by its own maintained
toolchain and checked by running the artifact in its runtime against the PyTorch model.

| format | file(s) | made by | runs in | precisions |
|---|---|---|---|---|
| ``onnx`` | ``NAME.onnx`` | ``torch.onnx`` (dynamo exporter); int8: ONNX Runtime's static QDQ | ONNX Runtime | fp32, int8 |
| ``openvino`` | ``NAME.xml`` + ``NAME.bin`` | ``openvino.convert_model``; int8: NNCF | OpenVINO | fp32, int8 |
| ``pt2`` | ``NAME.pt2`` | ``torch.export``; int8: torchao's PT2E | ``torch.export.load`` | fp32, bf16, int8 |
| ``torchscript`` | ``NAME.pt`` | ``torch.jit.trace`` + ``freeze`` | ``torch.jit.load`` | fp32, bf16 |

Formats are a registry (:func:`dlagraph.register_format`); these are the built-ins. Every artifact
is written with ``NAME.FORMAT.json`` beside it (spec, input size and batch,
normalisation, classes, outputs, the check's numbers, dlagraph's version), all files at once or
none (:func:`dlagraph.base.io.write_outputs`). BatchNorm is folded into the convs first (the same
function, fewer ops for every runtime).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from .._version import __version__
from ..base.errors import DlagraphWarning, clip, one_line, safe_repr, users_stacklevel
from ..base.io import (
    MARKER,
    check_targets,
    is_checkpoint_file,
    is_generated,
    read_bounded,
    write_outputs,
)
from ..spec import Spec, load_spec
from .accuracy import MAX_DROP, AccuracyCheck, Metric
from .calibration import DIGITS, Images, images, labelled
from .check import MAX_ERROR, compare
from .prepare import AsModule, in_batches_of, prepare, seeded
from .registry import FORMATS, PRECISIONS, get_format
from .request import DeployError, DeployRequest, OptimizeReport, batch_checker

__all__ = ["export", "ExportResult"]

CHECK_IMAGES = 32  # held out from calibration; the artifact is checked on them


@dataclass
class ExportResult:
    """What was written, and how the artifact compares with the PyTorch model on the check
    images: ``max_error`` relative to the largest reference output, ``agreement`` the share of
    images whose top-1 class is the same (classifiers; else None)."""

    files: list[Path]
    format: str
    precision: str
    max_error: float
    agreement: float | None
    runtime: str
    metadata: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, Any] = field(default_factory=dict)  # where they came from
    accuracy: AccuracyCheck | None = None  # int8 with a validation: the artifact's metric
    float_modules: list[str] = field(default_factory=list)  # int8: left in floating point

    def __str__(self) -> str:
        agree = "" if self.agreement is None else f", top-1 agreement {self.agreement:.4f}"
        random = ", random weights (seed 0)" if self.weights.get("source") == "random" else ""
        accuracy = "" if self.accuracy is None else f"; {self.accuracy}"
        floats = f"; in floating point: {', '.join(self.float_modules)}" * bool(self.float_modules)
        return (
            f"{self.format} {self.precision} in {self.runtime}{random}: max error "
            f"{self.max_error:.2e} (relative){agree}{accuracy}{floats}"
        )


def export(
    model: nn.Module | Spec | str | Path | dict[str, Any],
    format: str,
    out: str | Path,
    *,
    precision: str = "fp32",
    calibration: str | list[torch.Tensor] | None = None,
    size: tuple[int, int] | None = None,
    batch: int | str = 1,
    weights: str | Path | None = None,
    calibration_images: int = 256,
    name: str | None = None,
    force: bool = False,
    progress: Callable[[str, float | None], None] | None = None,
    validation: Any = None,
    max_drop: float = MAX_DROP,
    validation_images: int = 256,
) -> ExportResult:
    """Export a DLA (a module from :func:`dlagraph.build_module`, a spec / preset, built with
    ``weights`` or random ones, or a checkpoint file, its spec inferred as ``dlagraph infer``
    does) to ``out`` in ``format`` and ``precision``, and check it.

    Args:
        calibration: int8 only: ``digits``, ``folder:PATH`` or ``random`` (see
            :mod:`.calibration`), or your own NCHW batches (normalised as the model expects);
            the check images come from the same source (with your batches: the last one).
        size: input (H, W); default the spec's ``input_size``, else its smallest square input
            from 224.
        batch: the artifact's batch size, or ``"dynamic"`` (any batch: checked at two sizes).
        validation: int8 only: what int8 may cost, measured on held-out data: ``digits`` or
            ``folder:PATH`` (labelled images: one folder per class, as torchvision's
            ``ImageFolder``; ``validation_images`` of them), labelled batches
            ``[(images, labels), ...]`` (top-1), or a function ``metric(model) -> float``
            (higher is better; it runs the artifact as loaded, any batch size). ``openvino``
            keeps the layers int8 costs most in floating point until the metric is within
            ``max_drop`` of fp32's (NNCF's accuracy control), ``onnx`` keeps the stem conv in
            fp32 only if all-int8 is over it; an artifact still over ``max_drop`` is not written.
            The metadata records both metrics and what stayed in floating point.
        max_drop: the drop of the validation metric int8 may cost, in its units (default 0.005:
            half a point of top-1).
        progress: called as ``progress(step, None)`` when a step starts and
            ``progress(step, seconds)`` when it ends (the CLI shows them on a terminal).

    Raises:
        DlagraphError: an unknown format or a precision it does not take (one line saying why),
            a missing runtime (naming the extra), int8 without calibration, a refused write,
            an int8 artifact over ``max_drop``.
    """
    if format not in FORMATS:
        raise DeployError(
            f"format: give one of {', '.join(FORMATS.names())} "
            f"(got {clip(one_line(str(format)), 40)!r})"
        )
    if precision not in PRECISIONS:
        raise DeployError(f"precision: give {', '.join(PRECISIONS)} (got {safe_repr(precision)})")
    fmt = get_format(format)
    make = fmt.require(precision)
    if precision == "int8" and calibration is None:
        raise DeployError("int8 needs --calibration digits, folder:PATH or random")
    if calibration is not None and precision != "int8":
        raise DeployError(f"calibration is for int8 (the precision is {precision})")
    dynamic = batch == "dynamic"
    if not dynamic and not (type(batch) is int and 1 <= batch <= 4096):
        raise DeployError(f"batch: give 1 to 4096 or dynamic (got {safe_repr(batch)})")
    if size is not None and not (
        isinstance(size, tuple | list)
        and len(size) == 2
        and all(type(s) is int and 1 <= s <= 65536 for s in size)
    ):
        raise DeployError(f"size: give (H, W), two whole numbers from 1 (got {safe_repr(size)})")
    if name is not None and (not isinstance(name, str) or not name):
        raise DeployError(f"name: give a file name stem (got {safe_repr(name)})")
    if calibration is not None and not isinstance(calibration, str | list | tuple):
        raise DeployError(
            "calibration: give digits, folder:PATH, random or a list of NCHW batches "
            f"(got {type(calibration).__name__})"
        )
    report = OptimizeReport(precision, False, progress=progress)
    with report.step("build"):
        model, spec, source = _model(model, weights)
    from ..ir.analysis import default_cfg, default_input_size, summarize
    from ..ir.compile import compile_spec
    from ..ir.memory import check_fits

    g = compile_spec(spec)
    if size is None and isinstance(calibration, list | tuple) and calibration:
        first = calibration[0]
        if isinstance(first, torch.Tensor) and first.dim() == 4:
            size = (int(first.shape[2]), int(first.shape[3]))  # as optimize: the batches' size
    size = tuple(size or default_input_size(g))  # type: ignore[assignment]
    s = summarize(g, size)  # an input size the network cannot take: its own one-line error
    channels = g.graph["in_channels"]
    cfg = default_cfg(g)
    if getattr(model, "pretrained_cfg", None):
        cfg = {**cfg, **model.pretrained_cfg}
    n = 2 if dynamic else batch
    if (
        isinstance(calibration_images, bool)
        or not isinstance(calibration_images, int)
        or not 1 <= calibration_images <= 100_000
    ):
        raise DeployError(
            f"calibration images: give 1 to 100,000 (got {clip(one_line(repr(calibration_images)), 40)})"
        )
    # fp32 and bf16 need the check images alone; int8 its calibration images too
    count = calibration_images if precision == "int8" and isinstance(calibration, str) else 0
    labelled_count = _validation_images(validation, validation_images, precision)
    if (
        validation == "digits"
        and calibration == "digits"
        and (count + CHECK_IMAGES + labelled_count > DIGITS)
    ):  # before either is read
        raise DeployError(
            f"validation: digits has {DIGITS} images; {count + CHECK_IMAGES} calibrate and "
            f"check, so at most {max(0, DIGITS - count - CHECK_IMAGES)} can validate apart from "
            f"them (got {labelled_count}): lower --validation-images or --calibration-images"
        )
    # the model, its folded copy and the artifact; the images read
    check_fits(
        g, s, n, models=3, images=count + CHECK_IMAGES + labelled_count,
        hint="use a smaller --batch, --size, --calibration-images or --validation-images",
    )  # fmt: skip
    if calibration is None or isinstance(calibration, str):
        data = images(
            calibration or "random",
            channels,
            size,
            cfg,
            count=count,
            batch=n,
            check=CHECK_IMAGES,
        )
    else:
        if not calibration or not all(isinstance(b, torch.Tensor) for b in calibration):
            raise DeployError(
                f"calibration: give NCHW batches of {channels}x{size[0]}x{size[1]} images "
                "(a non-empty list of tensors)"
            )
        batches = [b.float() for b in calibration]
        for i, b in enumerate(batches):
            if b.dim() != 4 or b.shape[1:] != (channels, *size) or len(b) == 0:
                got = "x".join(map(str, b.shape))
                raise DeployError(
                    f"calibration[{i}]: a batch of shape {got}; give N x {channels} x {size[0]} x "
                    f"{size[1]} images (N >= 1)"
                )
        if not all(torch.isfinite(b).all() for b in batches):
            raise DeployError("calibration: a batch holds NaN or infinite values")
        held = batches[-1] if len(batches) > 1 else batches[0]
        data = Images(batches[:-1] or batches, held, "your batches")
    if data.calibration:  # the artifact takes batches of n: its quantizer is fed the same
        data.calibration = _rebatch(data.calibration, n)
    example = data.check[:n] if len(data.check) >= n else data.check.repeat(n, 1, 1, 1)[:n]
    compare(_eval(model, data.check), _eval(model, data.check))  # not finite: named, before work
    name = name or spec.name
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}", name):
        raise DeployError(
            f"name: letters, digits, '_', '.' and '-', at most 100, not starting with '.' or '-' "
            f"(got {clip(one_line(name), 60)!r})"
        )
    suffix = "" if precision == "fp32" else f"_{precision}"
    stem = Path(out) / f"{name}{suffix}"
    meta_path = stem.with_name(f"{stem.name}.{format}.json")
    ours = _ours(meta_path)
    planned = [stem.with_name(stem.name + e) for e in fmt.extensions]
    # an earlier export's artifacts (its metadata lists them) are replaced; anything else, the
    # metadata file's name included, is the user's unless --force
    own = [p for p in planned if p.name in ours]
    check_targets([*planned, meta_path], force=force, replace=own)  # before minutes of work
    validation, validation_source, classes = _labelled(
        validation, g, spec.name, calibration, labelled_count, size, cfg
    )
    with report.step("fold BN"):
        folded = prepare(model).to(memory_format=torch.contiguous_format)
    request = DeployRequest.of(
        precision,
        data.calibration if precision == "int8" else None,
        example,
        validation=validation,
        max_drop=max_drop,
    ).replace(checked=tuple(data.check.split(n)))
    metric = request.validation
    if metric is not None:  # a metric that fails, fails before minutes of int8
        check = batch_checker(model)
        for i, (x, _) in enumerate(metric.items or ()):
            check(x, f"validation[{i}]")
            if tuple(x.shape[2:]) != tuple(size):
                raise DeployError(
                    f"validation[{i}]: images of {x.shape[2]}x{x.shape[3]}; the artifact takes "
                    f"{size[0]}x{size[1]}"
                )
        with report.step("validate fp32"):
            metric.fp32(lambda: folded)
    with tempfile.TemporaryDirectory() as tmp:
        with report.step(f"convert to {format}" + (" + int8" if precision == "int8" else "")):
            scratch = Path(tmp) / "a"
            scratch.mkdir()
            files, run = make(folded, example, request, dynamic, scratch)
        if sorted(files) != sorted(fmt.extensions):
            raise DeployError(
                f"format {format!r} made {sorted(files)}, not its extensions {list(fmt.extensions)}"
            )
        with report.step(f"check in {fmt.runtime}"):
            max_error, agreement, compared = _check(
                model, run, data, n, dynamic, bool(g.graph["classifier"]), precision
            )
        made = getattr(run, "report", None)
        floats = list(getattr(made, "float_modules", None) or [])
        accuracy = None
        if metric is not None:
            with report.step("validate int8"):
                accuracy = _within_budget(
                    metric, made, AsModule(run) if dynamic else in_batches_of(run, n), folded,
                    format, request.max_drop,
                )  # fmt: skip
        outputs = [list(t.shape[1:]) for t in tree_flatten(_eval(model, example))[0]]
        targets = {stem.with_name(stem.name + ext): blob for ext, blob in files.items()}
        meta = {
            "generator": f"{MARKER} {__version__}",
            "format": format,
            "precision": precision,
            "runtime": fmt.runtime,
            "files": {p.name: hashlib.sha256(b).hexdigest() for p, b in targets.items()},
            "input": {
                "name": "x",
                "shape": ["batch" if dynamic else batch, channels, *size],
                "dtype": "float32",
                "mean": list(cfg.get("mean", ())),
                "std": list(cfg.get("std", ())),
                "layout": f"NCHW, {'RGB' if channels == 3 else f'{channels} channels'} in [0, 1] "
                "then (x - mean) / std",
            },
            "outputs": outputs,
            "num_classes": g.graph["num_classes"],
            "calibration": None if precision != "int8" else data.source,
            "accuracy": None
            if accuracy is None
            else {
                "metric": accuracy.name,
                "validation": validation_source or _described(metric),
                "classes": classes,
                "fp32": accuracy.fp32,
                "int8": accuracy.int8,
                "drop": accuracy.drop,
                "max_drop": accuracy.max_drop,
            },
            "float_modules": floats if precision == "int8" else None,
            "load": fmt.load.get(precision),
            "check": {
                "images": len(data.check),
                "compared": compared,
                "max_error": max_error,
                "agreement": agreement,
            },
            "weights": source,
            "spec": spec.to_dict(),
        }
        write_outputs(
            {**targets, meta_path: json.dumps(meta, indent=1) + "\n"}, force=force, replace=own
        )
    return ExportResult(
        [*targets, meta_path], format, precision, max_error, agreement, fmt.runtime, meta, source,
        accuracy, floats,
    )  # fmt: skip


def _validation_images(validation: Any, count: Any, precision: str) -> int:
    """How many labelled images a ``digits`` / ``folder:`` validation reads (0 for others)."""
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 100_000:
        raise DeployError(
            f"validation images: give 1 to 100,000 (got {clip(one_line(repr(count)), 40)})"
        )
    if validation is not None and precision != "int8":
        raise DeployError(
            f"validation: only int8 is checked against a metric (precision is {precision!r})"
        )
    return count if isinstance(validation, str) else 0


def _labelled(
    validation: Any,
    g: Any,
    name: str,
    calibration: Any,
    labelled_count: int,
    size: tuple[int, int],
    cfg: dict[str, Any],
) -> tuple[Any, str | None, list[str] | None]:
    """A ``digits`` / ``folder:`` validation read as labelled batches, what to call it and its
    classes (any other validation as given, for :func:`metric_of` to check)."""
    if not isinstance(validation, str):
        return validation, None, None
    if not g.graph["classifier"]:
        raise DeployError(
            f"validation: {clip(one_line(validation), 60)} scores a classifier's top-1; "
            f"{name} has no classifier head: give a metric function (Python: "
            "dlagraph.export(..., validation=metric))"
        )
    read = labelled(
        validation, g.graph["in_channels"], size, cfg, labelled_count,
        calibration=calibration if isinstance(calibration, str) else None,
        num_classes=g.graph["num_classes"],
    )  # fmt: skip
    # a class folder's name as text JSON can hold (bytes that are not UTF-8 escaped)
    classes = [
        c.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        for c in read.classes
    ]
    return read.items, f"{clip(one_line(validation), 200)} ({len(read)} images)", classes


def _within_budget(
    metric: Metric, made: Any, artifact: Any, folded: nn.Module, format: str, max_drop: float
) -> AccuracyCheck:
    """The artifact's metric against fp32's (as its format measured it, else here); over the
    budget is a one-line error, and the artifact is not written."""
    accuracy = getattr(made, "accuracy", None)  # measured by the format's own choice
    if accuracy is None:
        fp32 = metric.fp32(lambda: folded)
        accuracy = AccuracyCheck(metric.name, fp32, metric(artifact), max_drop)
    if not accuracy.within:
        hint = "" if format == "openvino" else (
            ", or format openvino (its accuracy control keeps the costliest layers in floating "
            "point)"
        )  # fmt: skip
        raise DeployError(f"int8 over its budget: {accuracy}: not written; raise max_drop{hint}")
    return accuracy


def _described(metric: Metric) -> str:
    if metric.items is None:
        return f"the function {metric.name}"
    return f"your labelled batches ({sum(len(y) for _, y in metric.items)} images)"


def _model(model: Any, weights: str | Path | None) -> tuple[nn.Module, Spec, dict[str, Any]]:
    """The model, its spec, and where its weights came from (for the sidecar and the output)."""
    from ..backends.torch.interpret import build_module

    if isinstance(model, nn.Module):
        if weights is not None:
            raise DeployError("weights: give them to build_module, not with a built model")
        dag = getattr(model, "dag", None)
        if dag is None or "spec" not in dag.graph:
            raise DeployError(
                "model: give a module from dlagraph.build_module, or a spec (the export's "
                "metadata carries the spec)"
            )
        if model.training:
            raise DeployError("export folds BatchNorm's running statistics: call model.eval()")
        return model, load_spec(dag.graph["spec"]), {"source": "the module given"}
    if is_checkpoint_file(model):  # its spec inferred from its tensors, as `dlagraph export` does
        if weights is not None:
            raise DeployError("weights: give a checkpoint, or a spec with weights=, not both")
        from ..inspect.infer import infer_checkpoint

        found = infer_checkpoint(model)
        for note in found.assumptions:
            warnings.warn(
                f"assumed (from the checkpoint) {note}", DlagraphWarning, users_stacklevel()
            )
        model, weights = found.spec, model
    spec = load_spec(model)
    with seeded(0):  # random weights (without a checkpoint) the same on every call
        built = build_module(spec, weights=weights).eval()
    if weights is None:
        return built, spec, {"source": "random", "seed": 0}
    return (
        built,
        spec,
        {"source": "file", "file": Path(weights).name, "sha256": _sha256(Path(weights))},
    )


def _rebatch(batches: list[torch.Tensor], n: int) -> list[torch.Tensor]:
    """The images of ``batches`` in batches of exactly ``n`` (repeated up to one batch where
    there are fewer; a remainder that would make a short batch is left out)."""
    x = torch.cat(batches)
    if not len(x):  # fp32 and bf16 read no calibration images
        return []
    if len(x) < n:
        x = x.repeat(-(-n // len(x)), 1, 1, 1)
    return list(x[: len(x) // n * n].split(n))


def _eval(model: nn.Module, x: torch.Tensor) -> Any:
    with torch.inference_mode():
        return model(x)


def _ours(meta_path: Path) -> set[str]:
    """The artifact files an earlier export wrote here (its metadata lists them): these may be
    replaced without --force; anything else is the user's."""
    if not is_generated(meta_path):
        return set()
    try:
        data = json.loads(read_bounded(meta_path, 16 * 2**20))
        files = {str(k): str(v) for k, v in data.get("files", {}).items()}
    except (OSError, ValueError, AttributeError, RecursionError):
        return set()
    # and only as it wrote them: a file the user has since replaced is the user's
    return {name for name, digest in files.items() if _sha256(meta_path.with_name(name)) == digest}


def _sha256(path: Path) -> str | None:
    try:
        if not path.is_file() or path.is_symlink():
            return None
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(2**20), b""):
                digest.update(chunk)
        return digest.hexdigest()
    except OSError:
        return None


def _check(
    model: nn.Module,
    run: Any,
    data: Images,
    n: int,
    dynamic: bool,
    classifier: bool,
    precision: str,
) -> tuple[float, float | None, int]:
    """The artifact against the PyTorch model on the check images, in batches of ``n`` (the
    images repeated up to one batch where there are fewer) and, for a dynamic batch, also all at
    once; the worst error, the top-1 agreement (classifiers) and how many images were compared.
    An artifact output that is not finite is refused, and one further than :data:`MAX_ERROR`
    from the model's (a metric within its budget does not make an unfaithful artifact right)."""
    x = data.check
    if len(x) < n:
        x = x.repeat(-(-n // len(x)), 1, 1, 1)[:n]
    sizes = [n] + ([len(x)] if dynamic and len(x) != n else [])
    worst, agree, total = 0.0, 0, 0
    for size in sizes:
        for i in range(0, len(x) - size + 1, size):
            xb = x[i : i + size]
            try:
                c = compare(_eval(model, xb), run(xb))
            except DeployError as e:
                raise DeployError(f"the artifact's check: {e}") from None
            if not math.isfinite(c.error):
                raise DeployError(
                    "the artifact's outputs are not finite (NaN or infinite) where the model's "
                    "are: not written"
                )
            if c.error > MAX_ERROR[precision]:
                raise DeployError(
                    f"the artifact's outputs are not the model's: relative error {c.error:.3g} > "
                    f"{MAX_ERROR[precision]} allowed in {precision}; not written"
                )
            worst = max(worst, c.error)
            agree += c.agreeing() if classifier else 0
            total += len(xb)
    return worst, (agree / total if classifier else None), min(total, len(data.check))
