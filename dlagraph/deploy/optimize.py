"""CPU deployment: one call turns a built DLA (interpreter or generated class) into a fast
inference module in fp32, bf16 or int8.

The steps, each measured on a 2-core AVX-512 machine (see benchmarks/RESULTS.md):

- fold every BatchNorm into its conv (CenterNet's ``DeformConv`` too) and go channels_last;
- bf16: bf16 weights and activations (as fast as autocast once compiled, and half the memory);
- int8: static post-training quantization through torchao's PT2E flow (``torch.export`` ->
  ``prepare_pt2e`` with ``X86InductorQuantizer`` -> calibrate -> ``convert_pt2e``), the
  maintained replacement of ``torch.ao.quantization``. Deformable convs stay in fp32;
- ``torch.compile`` (inductor, with weight freezing), which int8 needs to run its fused int8
  kernels at all, and which gains 3-10% in fp32 and bf16. Compiled, CenterNet's deformable convs
  are lowered to a gather + matmul that inductor fuses (:mod:`.deform`), 3-4x faster than
  torchvision's CPU kernel; their offsets are computed in fp32 in a bf16 network. Uncompiled, they
  run torchvision's op, in fp32.

The quantizer groups nodes into per-module partitions by the module path in each node's
``nn_module_stack``. A module called twice (the official blocks apply one ``self.relu`` twice)
then gives one partition with two outputs, and ``prepare_pt2e`` fails with "Input partition has
more than one output node" (timm's DLA fails the same way). :func:`_split_reused_modules` gives each
call its own partition: export already names the second call ``relu@1``.
"""

from __future__ import annotations

import copy
import logging
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.utils._pytree import tree_map

from ..errors import DlagraphError, DlagraphWarning, safe_repr
from ..system import cpu_description, native_bf16
from .deform import LoweredDCN
from .rewrites import pad_channels, padding, split_roots

__all__ = ["PRECISIONS", "OptimizedModule", "optimize"]

Precision = Literal["fp32", "bf16", "int8"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "int8")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "int8": torch.float32}


@dataclass
class OptimizeReport:
    """What :func:`optimize` did and how long each step took (seconds)."""

    precision: str
    compiled: bool
    steps: dict[str, float] = field(default_factory=dict)
    calibration_batches: int = 0
    float_modules: list[str] = field(default_factory=list)  # int8: left in floating point
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        steps = ", ".join(f"{k} {v:.1f} s" for k, v in self.steps.items())
        notes = "".join(f"; {note}" for note in self.notes)
        return f"{self.precision}{' + torch.compile' * self.compiled}: {steps}{notes}"


