"""What every runtime starts from: the model resolved once (a spec or preset is built here, once),
its folded eval-mode copy (levels padded where the runtime measured a win), the output structure
a runtime's flat outputs are put back into, and one way to silence the toolchains."""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten, tree_unflatten

from .request import DeployError
from .rewrites import pad_channels

__all__ = [
    "seeded",
    "resolve",
    "prepare",
    "quiet",
    "RuntimeModule",
    "structure",
    "is_deformable",
    "in_batches_of",
    "AsModule",
]


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """torch's global RNG seeded inside, and the caller's state put back after: random weights
    that are the same on every call, without touching the caller's random stream."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def resolve(model: Any, seed: int = 0) -> nn.Module:
    """``model`` as a built module: a module is returned as it is; a spec, preset name, path or
    mapping is built once (random weights from ``seed``, for timing and checking)."""
    if isinstance(model, nn.Module):
        return model
    if not isinstance(model, (str, Path, Mapping)) and type(model).__name__ != "Spec":
        raise DeployError(
            f"model: give a built DLA module, a spec or a preset name (got {type(model).__name__})"
        )
    from ..backends.torch.interpret import build_module

    with seeded(seed):
        return build_module(model).eval()


def prepare(model: nn.Module, pad: int | None = None) -> nn.Module:
    """A folded, channels_last, eval-mode copy of ``model``, its levels' channels padded to a
    multiple of ``pad`` where they are not (:func:`.pad_channels`)."""
    from ..nn.modules import fold_batchnorm

    if model.training:
        raise DeployError(
            "deployment folds BatchNorm's running statistics: call model.eval() first"
        )
    net = (pad and pad_channels(model, pad)) or copy.deepcopy(model).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    fold_batchnorm(net)  # CenterNet's DeformConv too
    return net.to(memory_format=torch.channels_last)


# torch logs one warning from each on first use, about nothing a CPU user can act on: torchao's
# import (an Enum registered with pytree) and inductor's first C++ build ("No CUDA runtime")
_NOISY_LOGGERS = ("torch.utils._pytree", "torch.utils.cpp_extension")


@contextlib.contextmanager
def quiet(streams: bool = True) -> Iterator[None]:
    """The toolchains' notices, warnings and progress bars (not ours to print); ``streams=False``
    leaves stdout and stderr alone (around a compiled model's calls)."""
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.ERROR)
    try:
        with contextlib.ExitStack() as stack:
            if streams:
                stack.enter_context(warnings.catch_warnings())
                warnings.simplefilter("ignore")
                stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
                stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
            yield
    finally:
        for log, level in zip(loggers, levels, strict=True):
            log.setLevel(level)


def is_deformable(m: nn.Module) -> bool:
    # by structure, so the generated classes' own copies of DCN count too
    return type(m).__name__ == "DCN" and hasattr(m, "conv_offset_mask")


def structure(model: nn.Module, x: torch.Tensor) -> Any:
    """The output structure of ``model`` (for :class:`RuntimeModule`)."""
    with torch.inference_mode():
        return tree_flatten(model(x))[1]


class RuntimeModule(nn.Module):
    """A compiled runtime model with the module's interface: a float32 NCHW batch in, the
    original model's output structure (a tensor, a dict of head outputs, ...) out."""

    def __init__(
        self,
        run: Callable[[Any], Sequence[Any]],
        structure: Any,
        backend: str,
        precision: str,
        report: Any = None,
        image_shape: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__()
        self._run, self._structure = run, structure
        self.backend, self.precision, self.report = backend, precision, report
        self.image_shape = image_shape  # (C, H, W) it was built for; any batch size
        self.training = False

    def forward(self, x: torch.Tensor) -> Any:
        if self.image_shape is not None and (
            not isinstance(x, torch.Tensor)
            or x.dim() != 4
            or tuple(x.shape[1:]) != self.image_shape
        ):
            want = " x ".join(map(str, self.image_shape))
            got = " x ".join(map(str, x.shape)) if isinstance(x, torch.Tensor) else type(x).__name__
            raise DeployError(
                f"this {self.backend} module was built for N x {want} batches (got {got}): "
                "optimize again with an example_input of the size you will run"
            )
        outs = self._run(x.detach().to(torch.float32).contiguous().numpy())
        return tree_unflatten([torch.from_numpy(o) for o in outs], self._structure)

    def train(self, mode: bool = True) -> RuntimeModule:
        if mode:
            raise DeployError(f"a {self.backend} module is for inference only")
        return self

    def extra_repr(self) -> str:
        return f"backend={self.backend}, precision={self.precision}"


def runtime_input(net: nn.Module, request: Any, who: str) -> torch.Tensor:
    """The batch a runtime builds for, every given batch checked against ``net`` first."""
    check = request.check_batches(net)  # the example and the first calibration batch
    for i, b in enumerate((request.calibration or ())[1:], start=1):
        check(b, f"calibration[{i}]")
    if request.example is None and not request.calibration:
        shape = default_shape(net)
        if shape is not None:
            return torch.zeros(1, *shape)
    return request.batch(who).float().contiguous()


def default_shape(net: nn.Module) -> tuple[int, int, int] | None:
    """(C, H, W) of the image a model is meant for: its spec's ``input_size``, else the smallest
    square from 224 it takes; a generated class's ``pretrained_cfg``; None if it says neither."""
    from ..ir.analysis import default_input_size

    dag = getattr(net, "dag", None)
    if dag is not None:
        return (dag.graph["in_channels"], *default_input_size(dag))
    cfg = getattr(net, "pretrained_cfg", None)
    size = cfg.get("input_size") if isinstance(cfg, dict) else None
    if isinstance(size, list | tuple) and len(size) == 3 and all(isinstance(v, int) for v in size):
        return tuple(size)  # type: ignore[return-value]
    return None


class AsModule(nn.Module):
    """A function with a module's interface (``eval()``, ``__call__``), in eval mode: what a
    metric function is handed, whatever runs the artifact."""

    def __init__(self, fn: Callable[[torch.Tensor], Any]) -> None:
        super().__init__()
        self.fn = fn
        self.training = False

    def forward(self, x: torch.Tensor) -> Any:
        return self.fn(x)


def in_batches_of(run: Callable[[torch.Tensor], Any], n: int) -> nn.Module:
    """``run`` (an artifact of batch ``n``) for any batch, as a module: in batches of ``n``, the
    last filled with copies of its last image whose outputs are dropped (so every image counts
    once)."""

    def call(x: torch.Tensor) -> Any:
        flat, spec = [], None
        for i in range(0, len(x), n):
            xb = x[i : i + n]
            k = len(xb)
            if k < n:
                xb = torch.cat([xb, xb[-1:].expand(n - k, *xb.shape[1:])])
            leaves, spec = tree_flatten(run(xb))
            flat.append([torch.as_tensor(t)[:k] for t in leaves])
        return tree_unflatten([torch.cat(ts) for ts in zip(*flat, strict=True)], spec)

    return AsModule(call)
