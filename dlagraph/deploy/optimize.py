"""``dlagraph.optimize``: one request (:class:`~.request.DeployRequest`, validated once), one
runtime from the registry (:mod:`.registry`: PyTorch, OpenVINO, ONNX Runtime, or a user's own),
or ``auto``, which times every available one (:mod:`.auto`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..base.errors import safe_repr
from ..base.progress import steps_on_a_terminal
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

    Raises:
        DlagraphError: an unknown backend or precision, a runtime that is not installed (naming
            the extra), int8 without calibration, bad batches, or no input shape to build for.
    """
    request = DeployRequest.of(
        precision, calibration, example_input, threads, compile, rewrites, progress
    )
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
    return build(resolve(model), request)  # type: ignore[no-any-return]
