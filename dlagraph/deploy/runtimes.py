"""OpenVINO and ONNX Runtime behind the module interface: ``dlagraph.optimize(..., backend=
"openvino" | "onnxruntime")`` and ``dlagraph export`` convert a folded DLA with each runtime's own
toolchain (OpenVINO's ``convert_model`` and NNCF for int8; ``torch.onnx`` with the dynamo
exporter and ONNX Runtime's static QDQ quantization for int8), and :class:`RuntimeModule` runs the
result: tensors in, the same output structure out. Both are the ``deploy`` extra; a missing one is
one line naming it."""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten, tree_unflatten

from ..errors import DlagraphError

__all__ = [
    "RuntimeModule",
    "openvino_model",
    "compile_openvino",
    "onnx_bytes",
    "quantize_onnx",
    "onnxruntime_session",
    "need",
]

EXTRA = "pip install 'dlagraph[deploy]'"


def need(module: str, what: str) -> Any:
    """Import a runtime package, or one line naming the extra that brings it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise DlagraphError(f"{what} needs {module.split('.')[0]}: {EXTRA}") from None


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
    ) -> None:
        super().__init__()
        self._run, self._structure = run, structure
        self.backend, self.precision, self.report = backend, precision, report
        self.training = False

    def forward(self, x: torch.Tensor) -> Any:
        outs = self._run(x.detach().to(torch.float32).contiguous().numpy())
        return tree_unflatten([torch.from_numpy(o) for o in outs], self._structure)

    def train(self, mode: bool = True) -> RuntimeModule:
        if mode:
            raise DlagraphError(f"a {self.backend} module is for inference only")
        return self

    def extra_repr(self) -> str:
        return f"backend={self.backend}, precision={self.precision}"


def structure(model: nn.Module, x: torch.Tensor) -> tuple[Any, list[torch.Tensor]]:
    """The output structure of ``model`` (for :class:`RuntimeModule`) and its flat outputs."""
    with torch.inference_mode():
        flat, spec = tree_flatten(model(x))
    return spec, flat


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The converters' and quantizers' progress bars and notices: not ours to print."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield


# --- OpenVINO -------------------------------------------------------------------------------


def openvino_model(
    model: nn.Module,
    example: torch.Tensor,
    dynamic_batch: bool = False,
    calibration: Iterable[torch.Tensor] | None = None,
) -> Any:
    """The ``openvino.Model`` of ``model`` (converted by ``openvino.convert_model``), int8 by
    NNCF's post-training quantization when ``calibration`` batches are given."""
    ov = need("openvino", "the OpenVINO backend")
    shape = [-1 if dynamic_batch else example.shape[0], *example.shape[1:]]
    with _quiet(), torch.no_grad():
        ov_model = ov.convert_model(model, example_input=example, input=[tuple(shape)])
    if calibration is not None:
        nncf = need("nncf", "OpenVINO int8")
        nncf.set_log_level(logging.ERROR)  # its INFO lines go to the stream it was imported with
        batches = [b.to(torch.float32).numpy() for b in calibration]
        if not batches:
            raise DlagraphError("int8 needs at least one calibration batch")
        with _quiet():
            # the stem conv stays in fp32, as in quantize_onnx (and for the same measured reason)
            stem = [
                op.get_friendly_name()
                for op in ov_model.get_ordered_ops()
                if op.get_type_name() == "Convolution"
                and op.input_value(0).get_node().get_type_name() == "Parameter"
            ]
            # subset_size counts dataset items (our batches), not images
            ov_model = nncf.quantize(
                ov_model,
                nncf.Dataset(batches),
                subset_size=len(batches),
                ignored_scope=nncf.IgnoredScope(names=stem, validate=False),
                # full bias correction: the fast one left a trained digits classifier 0.56
                # points below fp32 (0.9778 vs 0.9833 on 360 images), the full one at fp32's
                fast_bias_correction=False,
            )
    return ov_model


def compile_openvino(
    ov_model: Any, threads: int | None = None, precision_hint: str | None = "f32"
) -> Callable[[Any], list[Any]]:
    """A function running ``ov_model`` on the CPU (latency hint, ``threads`` threads). The
    precision hint is explicit: on a CPU with native bf16, OpenVINO would otherwise run an fp32
    model in bf16."""
    ov = need("openvino", "the OpenVINO backend")
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


# --- ONNX and ONNX Runtime ------------------------------------------------------------------


def onnx_bytes(model: nn.Module, example: torch.Tensor, dynamic_batch: bool = False) -> bytes:
    """``model`` as ONNX (torch.onnx's dynamo exporter, weights inside the one file)."""
    need("onnxscript", "ONNX export")
    dynamic = {"x": {0: torch.export.Dim("batch", min=1, max=4096)}} if dynamic_batch else None
    with tempfile.TemporaryDirectory() as d, _quiet(), torch.no_grad():
        path = Path(d) / "model.onnx"
        program = torch.onnx.export(
            _Named(model),
            (example,),
            dynamo=True,
            dynamic_shapes=dynamic,
            input_names=["x"],
            external_data=False,
        )
        program.save(str(path), external_data=False)
        return path.read_bytes()


class _Named(nn.Module):
    """The input named ``x`` for the exporter's dynamic shapes."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> Any:
        return self.model(x)


def quantize_onnx(data: bytes, calibration: Iterable[torch.Tensor]) -> bytes:
    """int8 ONNX by ONNX Runtime's static quantization (QDQ, per-channel weights)."""
    ort_q = need("onnxruntime.quantization", "ONNX int8")
    batches = [b.to(torch.float32).numpy() for b in calibration]
    if not batches:
        raise DlagraphError("int8 needs at least one calibration batch")

    class Reader(ort_q.CalibrationDataReader):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            self.it = iter({"x": b} for b in batches)

        def get_next(self) -> Any:
            return next(self.it, None)

    with tempfile.TemporaryDirectory() as d, _quiet():
        src, pre, dst = (Path(d) / n for n in ("m.onnx", "pre.onnx", "q.onnx"))
        src.write_bytes(data)
        try:  # shape inference and graph clean-up, as ONNX Runtime recommends before quantizing
            from onnxruntime.quantization.shape_inference import quant_pre_process

            quant_pre_process(str(src), str(pre))
        except Exception:  # optional: quantize the model as exported
            pre = src
        # the stem conv, which reads the image, stays in fp32: quantized (the image per tensor,
        # its weights per channel) it cost 8 points of accuracy on digits, with any calibration
        # method; without it int8 is within 0.5 points (tests/test_export.py)
        import onnx

        graph = onnx.load(str(pre)).graph
        inputs = {i.name for i in graph.input}
        stem = [n.name for n in graph.node if n.op_type == "Conv" and n.input[0] in inputs]
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
    ort = need("onnxruntime", "the ONNX Runtime backend")
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
