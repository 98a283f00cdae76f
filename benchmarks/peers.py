"""The rows ``bench.py --int8`` times, each built in a process of its own
(:func:`dlagraph.deploy.clock.isolated`): the peers by the plain code a user would write (timm's
model; ``openvino.convert_model`` + ``nncf.quantize`` with its defaults; ONNX Runtime's static
QDQ quantization with its defaults), and dlagraph's ``optimize``. Each maker returns the function
to time; every row of one table gets the same weights (a checkpoint file) and the same
calibration batches (a seed).

The peers use no dlagraph code beyond loading the weights into timm's model, so a row's time is
what the peer's own defaults give.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

__all__ = [
    "timm_fp32",
    "spec_eager",
    "plain_nncf",
    "plain_nncf_spec",
    "plain_nncf_module",
    "plain_ort_qdq",
    "plain_ort_qdq_module",
    "plain_openvino_fp32",
    "dlagraph_row",
]


def _threads(n: int) -> None:
    torch.set_num_threads(n)


def _calibration(batch: int, size: tuple[int, int], seed: int, n: int) -> list[np.ndarray]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 3, *size, generator=g).numpy() for _ in range(n)]


def _timm(name: str, weights: str | None) -> torch.nn.Module:
    import timm

    model = timm.create_model(name, pretrained=False).eval()
    if weights:
        model.load_state_dict(torch.load(weights, weights_only=True))
    return model


def _eager(
    model: torch.nn.Module, batch: int, size: tuple[int, int], threads: int
) -> Callable[[], Any]:
    _threads(threads)
    x = torch.randn(batch, 3, *size)

    def run() -> Any:
        with torch.inference_mode():
            return model(x)

    return run


def timm_fp32(
    name: str, weights: str | None, batch: int, size: tuple[int, int], threads: int
) -> Callable[[], Any]:
    """timm's model, fp32 eager, as ``timm.create_model`` gives it."""
    return _eager(_timm(name, weights), batch, size, threads)


def _model_of_spec(spec: str, weights: str | None) -> torch.nn.Module:
    """A network as its user has it (built by dlagraph: no timm model exists for it)."""
    import dlagraph

    model = dlagraph.build_module(spec).eval()
    if weights:
        model.load_state_dict(torch.load(weights, weights_only=True))
    return model


def spec_eager(
    spec: str, weights: str | None, batch: int, size: tuple[int, int], threads: int
) -> Callable[[], Any]:
    """The user's model, fp32 eager."""
    return _eager(_model_of_spec(spec, weights), batch, size, threads)


def _nncf_defaults(
    model: torch.nn.Module, x: torch.Tensor, batches: list[np.ndarray], dynamic: bool = False
) -> Any:
    """The three lines: convert, quantize with every default (compile is the caller's);
    ``dynamic``: any batch size."""
    import nncf
    import openvino as ov

    shape = [(-1, *x.shape[1:])] if dynamic else None
    with torch.no_grad():
        ov_model = ov.convert_model(model, example_input=x, input=shape)
    return nncf.quantize(ov_model, nncf.Dataset(batches))


def plain_nncf_spec(
    spec: str,
    weights: str | None,
    batch: int,
    size: tuple[int, int],
    threads: int,
    seed: int,
    n: int,
) -> Callable[[], Any]:
    """:func:`plain_nncf` of a network built by dlagraph (one timm has not: CenterNet)."""
    model = _model_of_spec(spec, weights)
    x = torch.randn(batch, 3, *size)
    run = _ov_compiled(_nncf_defaults(model, x, _calibration(batch, size, seed, n)), threads)
    xn = x.numpy()
    return lambda: run(xn)


