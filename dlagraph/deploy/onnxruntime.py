"""ONNX and ONNX Runtime: the runtime ``onnxruntime`` (``dlagraph.optimize(...,
backend="onnxruntime")``) and the export format ``onnx``. The folded DLA is exported by
``torch.onnx``'s dynamo exporter; int8 by ONNX Runtime's static QDQ quantization. The ``deploy``
extra."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .accuracy import AccuracyCheck
from .check import MAX_ERROR, compare
from .prepare import RuntimeModule, in_batches_of, prepare, quiet, runtime_input, structure
from .request import DeployError, DeployRequest

__all__ = ["onnx_bytes", "quantize_onnx", "onnxruntime_session", "build", "make"]


class Named(nn.Module):
    """The input named ``x`` for the exporters' dynamic shapes."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> Any:
        return self.model(x)


def onnx_bytes(model: nn.Module, example: torch.Tensor, dynamic_batch: bool = False) -> bytes:
    """``model`` as ONNX (torch.onnx's dynamo exporter, weights inside the one file)."""
    dynamic = {"x": {0: torch.export.Dim("batch", min=1, max=4096)}} if dynamic_batch else None
    with tempfile.TemporaryDirectory() as d, quiet(), torch.no_grad():
        path = Path(d) / "model.onnx"
        program = torch.onnx.export(
            Named(model),
            (example,),
            dynamo=True,
            dynamic_shapes=dynamic,
            input_names=["x"],
            external_data=False,
        )
        program.save(str(path), external_data=False)
        return path.read_bytes()


def quantize_onnx(
    data: bytes, calibration: Iterable[torch.Tensor], stem_in_float: bool = True
) -> bytes:
    """int8 ONNX by ONNX Runtime's static quantization (QDQ, per-channel weights); the stem conv
    in fp32 unless ``stem_in_float`` is False."""
    import onnx
    import onnxruntime.quantization as ort_q

    batches = [b.to(torch.float32).numpy() for b in calibration]
    if not batches:
        raise DeployError("int8 needs at least one calibration batch")

    class Reader(ort_q.CalibrationDataReader):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            self.it = iter({"x": b} for b in batches)

        def get_next(self) -> Any:
            return next(self.it, None)

    with tempfile.TemporaryDirectory() as d, quiet():
        src, pre, dst = (Path(d) / n for n in ("m.onnx", "pre.onnx", "q.onnx"))
        src.write_bytes(data)
        try:  # shape inference and graph clean-up, as ONNX Runtime recommends before quantizing
            from onnxruntime.quantization.shape_inference import quant_pre_process

            quant_pre_process(str(src), str(pre))
        except Exception:  # optional: quantize the model as exported
            pre = src
        # by default the stem conv, which reads the image, stays in fp32: quantized (the image per
        # tensor, its weights per channel) it cost 8 points of accuracy on digits, with any
        # calibration method; without it int8 is within 0.5 points (tests/test_export.py). With
        # a validation metric, build() measures instead (all int8 first)
        graph = onnx.load(str(pre)).graph
        inputs = {i.name for i in graph.input}
        stem = [n.name for n in graph.node if n.op_type == "Conv" and n.input[0] in inputs]
        stem = stem if stem_in_float else []
        ort_q.quantize_static(
            str(pre),
            str(dst),
            Reader(),
            nodes_to_exclude=stem,
            quant_format=ort_q.QuantFormat.QDQ,
            per_channel=True,
            activation_type=ort_q.QuantType.QUInt8,
            weight_type=ort_q.QuantType.QInt8,
        )
        return dst.read_bytes()


