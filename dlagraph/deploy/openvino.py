"""OpenVINO: the runtime ``openvino`` (``dlagraph.optimize(..., backend="openvino")``) and the
export format ``openvino`` (IR: ``NAME.xml`` + ``NAME.bin``). The folded DLA is converted by
``openvino.convert_model``; int8 by NNCF's post-training quantization. The ``deploy`` extra."""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..base.errors import DlagraphWarning, users_stacklevel
from .accuracy import MAX_DROP, AccuracyCheck, Metric
from .prepare import RuntimeModule, prepare, quiet, runtime_input, structure
from .registry import get_runtime
from .request import DeployError, DeployRequest

__all__ = ["openvino_model", "compile_openvino", "build", "make"]


def openvino_model(
    model: nn.Module,
    example: torch.Tensor,
    dynamic_batch: bool = False,
    calibration: Iterable[torch.Tensor] | None = None,
    metric: Metric | None = None,
    max_drop: float = MAX_DROP,
) -> Any:
    """The ``openvino.Model`` of ``model`` (converted by ``openvino.convert_model``), int8 by
    NNCF's post-training quantization with its defaults when ``calibration`` batches are given;
    with a ``metric``, by NNCF's accuracy control, which keeps the layers int8 costs most in
    floating point until the metric is within ``max_drop`` of fp32's."""
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
    dataset = nncf.Dataset(batches)
    # NNCF's defaults but full bias correction: measured on two trained digits classifiers, the
    # fast correction left one 0.83 points below fp32 (0.9750 vs 0.9833; full: 0.9806) and the
    # other at fp32 either way; it changes only the biases, so it costs calibration time, not
    # inference time. The stem conv is quantized (in fp32 it cost 4% of DLA-36's int8 time);
    # what int8 may cost beyond that is measured (``metric``), not assumed by a fixed rule.
    # subset_size counts dataset items (our batches), not images
    with quiet():
        if metric is None:
            return nncf.quantize(
                ov_model, dataset, subset_size=len(batches), fast_bias_correction=False
            )
        structure_ = structure(model, example[:1])

        def validate(compiled: Any, items: Iterable[Any]) -> tuple[float, list[float]]:
            run = module_of_compiled(compiled, structure_)
            values = [metric.of_item(run, item) for item in items]
            # a function metric is one item, the whole: measured once (it may take minutes)
            whole = values[0] if metric.items is None else _mean_top1(metric, values, items)
            return whole, values

        return nncf.quantize_with_accuracy_control(
            ov_model,
            dataset,
            nncf.Dataset(metric.dataset_items()),
            validate,
            max_drop=max_drop,
            drop_type=nncf.DropType.ABSOLUTE,
            subset_size=len(batches),
            fast_bias_correction=False,
        )


def _mean_top1(metric: Metric, values: list[float], items: Iterable[Any]) -> float:
    """Top-1 over all images from each batch's top-1 (batches may differ in size)."""
    sizes = [len(y) for _, y in items]
    return sum(v * n for v, n in zip(values, sizes, strict=True)) / max(sum(sizes), 1)


def module_of_compiled(compiled: Any, structure_: Any) -> RuntimeModule:
    """An ``openvino.CompiledModel`` as a module (what a metric function is given)."""
    request = compiled.create_infer_request()
    n = len(compiled.outputs)

    def run(x: Any) -> list[Any]:
        request.infer({0: x}, share_inputs=True)
        return [request.get_output_tensor(i).data.copy() for i in range(n)]

    return RuntimeModule(run, structure_, "openvino", "int8")


