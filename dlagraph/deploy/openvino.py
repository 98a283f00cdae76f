"""OpenVINO: the runtime ``openvino`` (``dlagraph.optimize(..., backend="openvino")``) and the
export format ``openvino`` (IR: ``NAME.xml`` + ``NAME.bin``). The folded DLA is converted by
``openvino.convert_model``; int8 by NNCF's post-training quantization. The ``deploy`` extra."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .prepare import RuntimeModule, prepare, quiet, runtime_input, structure
from .registry import get_runtime
from .request import DeployError, DeployRequest

__all__ = ["openvino_model", "compile_openvino", "build", "make"]


def openvino_model(
    model: nn.Module,
    example: torch.Tensor,
    dynamic_batch: bool = False,
    calibration: Iterable[torch.Tensor] | None = None,
) -> Any:
    """The ``openvino.Model`` of ``model`` (converted by ``openvino.convert_model``), int8 by
    NNCF's post-training quantization when ``calibration`` batches are given."""
    import openvino as ov

    shape = [-1 if dynamic_batch else example.shape[0], *example.shape[1:]]
    with quiet(), torch.no_grad():
        ov_model = ov.convert_model(model, example_input=example, input=[tuple(shape)])
    if calibration is None:
        return ov_model
    import nncf

    nncf.set_log_level(logging.ERROR)  # its INFO lines go to the stream it was imported with
    batches = [b.to(torch.float32).numpy() for b in calibration]
    if not batches:
        raise DeployError("int8 needs at least one calibration batch")
    with quiet():
        # the stem conv stays in fp32, as in ONNX Runtime's int8 (and for the same measured reason)
        stem = [
            op.get_friendly_name()
            for op in ov_model.get_ordered_ops()
            if op.get_type_name() == "Convolution"
            and op.input_value(0).get_node().get_type_name() == "Parameter"
        ]
        # subset_size counts dataset items (our batches), not images
        return nncf.quantize(
            ov_model,
            nncf.Dataset(batches),
            subset_size=len(batches),
            ignored_scope=nncf.IgnoredScope(names=stem, validate=False),
            # full bias correction: the fast one left a trained digits classifier 0.56 points
            # below fp32 (0.9778 vs 0.9833 on 360 images), the full one at fp32's
            fast_bias_correction=False,
        )


def compile_openvino(
    ov_model: Any, threads: int | None = None, precision_hint: str | None = "f32"
) -> Callable[[Any], list[Any]]:
    """A function running ``ov_model`` on the CPU (latency hint, ``threads`` threads). The
    precision hint is explicit: on a CPU with native bf16, OpenVINO would otherwise run an fp32
    model in bf16."""
    import openvino as ov

    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
    if precision_hint:
        config["INFERENCE_PRECISION_HINT"] = precision_hint
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = ov.Core().compile_model(ov_model, "CPU", config)
    request = compiled.create_infer_request()
    n = len(compiled.outputs)

    def run(x: Any) -> list[Any]:
        request.infer({0: x}, share_inputs=True)
        return [request.get_output_tensor(i).data.copy() for i in range(n)]

    return run


def build(model: nn.Module, request: DeployRequest) -> RuntimeModule:
    """The runtime ``openvino``: any batch size, at the request's image size."""
    from .pytorch import warn_emulated_bf16

    report = request.report()
    pad = get_runtime("openvino").padding(request.precision, request.rewrites)
    with report.step("fold BN"):
        net = prepare(model, pad).to(memory_format=torch.contiguous_format)
    if getattr(net, "channels_padded_to", None):
        report.notes.append(f"levels' channels padded to multiples of {net.channels_padded_to}")
    x = runtime_input(net, request, "backend='openvino'")
    if request.precision == "bf16":
        warn_emulated_bf16()
    with report.step("convert" if request.precision != "int8" else "convert + NNCF int8"):
        ov_model = openvino_model(net, x, dynamic_batch=True, calibration=request.calibration)
    hint = {"bf16": "bf16", "fp32": "f32"}.get(request.precision)
    with report.step("compile"):
        run = compile_openvino(ov_model, request.threads, hint)
    shape = tuple(x.shape[1:])
    return RuntimeModule(run, structure(net, x[:1]), "openvino", request.precision, report, shape)


def make(net: nn.Module, x: torch.Tensor, request: DeployRequest, dynamic: bool, tmp: Path) -> Any:
    """The format ``openvino``: the IR as written, read back and run in fp32."""
    import openvino as ov

    ov_model = openvino_model(net, x, dynamic, request.calibration)
    tmp.mkdir(parents=True, exist_ok=True)
    xml = tmp / "model.xml"
    ov.save_model(ov_model, str(xml), compress_to_fp16=False)
    files = {".xml": xml.read_bytes(), ".bin": xml.with_suffix(".bin").read_bytes()}
    run = compile_openvino(ov.Core().read_model(str(xml)))
    return files, RuntimeModule(run, structure(net, x), "openvino", request.precision)
