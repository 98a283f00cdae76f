"""PyTorch: the runtime ``torch`` (``dlagraph.optimize``'s default: a built DLA, interpreter or
generated class, as a fast inference module in fp32, bf16 or int8) and the export formats ``pt2``
(``torch.export``) and ``torchscript``.

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
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_map

from ..base.errors import DlagraphWarning
from ..base.system import cpu_description, native_bf16
from .deform import LoweredDCN
from .prepare import AsModule, is_deformable, prepare, quiet
from .registry import get_runtime
from .request import DeployError, DeployRequest, OptimizeReport, batch_checker
from .rewrites import dag_of, split_roots
from .timing import threads as torch_threads

__all__ = ["OptimizedModule", "build", "make_pt2", "make_torchscript"]

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "int8": torch.float32}


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
        threads: int | None = None,
    ) -> None:
        super().__init__()
        self.inner = inner
        self.threads = threads  # torch's threads while it runs (None: as they are)
        self.takes: tuple[int | None, int] = (None, 1)  # input channels and total stride
        self.precision = precision
        self.report = report
        self.image_shape = image_shape  # (C, H, W) an int8 graph was exported for
        self._dtype = DTYPES[precision]

    def forward(self, x: torch.Tensor) -> Any:
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            got = f"shape {list(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise DeployError(f"give an N x C x H x W batch (got {got})")
        chans, stride = self.takes
        if (
            (chans is not None and x.shape[1] != chans)
            or x.shape[2] % stride
            or x.shape[3] % stride
        ):
            raise DeployError(
                f"this network takes N x {chans} x H x W batches with sides that are multiples of "
                f"its total stride {stride} (got {' x '.join(map(str, x.shape))})"
            )
        if self.image_shape is not None and tuple(x.shape[1:]) != self.image_shape:
            want, got = (" x ".join(map(str, s)) for s in (self.image_shape, x.shape[1:]))
            raise DeployError(
                f"this int8 module was calibrated on {want} images (got {got}): optimize again "
                "with calibration batches of the size you will run"
            )
        x = x.to(dtype=self._dtype, memory_format=torch.channels_last)
        with (
            torch.no_grad(),
            _inductor_settings(),
            quiet(streams=False),
            torch_threads(self.threads),
        ):
            out = self.inner(x)
        return tree_map(lambda t: t.float() if isinstance(t, torch.Tensor) else t, out)

    def train(self, mode: bool = True) -> OptimizedModule:
        if mode:
            raise DeployError("an optimized module is for inference only: train the original model")
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


@contextmanager
def _inductor_settings() -> Iterator[None]:
    # freezing turns the weights into constants, so inductor prepacks them (and folds the int8
    # weights' dequantization); it applies when a call compiles, hence around every call
    import torch._inductor.config as inductor_config

    with inductor_config.patch(freezing=True):
        yield


def build(model: nn.Module, request: DeployRequest) -> OptimizedModule:
    """The runtime ``torch``: a copy of ``model`` ready for fast CPU inference.

    fp32: BN folded, channels_last; bf16: also bf16 weights and activations; int8: static
    post-training quantization (torchao PT2E with the x86 inductor quantizer), specialised to the
    first calibration batch's image size. ``request.compile``: ``torch.compile`` the result
    (inductor); int8 without it runs the reference (dequantize -> fp32 op -> quantize) graph,
    exact but slow. With ``request.rewrites``, when compiled: levels' channels padded to a
    multiple of 8 (fp32, int8) and each aggregation root's conv split per input (fp32).
    """
    precision, compile = request.precision, request.compile
    report = request.report(compile)
    pad = get_runtime("torch").padding(precision, compile and request.rewrites)
    with report.step("fold BN"), quiet(streams=False):
        # measured with compiled kernels only: uncompiled, nothing is padded
        net = prepare(model, pad)
    if getattr(net, "channels_padded_to", None):
        report.notes.append(f"levels' channels padded to multiples of {net.channels_padded_to}")
    check = request.check_batches(net)
    if precision == "fp32" and compile and request.rewrites:
        # measured on DLA-36 (benchmarks/bench.py --rewrites): 1.09-1.14x in compiled fp32;
        # int8 0.94x, OpenVINO 0.89-1.08x, ONNX Runtime 0.85-0.94x, which keep the concat
        with report.step("split roots"):
            # the DAG of the copy (padded: its own); a generated class's from its unfolded
            # weights, whose spec inference reads BatchNorm's tensors
            split = split_roots(net, getattr(net, "dag", None) or dag_of(model))
        if split:
            report.notes.append("aggregation roots' convs split per input (no concat)")
        else:  # a network without aggregation roots
            del report.steps["split roots"]
    deformable = [name for name, m in net.named_modules() if is_deformable(m)]
    if deformable and compile:
        _replace(net, deformable, LoweredDCN)
        report.notes.append(f"{len(deformable)} deformable conv(s) lowered to gather + matmul")
    first: torch.Tensor | None = request.example
    if precision == "bf16":
        warn_emulated_bf16()
        net = _to_bf16(net, deformable, lowered=compile)
        if deformable:
            report.notes.append(
                "their offsets computed in fp32"
                if compile
                else f"{len(deformable)} deformable conv(s) kept in fp32"
            )
    elif precision == "int8":
        report.float_modules = deformable
        if deformable:
            report.notes.append(f"{len(deformable)} deformable conv(s) kept in fp32")
        with quiet(streams=False):
            net, first, report.calibration_batches = quantize(
                net, request.calibration or (), deformable, report, check
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
    out = OptimizedModule(net, precision, report, shape, request.threads)
    dag = getattr(model, "dag", None)
    if dag is not None:  # what the network takes, checked before the compiled graph sees it
        out.takes = (dag.graph["in_channels"], dag.graph["total_stride"])
    out.training = False
    if compile and first is not None:
        with report.step("compile"):
            out(first)
    return out


def warn_emulated_bf16() -> None:
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


def quantize(
    net: nn.Module,
    calibration: Iterable[torch.Tensor],
    keep_float: list[str],
    report: OptimizeReport,
    check: Callable[..., None],
) -> tuple[nn.Module, torch.Tensor, int]:
    """Static int8 post-training quantization through torchao's PT2E flow."""
    try:
        with quiet(streams=False):
            import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    except ImportError:
        raise DeployError(
            "int8 needs torchao: pip install 'dlagraph[deploy]' (or pip install torchao)"
        ) from None
    try:
        batches = iter(calibration)
    except TypeError:
        raise DeployError(
            f"calibration: give an iterable of NCHW batches (got {type(calibration).__name__})"
        ) from None
    first = next(batches, None)
    if first is None:
        raise DeployError("calibration: holds no batches")
    check(first, "calibration[0]")
    first = first.float().contiguous(memory_format=torch.channels_last)
    with report.step("export"):
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
    with report.step("calibrate"):
        prepared = prepare_pt2e(gm, quantizer)
        with torch.no_grad():
            for x in _chain(first, batches):
                if n:
                    check(x, f"calibration[{n}]")
                prepared(x.float().contiguous(memory_format=torch.channels_last))
                n += 1
    with report.step("convert"):
        converted = convert_pt2e(prepared)
    return converted, first, n