_LAYERS = ("Convolution", "GroupConvolution", "MatMul")  # what NNCF quantizes and restores
# ops that carry int8 through unchanged: NNCF quantizes a max-pool's or a concat's inputs (with
# one scale for all of a concat's: its unified scales), not their output
_TRANSPARENT = {"MaxPool", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Pad", "Concat"}


def _quantized(node: Any) -> bool:
    kind = node.get_type_name()
    if kind == "FakeQuantize":
        return True
    if kind not in _TRANSPARENT:
        return False
    inputs = range(node.get_input_size()) if kind == "Concat" else [0]
    return all(_quantized(node.input_value(i).get_node()) for i in inputs)


def float_layers(ov_model: Any) -> list[str]:
    """The modules whose convolutions read no quantized input in ``ov_model`` (names as in the
    state_dict: the friendly names of torch's converter carry the module path)."""
    out = []
    for op in ov_model.get_ordered_ops():
        if op.get_type_name() not in _LAYERS:
            continue
        # the activation input: a quantized weight alone does not make the op int8
        if not _quantized(op.input_value(0).get_node()):
            name = op.get_friendly_name()
            found = re.match(r"__module\.([^/]+)/", name)
            out.append(found.group(1) if found else name)
    return out


def _every_layer_float(ov_model: Any, floats: list[str]) -> bool:
    """Whether NNCF's accuracy control restored every layer (the model is fp32, not int8)."""
    convs = [o for o in ov_model.get_ordered_ops() if o.get_type_name() in _LAYERS]
    return bool(floats) and len(floats) == len(convs)


def compile_openvino(
    ov_model: Any, threads: int | None = None, precision_hint: str | None = "f32"
) -> Callable[[Any], list[Any]]:
    """A function running ``ov_model`` on the CPU (latency hint, ``threads`` threads). The
    precision hint is explicit: on a CPU with native bf16, OpenVINO would otherwise run an fp32
    model in bf16. (A static shape per batch size was measured against the dynamic batch:
    within 1% on DLA-36's int8, so one compiled model serves every batch size.)"""
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
    step = "convert"
    if request.precision == "int8":
        step += " + NNCF int8" + (" (accuracy control)" if request.validation else "")
    with report.step(step):
        ov_model = openvino_model(
            net, x, True, request.calibration, request.validation, request.max_drop
        )
    if request.precision == "int8":
        report.float_modules = float_layers(ov_model)
        if _every_layer_float(ov_model, report.float_modules):
            report.notes.append("every layer in floating point: int8 could not meet max_drop")
            warnings.warn(
                "int8 on openvino: NNCF's accuracy control kept every layer in floating point "
                f"to meet max_drop {request.max_drop:g}: this model is fp32; raise max_drop or "
                "use precision='fp32'",
                DlagraphWarning,
                stacklevel=users_stacklevel(),
            )
    hint = {"bf16": "bf16", "fp32": "f32"}.get(request.precision)
    with report.step("compile"):
        run = compile_openvino(ov_model, request.threads, hint)
    shape = tuple(x.shape[1:])
    built = RuntimeModule(run, structure(net, x[:1]), "openvino", request.precision, report, shape)
    metric = request.validation
    if request.precision == "int8" and metric is not None:
        with report.step("validate"):  # the model as compiled, what the caller gets
            report.accuracy = AccuracyCheck(
                metric.name, metric.fp32(lambda: net), metric(built), request.max_drop
            )
    return built


def make(net: nn.Module, x: torch.Tensor, request: DeployRequest, dynamic: bool, tmp: Path) -> Any:
    """The format ``openvino``: the IR as written, read back and run in fp32."""
    import openvino as ov

    # accuracy control runs its validation batches (any size) on the model it quantizes: that
    # model takes any batch, and is then fixed to the artifact's
    measured = request.validation is not None
    ov_model = openvino_model(
        net, x, dynamic or measured, request.calibration, request.validation, request.max_drop
    )
    if measured and not dynamic:
        ov_model.reshape({0: list(x.shape)})
    report = request.report()
    if request.precision == "int8":
        report.float_modules = float_layers(ov_model)
        if measured and _every_layer_float(ov_model, report.float_modules):
            raise DeployError(
                "int8: NNCF's accuracy control kept every layer in floating point to meet "
                f"max_drop {request.max_drop:g}: not an int8 model, not written; raise "
                "max_drop, or export fp32"
            )
    tmp.mkdir(parents=True, exist_ok=True)
    xml = tmp / "model.xml"
    ov.save_model(ov_model, str(xml), compress_to_fp16=False)
    files = {".xml": xml.read_bytes(), ".bin": xml.with_suffix(".bin").read_bytes()}
    run = compile_openvino(ov.Core().read_model(str(xml)))
    return files, RuntimeModule(run, structure(net, x), "openvino", request.precision, report)