def _reader(batches: list[np.ndarray]) -> Any:
    """ONNX Runtime's calibration reader over ``batches`` (input ``x``)."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.it = iter({"x": b} for b in batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    return Reader()


def _as_module(run: Callable[[np.ndarray], Any], model: torch.nn.Module, x: torch.Tensor) -> Any:
    """A runtime's function as the model's interface (its outputs in the model's structure),
    for scoring; plumbing only."""
    from dlagraph.deploy.prepare import RuntimeModule, structure

    return RuntimeModule(lambda a: list(run(a)), structure(model, x), "peer", "int8")


def plain_nncf_module(
    model: torch.nn.Module, x: torch.Tensor, calibration: list[torch.Tensor]
) -> Any:
    """The plain NNCF int8 of ``model`` at ``x``'s image size, any batch, for scoring."""
    import openvino as ov

    batches = [b.numpy() for b in calibration]
    compiled = ov.Core().compile_model(_nncf_defaults(model, x, batches, dynamic=True), "CPU")
    return _as_module(lambda a: compiled(a).values(), model, x)


def plain_ort_qdq_module(
    model: torch.nn.Module, x: torch.Tensor, calibration: list[torch.Tensor]
) -> Any:
    """ONNX Runtime's ``quantize_static`` defaults on ``model``, any batch, for scoring."""
    import onnxruntime as ort
    from onnxruntime.quantization import quantize_static

    folder = tempfile.mkdtemp(prefix="peer_ort_")
    fp32, int8 = os.path.join(folder, "m.onnx"), os.path.join(folder, "m_int8.onnx")

    # torch.onnx's default exporter (dynamo; the TorchScript one cannot export torchvision's
    # deform_conv2d); batch 2 as the example: a batch of 1 would be specialised
    example = torch.cat([x[:1], x[:1]])
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.onnx.export(model, (example,), input_names=["x"],
                                dynamic_shapes=({0: batch},), dynamo=True)  # fmt: skip
    program.save(fp32)
    batches = [b.numpy() for b in calibration]

    quantize_static(fp32, int8, _reader(batches))
    session = ort.InferenceSession(int8, providers=["CPUExecutionProvider"])
    return _as_module(lambda a: session.run(None, {"x": a}), model, x)


def _ov_compiled(ov_model: Any, threads: int) -> Callable[[np.ndarray], Any]:
    import openvino as ov

    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
    compiled = ov.Core().compile_model(ov_model, "CPU", config)
    request = compiled.create_infer_request()
    return lambda x: request.infer({0: x})


def plain_openvino_fp32(
    name: str, weights: str | None, batch: int, size: tuple[int, int], threads: int
) -> Callable[[], Any]:
    """``openvino.convert_model`` of timm's model, compiled for the CPU."""
    import openvino as ov

    model = _timm(name, weights)
    x = torch.randn(batch, 3, *size)
    with torch.no_grad():
        ov_model = ov.convert_model(model, example_input=x)
    run = _ov_compiled(ov_model, threads)
    xn = x.numpy()
    return lambda: run(xn)


def plain_nncf(
    name: str,
    weights: str | None,
    batch: int,
    size: tuple[int, int],
    threads: int,
    seed: int,
    n: int,
) -> Callable[[], Any]:
    """The three lines a user writes: ``convert_model``, ``nncf.quantize`` with its defaults on
    the calibration batches, compile."""
    model = _timm(name, weights)
    x = torch.randn(batch, 3, *size)
    run = _ov_compiled(_nncf_defaults(model, x, _calibration(batch, size, seed, n)), threads)
    xn = x.numpy()
    return lambda: run(xn)


def plain_ort_qdq(
    name: str,
    weights: str | None,
    batch: int,
    size: tuple[int, int],
    threads: int,
    seed: int,
    n: int,
) -> Callable[[], Any]:
    """``torch.onnx.export`` of timm's model and ONNX Runtime's ``quantize_static`` with its
    defaults (QDQ format, MinMax calibration), run by an ONNX Runtime session."""
    import onnxruntime as ort
    from onnxruntime.quantization import quantize_static

    model = _timm(name, weights)
    x = torch.randn(batch, 3, *size)
    folder = tempfile.mkdtemp(prefix="peer_ort_")
    fp32, int8 = os.path.join(folder, "m.onnx"), os.path.join(folder, "m_int8.onnx")
    torch.onnx.export(model, (x,), fp32, input_names=["x"], dynamo=False)
    batches = _calibration(batch, size, seed, n)

    quantize_static(fp32, int8, _reader(batches))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    session = ort.InferenceSession(int8, opts, providers=["CPUExecutionProvider"])
    xn = x.numpy()
    return lambda: session.run(None, {"x": xn})


def dlagraph_row(
    spec: str,
    weights: str | None,
    batch: int,
    size: tuple[int, int],
    threads: int,
    precision: str,
    backend: str,
    seed: int,
    n: int,
) -> Callable[[], Any]:
    """``dlagraph.optimize(model, precision, calibration, backend=...)`` of the spec's model with
    the same weights and calibration batches as the peers."""
    import dlagraph

    _threads(threads)
    model = (
        dlagraph.build_module(spec, weights=weights).eval()
        if weights
        else dlagraph.build_module(spec).eval()
    )
    x = torch.randn(batch, 3, *size)
    calibration = (
        [torch.from_numpy(b) for b in _calibration(batch, size, seed, n)]
        if precision == "int8"
        else None
    )
    fast = dlagraph.optimize(
        model, precision, calibration, backend=backend, example_input=x, threads=threads
    )

    def run() -> Any:
        with torch.inference_mode():
            return fast(x)

    return run


def dlagraph_openvino_variant(
    spec: str,
    weights: str | None,
    batch: int,
    size: tuple[int, int],
    threads: int,
    seed: int,
    n: int,
    options: dict[str, Any],
) -> Callable[[], Any]:
    """dlagraph's OpenVINO int8 path (BN folded by dlagraph, then converted) with NNCF options
    given here: for measuring one choice of the int8 recipe against another."""
    import nncf
    import openvino as ov

    import dlagraph
    from dlagraph.deploy.prepare import prepare

    _threads(threads)
    model = (
        dlagraph.build_module(spec, weights=weights).eval()
        if weights
        else dlagraph.build_module(spec).eval()
    )
    net = prepare(model, None).to(memory_format=torch.contiguous_format)
    x = torch.randn(batch, 3, *size)
    with torch.no_grad():
        ov_model = ov.convert_model(net, example_input=x)
    batches = _calibration(batch, size, seed, n)
    options = dict(options)
    if options.pop("stem_fp32", False):
        stem = [
            op.get_friendly_name()
            for op in ov_model.get_ordered_ops()
            if op.get_type_name() == "Convolution"
            and op.input_value(0).get_node().get_type_name() == "Parameter"
        ]
        options["ignored_scope"] = nncf.IgnoredScope(names=stem, validate=False)
    quantized = nncf.quantize(ov_model, nncf.Dataset(batches), **options)
    run = _ov_compiled(quantized, threads)
    xn = x.numpy()
    return lambda: run(xn)