def _chain(first: torch.Tensor, rest: Iterator[torch.Tensor]) -> Iterator[torch.Tensor]:
    yield first
    yield from rest


# --- the export formats ---------------------------------------------------------------------


def make_pt2(
    net: nn.Module, x: torch.Tensor, request: DeployRequest, dynamic: bool, tmp: Path
) -> Any:
    """The format ``pt2``: a ``torch.export`` program (int8: torchao's PT2E), run as loaded."""
    from .onnxruntime import Named

    dims = {"x": {0: torch.export.Dim("batch", min=1, max=4096)}} if dynamic else None
    model: nn.Module = Named(net)
    example = x
    if request.precision == "bf16":
        warn_emulated_bf16()
        model, example = model.to(torch.bfloat16), x.to(torch.bfloat16)
    if request.precision == "int8":
        keep = [n for n, m in net.named_modules() if is_deformable(m)]
        report = request.report()
        converted, _, _ = quantize(net, request.calibration or (), keep, report, batch_checker(net))
        model = Named(converted)
    with quiet(), torch.no_grad():
        program = torch.export.export(model, (example,), dynamic_shapes=dims)
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "model.pt2"
    torch.export.save(program, str(path))
    loaded = torch.export.load(str(path)).module()
    dtype = example.dtype

    def run(xb: torch.Tensor) -> Any:
        with torch.no_grad():
            return loaded(xb.to(dtype))

    made = AsModule(run)
    if request.precision == "int8":
        made.report = report
        report.float_modules = keep  # the deformable convs, in floating point
    return {".pt2": path.read_bytes()}, made


def make_torchscript(
    net: nn.Module, x: torch.Tensor, request: DeployRequest, dynamic: bool, tmp: Path
) -> Any:
    """The format ``torchscript``: traced and frozen, run as loaded."""
    model, example = net, x
    if request.precision == "bf16":
        warn_emulated_bf16()
        model, example = copy.deepcopy(net).to(torch.bfloat16), x.to(torch.bfloat16)
    with quiet(), torch.no_grad():
        traced = torch.jit.freeze(torch.jit.trace(model, example, strict=False).eval())
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "model.pt"
    traced.save(str(path))
    with quiet():  # torch 2.14 calls TorchScript deprecated: the format is still asked for
        loaded = torch.jit.load(str(path))

    def run(xb: torch.Tensor) -> Any:
        with torch.no_grad():
            return loaded(xb.to(example.dtype))

    return {".pt": path.read_bytes()}, run
