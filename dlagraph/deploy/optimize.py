"""``dlagraph.optimize``: one request (:class:`~.request.DeployRequest`, validated once), one
runtime from the registry (:mod:`.registry`: PyTorch, OpenVINO, ONNX Runtime, or a user's own),
or ``auto``, which times every available one (:mod:`.auto`)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..base.errors import DlagraphWarning, safe_repr, users_stacklevel
from ..base.progress import steps_on_a_terminal
from .accuracy import MAX_DROP
from .prepare import resolve
from .registry import RUNTIMES, get_runtime
from .request import DeployError, DeployRequest

__all__ = ["optimize"]


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
    validation: Any = None,
    max_drop: float = MAX_DROP,
) -> nn.Module:
    """A copy of ``model`` ready for fast CPU inference in ``precision``, on ``backend``.

    Args:
        model: a module from :func:`dlagraph.build_module` or a generated class (or any DLA
            built of dlagraph's blocks), in eval mode; or a spec (a ``Spec``, a preset name, a spec file or a mapping), built once with
            random weights (seed 0), for timing. The model itself is not changed.
        precision: ``"fp32"`` (BN folded), ``"bf16"`` or ``"int8"`` (static post-training
            quantization with ``calibration``).
        calibration: int8 only: input batches (float32 NCHW) from the training data; a few
            hundred images are enough. The first batch fixes the image size.
        backend: a registered runtime (:func:`dlagraph.registered_runtimes`: ``"torch"``, the
            default, BN folding, bf16 or torchao int8 and ``torch.compile``; ``"openvino"`` and
            ``"onnxruntime"``, converted with the runtime's own toolchain, any batch size at the
            image size of ``example_input`` or the first calibration batch), or ``"auto"``:
            every available runtime built in ``precision`` (and fp32, which a lower precision
            must beat), timed interleaved at ``example_input``'s batch on ``threads`` threads,
            and the fastest whose outputs stay close to the model's returned; ``.auto`` says
            what it measured. Its choice is cached in ``cache`` (default
            ``$XDG_CACHE_HOME/dlagraph/auto.json``).
        compile: ``torch.compile`` the PyTorch result (int8 needs it for its fused kernels).
        example_input: a batch to build and compile for (OpenVINO and ONNX Runtime: default,
            without calibration batches, one image at the spec's ``input_size``, else the
            smallest square from 224 it takes; a generated class's ``pretrained_cfg`` size).
        progress: called as ``progress(step, None)`` when a step starts and
            ``progress(step, seconds)`` when it ends (the CLI shows them).
        threads: the runtimes' threads (and ``auto``'s timing); None: their default.
        rewrites: the rewrites measured to win on each runtime (channel padding: PyTorch and
            OpenVINO; split roots: PyTorch fp32); ``False`` for an A/B comparison.
        validation: int8 only: what int8 may cost, measured on held-out data: labelled batches
            ``[(images, labels), ...]`` (top-1 accuracy) or a function ``metric(model) -> float``
            (higher is better; it runs the module it is given). OpenVINO keeps the layers int8
            costs most in floating point until the metric is within ``max_drop`` of fp32's
            (NNCF's accuracy control); every runtime's report says the metric of both
            (``.report.accuracy``), and ``auto`` keeps an int8 candidate only within it.
        max_drop: the drop of the validation metric int8 may cost, in its units (default 0.005:
            half a point of top-1).

    Raises:
        DlagraphError: an unknown backend or precision, a runtime that is not installed (naming
            the extra), int8 without calibration, bad batches, or no input shape to build for.
    """
    request = DeployRequest.of(
        precision, calibration, example_input, threads, compile, rewrites, progress,
        validation, max_drop,
    )  # fmt: skip
    if backend == "auto":
        if not request.rewrites:
            raise DeployError(
                "rewrites=False: an A/B comparison on one backend; 'auto' times the candidates "
                "as they deploy, rewrites included"
            )
        from .auto import auto

        if request.progress is None:  # minutes of building and timing: say what it does
            request = request.replace(progress=steps_on_a_terminal())
        return auto(resolve(model), request, cache)
    if backend not in RUNTIMES:
        raise DeployError(
            f"backend: must be one of {', '.join([*RUNTIMES.names(), 'auto'])} "
            f"(got {safe_repr(backend)})"
        )
    build = get_runtime(backend).require(request.precision)
    model = resolve(model)
    if request.validation is not None:  # a metric that fails, fails before minutes of int8
        from .prepare import prepare
        from .request import batch_checker

        check = batch_checker(model)
        for i, (x, _) in enumerate(request.validation.items or ()):
            check(x, f"validation[{i}]")
        request.validation.fp32(lambda: prepare(model))
    built = build(model, request)
    report = getattr(built, "report", None)
    if request.validation is not None and report is not None:
        if report.accuracy is None:  # a runtime that does not measure it itself
            report.accuracy = measured_drop(model, built, request)
        if not report.accuracy.within:
            restores = (
                "" if backend == "openvino"
                else "; backend='openvino' keeps the layers int8 costs most in floating point"
            )  # fmt: skip
            warnings.warn(
                f"int8 on {backend}: {report.accuracy}{restores}",
                DlagraphWarning,
                stacklevel=users_stacklevel(),
            )
    return built  # type: ignore[no-any-return]


def measured_drop(model: nn.Module, built: nn.Module, request: DeployRequest) -> Any:
    """The validation metric of ``model`` (BN folded, fp32) and of ``built``."""
    from .accuracy import AccuracyCheck
    from .prepare import prepare

    metric = request.validation
    assert metric is not None
    with built.report.step("validate"):
        fp32 = metric.fp32(lambda: prepare(model))
        return AccuracyCheck(metric.name, fp32, metric(built), request.max_drop)