def onnxruntime_session(data: bytes, threads: int | None = None) -> Callable[[Any], list[Any]]:
    """A function running the ONNX model ``data`` with ONNX Runtime's CPU provider."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(x: Any) -> list[Any]:
        return session.run(None, {name: x})

    return run


def build(model: nn.Module, request: DeployRequest) -> RuntimeModule:
    """The runtime ``onnxruntime``: any batch size, at the request's image size. No rewrites:
    padding and split roots were both slower here (docs/deployment.md)."""
    report = request.report()
    with report.step("fold BN"):
        net = prepare(model).to(memory_format=torch.contiguous_format)
    x = runtime_input(net, request, "backend='onnxruntime'")
    with report.step("export ONNX"):
        blob = onnx_bytes(net, x, dynamic_batch=True)
    shape, out = tuple(x.shape[1:]), structure(net, x[:1])
    if request.precision == "int8" and request.validation is not None:
        return _measured_int8(net, blob, request, report, out, shape)
    if request.precision == "int8":
        with report.step("quantize (QDQ)"):
            blob = quantize_onnx(blob, request.calibration or ())
        report.float_modules = _stem(net)
        report.notes.append("stem conv in fp32 (no validation metric to measure it by)")
    with report.step("session"):
        run = onnxruntime_session(blob, request.threads)
    return RuntimeModule(run, out, "onnxruntime", request.precision, report, shape)


def _stem(net: nn.Module) -> list[str]:
    """The conv that reads the image, by its module name (the first conv of the network)."""
    return next(([n] for n, m in net.named_modules() if isinstance(m, nn.Conv2d)), [])


def _measured_int8(
    net: nn.Module,
    blob: bytes,
    request: DeployRequest,
    report: Any,
    out: Any,
    shape: tuple[int, ...],
) -> RuntimeModule:
    """int8 with a validation metric: every conv int8 if that is within ``max_drop``, else the
    stem conv in fp32 (ONNX Runtime has no accuracy control of its own; the stem is the one
    layer measured to matter here); the report says which and what each measured."""
    metric = request.validation
    assert metric is not None
    with report.step("validate"):
        fp32 = metric(net)
    tried = []
    for stem_in_float in (False, True):
        with report.step("quantize (QDQ)" + " + stem fp32" * stem_in_float):
            data = quantize_onnx(blob, request.calibration or (), stem_in_float)
            run = onnxruntime_session(data, request.threads)
        built = RuntimeModule(run, out, "onnxruntime", "int8", report, shape)
        with report.step("validate" + " (stem fp32)" * stem_in_float):
            check = AccuracyCheck(metric.name, fp32, metric(built), request.max_drop)
        tried.append(check)
        if check.within:
            break
    report.accuracy = tried[-1]
    report.float_modules = _stem(net) if len(tried) == 2 else []
    if len(tried) == 2:
        report.notes.append(f"every conv int8: {tried[0]}")
    return built


def make(net: nn.Module, x: torch.Tensor, request: DeployRequest, dynamic: bool, tmp: Path) -> Any:
    """The format ``onnx``: one file, weights inside, run by ONNX Runtime. int8 with a
    validation metric: every conv int8 if that is within ``max_drop``, else the stem conv in fp32
    (as the runtime does)."""
    blob = onnx_bytes(net, x, dynamic)
    out, report = structure(net, x), request.report()
    if request.precision != "int8":
        run = onnxruntime_session(blob)
        return {".onnx": blob}, RuntimeModule(run, out, "onnxruntime", request.precision, report)
    metric = request.validation
    for stem_in_float in (False, True) if metric is not None else (True,):
        data = quantize_onnx(blob, request.calibration or (), stem_in_float)
        built = RuntimeModule(onnxruntime_session(data), out, "onnxruntime", "int8", report)
        report.float_modules = _stem(net) if stem_in_float else []
        if metric is None:
            break
        artifact = built if dynamic else in_batches_of(built, len(x))
        # a metric within budget does not make all-int8 right where its outputs stray from the
        # model's (a small set's score may even rise by chance): faithful first, on every image
        # at hand (calibration and validation: the artifact's check reads more of their kind)
        images = [
            *(request.calibration or ()),
            *(x for x, _ in metric.items or ()),
            *request.checked,
        ]
        images = images or [x]
        with torch.inference_mode():
            error = max(compare(net(xb), artifact(xb)).error for xb in images)
        if not stem_in_float and error > MAX_ERROR["int8"]:
            report.notes.append(
                f"every conv int8: relative error {error:.3g} > {MAX_ERROR['int8']}"
            )
            continue
        fp32 = metric.fp32(lambda: net)
        report.accuracy = AccuracyCheck(metric.name, fp32, metric(artifact), request.max_drop)
        if report.accuracy.within:
            break
    return {".onnx": data}, built