class OptimizedModule(nn.Module):
    """An inference-only module from :func:`optimize`: feed it float32 NCHW batches as you would
    the original model; it returns float32 outputs of the same structure (a tensor, a list of
    feature maps or CenterNet's dict).

    int8 modules are specialised to the image size they were calibrated at (any batch size
    works); fp32 and bf16 modules take any size, compiling once per new shape.
    """

    def __init__(
        self,
        inner: nn.Module,
        precision: str,
        report: OptimizeReport,
        image_shape: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__()
        self.inner = inner
        self.precision = precision
        self.report = report
        self.image_shape = image_shape  # (C, H, W) an int8 graph was exported for
        self._dtype = DTYPES[precision]

    def forward(self, x: torch.Tensor) -> Any:
        if self.image_shape is not None and tuple(x.shape[1:]) != self.image_shape:
            want, got = (" x ".join(map(str, s)) for s in (self.image_shape, x.shape[1:]))
            raise DlagraphError(
                f"this int8 module was calibrated on {want} images (got {got}): optimize again "
                "with calibration batches of the size you will run"
            )
        x = x.to(dtype=self._dtype, memory_format=torch.channels_last)
        with torch.no_grad(), _inductor_settings(), _quiet():
            out = self.inner(x)
        return tree_map(lambda t: t.float() if isinstance(t, torch.Tensor) else t, out)

    def train(self, mode: bool = True) -> OptimizedModule:
        if mode:
            raise DlagraphError(
                "an optimized module is for inference only: train the original model"
            )
        # not recursive: an exported (int8) graph refuses train()/eval() calls
        self.training = False
        return self


class _Float32(nn.Module):
    """Runs a submodule in float32 inside a bf16 network (torchvision's CPU ``deform_conv2d``
    has no bf16 kernel), casting back to the network's dtype."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x.float()).to(x.dtype)


# torch logs one warning from each on first use, about nothing a CPU user can act on: torchao's
# import (an Enum registered with pytree) and inductor's first C++ build ("No CUDA runtime")
_NOISY_LOGGERS = ("torch.utils._pytree", "torch.utils.cpp_extension")


@contextmanager
def _quiet() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for log, level in zip(loggers, levels, strict=True):
            log.setLevel(level)


@contextmanager
def _inductor_settings() -> Iterator[None]:
    # freezing turns the weights into constants, so inductor prepacks them (and folds the int8
    # weights' dequantization); it applies when a call compiles, hence around every call
    import torch._inductor.config as inductor_config

    with inductor_config.patch(freezing=True):
        yield


def optimize(
    model: nn.Module | Any,
    precision: Precision = "fp32",
    calibration: Iterable[torch.Tensor] | None = None,
    *,
    compile: bool = True,
    example_input: torch.Tensor | None = None,
    progress: Callable[[str, float | None], None] | None = None,
    rewrites: bool = True,
) -> OptimizedModule:
    """A copy of ``model`` ready for fast CPU inference in ``precision``.

    Args:
        model: a module from :func:`dlagraph.build_module` or a generated class (or any DLA
            built of dlagraph's blocks), or a spec / preset name (built with random weights, for
            benchmarks). The model itself is not changed.
        precision: ``"fp32"`` (BN folded, channels_last), ``"bf16"`` (also bf16 weights and
            activations) or ``"int8"`` (static post-training quantization, torchao PT2E with the
            x86 inductor quantizer).
        calibration: int8 only: an iterable of input batches (float32 NCHW tensors) from the
            training data; a few hundred images are enough. The first batch fixes the image size.
        compile: ``torch.compile`` the result (inductor). int8 without it runs the reference
            (dequantize -> fp32 op -> quantize) graph, which is exact but slow.
        example_input: a batch to compile with before returning (else the first call compiles;
            int8 compiles with its first calibration batch).
        progress: called as ``progress(step, None)`` when a step starts and
            ``progress(step, seconds)`` when it ends (the CLI shows them).
        rewrites: apply the rewrites measured to win (:mod:`dlagraph.deploy.rewrites`): when
            compiled, levels' channels padded to a multiple of 8 (fp32, int8) and each
            aggregation root's conv split per input (fp32); ``False`` for an A/B comparison.

    Returns:
        An :class:`OptimizedModule`; ``.report`` lists the steps and their times.

    Raises:
        DlagraphError: an unknown precision, int8 without calibration batches, or a model that
            is still training.
    """
    if precision not in PRECISIONS:
        raise DlagraphError(
            f"precision: must be one of {', '.join(PRECISIONS)} (got {safe_repr(precision)})"
        )
    if not isinstance(model, (nn.Module, str, Path, Mapping)) and type(model).__name__ != "Spec":
        raise DlagraphError(
            f"model: give a built DLA module, a spec or a preset name (got {type(model).__name__})"
        )
    if calibration is not None and precision != "int8":
        raise DlagraphError(f"calibration: only int8 is calibrated (precision is {precision!r})")
    report = OptimizeReport(precision, compile)
    say = progress or (lambda step, seconds: None)

    @contextmanager
    def step(name: str) -> Iterator[None]:
        say(name, None)
        start = time.perf_counter()
        with _quiet():
            yield
        report.steps[name] = time.perf_counter() - start
        say(name, report.steps[name])

    with step("fold BN"):
        # measured with compiled kernels only: uncompiled, nothing is padded
        net = _prepare(model, padding("torch", precision) if compile and rewrites else None)
    if getattr(net, "channels_padded_to", None):
        report.notes.append(f"levels' channels padded to multiples of {net.channels_padded_to}")
    check = _batch_checker(net)
    if example_input is not None:
        check(example_input, "example_input")
    if precision == "fp32" and compile and rewrites:
        # measured on DLA-36 (benchmarks/bench.py --rewrites): 1.09-1.14x in compiled fp32;
        # int8 0.94x, OpenVINO 0.89-1.08x, ONNX Runtime 0.85-0.94x, which keep the concat
        probe = example_input[:1] if example_input is not None else _probe(net)
        with step("split roots"):
            split = split_roots(net, probe)
        if split:
            report.notes.append("aggregation roots' convs split per input (no concat)")
        else:  # a network without aggregation roots
            del report.steps["split roots"]
    deformable = [name for name, m in net.named_modules() if _is_deformable(m)]
    if deformable and compile:
        _replace(net, deformable, LoweredDCN)
        report.notes.append(f"{len(deformable)} deformable conv(s) lowered to gather + matmul")
    first: torch.Tensor | None = example_input
    if precision == "bf16":
        _warn_emulated_bf16()
        net = _to_bf16(net, deformable, lowered=compile)
        if deformable:
            report.notes.append(
                "their offsets computed in fp32"
                if compile
                else f"{len(deformable)} deformable conv(s) kept in fp32"
            )
    elif precision == "int8":
        if calibration is None:
            raise DlagraphError(
                "int8 needs calibration batches: optimize(model, 'int8', calibration=[batch, ...]) "
                "with images from the training data (the CLI's --calibrate uses random inputs)"
            )
        report.float_modules = deformable
        if deformable:
            report.notes.append(f"{len(deformable)} deformable conv(s) kept in fp32")
        net, first, report.calibration_batches = _quantize(
            net, calibration, deformable, step, check
        )
    if compile:
        # dynamic=False: one graph per batch size, compiled in seconds. With a dynamic batch,
        # torch 2.14's inductor asserted wrong strides in a fused bf16 conv (1-channel input)
        net = torch.compile(net, dynamic=False)
        # every optimized DLA is one more cache entry of the same code (the fx module's
        # __call__): past dynamo's limit (8) later models would silently run uncompiled, so each
        # optimized model raises it by its own entries (one per batch size it meets, a few)
        torch._dynamo.config.recompile_limit += 4
    shape = tuple(first.shape[1:]) if precision == "int8" and first is not None else None
    out = OptimizedModule(net, precision, report, shape)
    out.training = False
    if compile and first is not None:
        with step("compile"):
            out(first)
    return out


def _probe(net: nn.Module) -> torch.Tensor:
    """A small input the network takes (four times its total stride a side)."""
    dag = getattr(net, "dag", None)
    if dag is None:
        return torch.zeros(0)
    side = 4 * dag.graph["total_stride"]
    return torch.zeros(1, dag.graph["in_channels"], side, side)


def _warn_emulated_bf16() -> None:
    """Say that bf16 is emulated on this CPU (measured: 3x slower than fp32 on an AVX2-only EPYC)
    instead of handing back a silently slower module; Python shows it once per calling line."""
    if native_bf16():
        return
    warnings.warn(
        f"bf16 on a CPU without native bf16 ({cpu_description()}): it is emulated and usually "
        "slower than fp32 here; use fp32, or int8 with calibration data",
        DlagraphWarning,
        stacklevel=3,
    )


def _prepare(model: nn.Module | Any, pad: int | None = None) -> nn.Module:
    """A folded, channels_last, eval-mode copy of ``model`` (built first if it is a spec), its
    levels' channels padded to a multiple of ``pad`` where they are not (:func:`.pad_channels`)."""
    from ..backends.torch.modules import fold_batchnorm

    if not isinstance(model, nn.Module):
        from ..backends.torch.interpret import build_module
        from ..spec import load_spec

        spec = model if not isinstance(model, str) else load_spec(model)
        model = build_module(spec).eval()
    if model.training:
        raise DlagraphError(
            "optimize folds BatchNorm's running statistics: call model.eval() first"
        )
    net = (pad and pad_channels(model, pad)) or copy.deepcopy(model).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    fold_batchnorm(net)  # CenterNet's DeformConv too
    return net.to(memory_format=torch.channels_last)


def _is_deformable(m: nn.Module) -> bool:
    # by structure, so the generated classes' own copies of DCN count too
    return type(m).__name__ == "DCN" and hasattr(m, "conv_offset_mask")


def _replace(net: nn.Module, names: list[str], wrap: Callable[[nn.Module], nn.Module]) -> None:
    for name in names:
        parent, _, leaf = name.rpartition(".")
        owner = net.get_submodule(parent) if parent else net
        setattr(owner, leaf, wrap(getattr(owner, leaf)))


def _to_bf16(net: nn.Module, deformable: list[str], lowered: bool) -> nn.Module:
    """bf16 weights; a lowered DCN keeps its offset conv in fp32, torchvision's op all of it."""
    net = net.to(torch.bfloat16)
    if lowered:
        for name in deformable:
            net.get_submodule(name).conv_offset_mask.float()
    else:
        _replace(net, deformable, _Float32)
    return net


def _split_reused_modules(gm: torch.fx.GraphModule) -> None:
    """Give every call of a reused module its own quantizer partition (see the module doc).

    ``torch.export`` keys each call's ``nn_module_stack`` entry uniquely (``...relu``,
    ``...relu@1``) but records the same module path for both; the quantizer partitions by path.
    """
    for node in gm.graph.nodes:
        stack = node.meta.get("nn_module_stack")
        if node.op != "call_function" or not stack:
            continue
        key = next(reversed(stack))
        path, cls = stack[key]
        _, at, call = key.rpartition("@")
        if at and call.isdigit():
            stack[key] = (f"{path}@{call}", cls)


def _batch_checker(net: nn.Module) -> Callable[..., None]:
    """A check of input batches for ``net``: a float NCHW tensor, not empty, finite, with the
    network's input channels and sides its total stride divides, of one size with the first."""
    dag = getattr(net, "dag", None)
    stride = dag.graph["total_stride"] if dag is not None else 1
    chans = dag.graph["in_channels"] if dag is not None else getattr(net, "in_chans", None)
    seen: list[tuple[int, ...]] = []

    def check(x: Any, name: str) -> None:
        if not isinstance(x, torch.Tensor):
            raise DlagraphError(f"{name}: must be a tensor (got {type(x).__name__})")
        shape = tuple(x.shape)
        if x.dim() != 4 or not x.is_floating_point():
            raise DlagraphError(f"{name}: must be a float NCHW batch (got {x.dtype} {list(shape)})")
        if 0 in shape:
            raise DlagraphError(f"{name}: is empty ({list(shape)})")
        if chans is not None and shape[1] != chans:
            raise DlagraphError(f"{name}: has {shape[1]} channels, the network takes {chans}")
        if shape[2] % stride or shape[3] % stride:
            raise DlagraphError(
                f"{name}: sides {shape[2]}x{shape[3]} are not multiples of the network's total "
                f"stride {stride}"
            )
        if seen and shape[1:] != seen[0]:
            raise DlagraphError(
                f"{name}: images of {shape[2]}x{shape[3]} after {seen[0][1]}x{seen[0][2]}; "
                "calibrate at one size"
            )
        if not torch.isfinite(x).all():
            raise DlagraphError(f"{name}: holds NaN or infinite values")
        if name.startswith("calibration"):
            seen.append(shape[1:])

    return check


def _quantize(
    net: nn.Module,
    calibration: Iterable[torch.Tensor],
    keep_float: list[str],
    step: Callable[[str], Any],
    check: Callable[..., None],
) -> tuple[nn.Module, torch.Tensor, int]:
    """Static int8 post-training quantization through torchao's PT2E flow."""
    try:
        with _quiet():
            import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    except ImportError:
        raise DlagraphError(
            "int8 needs torchao: pip install 'dlagraph[deploy]' (or pip install torchao)"
        ) from None
    try:
        batches = iter(calibration)
    except TypeError:
        raise DlagraphError(
            f"calibration: give an iterable of NCHW batches (got {type(calibration).__name__})"
        ) from None
    first = next(batches, None)
    if first is None:
        raise DlagraphError("calibration: holds no batches")
    check(first, "calibration[0]")
    first = first.float().contiguous(memory_format=torch.channels_last)
    with step("export"):
        # the batch dimension stays dynamic (export specialises a size of 1, hence two images);
        # the image size is fixed by the first batch
        two = first if first.shape[0] > 1 else first.expand(2, -1, -1, -1)
        batch = torch.export.Dim.AUTO
        gm = torch.export.export(net, (two,), dynamic_shapes=({0: batch},)).module()
        _split_reused_modules(gm)
    quantizer = xiq.X86InductorQuantizer()
    quantizer.set_global(xiq.get_default_x86_inductor_quantization_config())
    for name in keep_float:
        quantizer.set_module_name_qconfig(name, None)
    n = 0
    with step("calibrate"):
        prepared = prepare_pt2e(gm, quantizer)
        with torch.no_grad():
            for x in _chain(first, batches):
                if n:
                    check(x, f"calibration[{n}]")
                prepared(x.float().contiguous(memory_format=torch.channels_last))
                n += 1
    with step("convert"):
        converted = convert_pt2e(prepared)
    return converted, first, n


def _chain(first: torch.Tensor, rest: Iterator[torch.Tensor]) -> Iterator[torch.Tensor]:
    yield first
    yield from rest
