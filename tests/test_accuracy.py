"""int8 within a measured budget (dlagraph.deploy.accuracy): ``optimize(..., validation=,
max_drop=)``. OpenVINO keeps the layers int8 costs most in floating point (NNCF's accuracy
control) until the metric is within ``max_drop``; the other runtimes measure and warn; ``auto``
keeps an int8 candidate only within the budget."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch

import dlagraph
from dlagraph import DlagraphError, DlagraphWarning
from dlagraph.deploy.accuracy import metric_of

pytest.importorskip("openvino")
pytest.importorskip("nncf")

TINY = "dla_tiny_digits"


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return dlagraph.build_module(TINY).eval()


def _batches(n: int, seed: int, batch: int = 16) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 1, 32, 32, generator=g) for _ in range(n)]


def closeness(model: torch.nn.Module, images: list[torch.Tensor]):  # noqa: ANN201
    """A metric of a network's outputs against ``model``'s (fp32, eager): minus the relative
    error, 0 for the same outputs, so every int8 error is a drop in it."""
    with torch.inference_mode():
        refs = [model(x) for x in images]

    def metric(m: torch.nn.Module) -> float:
        with torch.inference_mode():
            err = sum(float((m(x) - r).abs().mean()) for x, r in zip(images, refs, strict=True))
            size = sum(float(r.abs().mean()) for r in refs)
        return -err / size

    return metric


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"validation": torch.randn(2, 1, 32, 32)}, "validation: give labelled batches"),
        ({"validation": "digits"}, "validation: give labelled batches"),
        ({"validation": 3}, "validation: give labelled batches"),
        ({"validation": []}, "validation: holds no batches"),
        ({"validation": [torch.randn(2, 1, 32, 32)]}, "validation[0]: must be a pair"),
        ({"validation": [(torch.randn(2, 1, 32, 32), torch.tensor([1.0, 2.0]))]}, "validation[0]: labels must be a 1-D integer"),
        ({"validation": [(torch.randn(2, 1, 32, 32), torch.tensor([1, 2, 3]))]}, "validation[0]: 2 images but 3 labels"),
        ({"validation": [(torch.randn(2, 32, 32), torch.tensor([1, 2]))]}, "validation[0]: images must be a float NCHW"),
        ({"validation": [(torch.full((2, 1, 32, 32), math.nan), torch.tensor([1, 2]))]}, "validation[0]: images hold NaN"),
        ({"max_drop": -0.1}, "max_drop: give a finite number >= 0 (got -0.1)"),
        ({"max_drop": math.nan}, "max_drop: give a finite number >= 0"),
        ({"max_drop": math.inf}, "max_drop: give a finite number >= 0"),
        ({"max_drop": True}, "max_drop: give a finite number >= 0"),
        ({"max_drop": "0.5"}, "max_drop: give a finite number >= 0"),
    ],
)  # fmt: skip
def test_bad_validation_is_one_line(kwargs: dict, expected: str) -> None:
    with pytest.raises(DlagraphError) as e:
        dlagraph.optimize(_model(), "int8", _batches(1, 0), backend="openvino", **kwargs)
    assert str(e.value).startswith(expected) and "\n" not in str(e.value)


def test_validation_is_for_int8_only() -> None:
    with pytest.raises(DlagraphError, match="validation: only int8 is checked"):
        dlagraph.optimize(_model(), "fp32", validation=lambda m: 1.0, backend="openvino")


@pytest.mark.parametrize(
    ("metric", "expected"),
    [
        (lambda m: "high", "validation: the metric must return a number (got str)"),
        (lambda m: math.nan, "validation: the metric returned nan (not finite)"),
        (lambda m: None, "validation: the metric must return a number (got NoneType)"),
    ],
)
def test_a_bad_metric_is_one_line(metric: object, expected: str) -> None:
    with pytest.raises(DlagraphError) as e:
        dlagraph.optimize(_model(), "int8", _batches(1, 0), backend="openvino", validation=metric)
    assert expected in str(e.value)


def test_labelled_batches_on_a_detector_say_to_give_a_function() -> None:
    torch.manual_seed(0)
    net = dlagraph.build_module("centernet_tiny_shapes").eval()
    x = torch.randn(2, 3, 64, 64)
    with pytest.raises(DlagraphError, match="give a metric function instead"):
        dlagraph.optimize(
            net, "int8", [x], backend="onnxruntime", validation=[(x, torch.tensor([0, 1]))]
        )


@pytest.mark.slow  # NNCF's accuracy control restores layer after layer: ~25 s in a worker
def test_openvino_keeps_the_costly_layers_in_float_until_within_the_budget() -> None:
    """The metric: closeness to fp32's outputs. NNCF's defaults cost some of it; a budget of a
    third of that cost makes the accuracy control keep layers in floating point, and the result
    is within it when measured again here."""
    model = _model()
    calibration, held_out = _batches(4, 1), _batches(2, 2)
    metric = closeness(model, held_out)
    plain = dlagraph.optimize(model, "int8", calibration, backend="openvino")
    assert plain.report.float_modules == [] and plain.report.accuracy is None
    cost = -metric(plain)
    assert cost > 0.005  # int8 costs something to restore
    budget = cost / 3
    kept = dlagraph.optimize(
        model, "int8", calibration, backend="openvino", validation=metric, max_drop=budget
    )
    check = kept.report.accuracy
    assert check is not None and check.name == "metric" and check.within
    assert -metric(kept) <= budget + 1e-6  # measured here, not taken from the report
    assert kept.report.float_modules  # what stayed in floating point is named
    assert all(n in dict(model.named_modules()) for n in kept.report.float_modules)
    text = str(kept.report)
    assert "within max_drop" in text and "in floating point: " in text


def test_a_budget_already_met_keeps_every_layer_int8() -> None:
    model = _model()
    metric = closeness(model, _batches(1, 2))
    fast = dlagraph.optimize(
        model, "int8", _batches(2, 1), backend="openvino", validation=metric, max_drop=1.0
    )
    assert fast.report.float_modules == [] and fast.report.accuracy.within


@pytest.mark.slow  # four int8 builds
def test_other_runtimes_measure_the_drop_and_warn_over_budget() -> None:
    model = _model()
    metric = closeness(model, _batches(1, 2))
    with pytest.warns(
        DlagraphWarning, match="int8 on onnxruntime: metric: .* over max_drop 0"
    ) as w:
        fast = dlagraph.optimize(
            model, "int8", _batches(2, 1), backend="onnxruntime", validation=metric, max_drop=0.0
        )
    assert w[0].filename == __file__  # points at the caller's line
    assert not fast.report.accuracy.within
    assert fast.report.accuracy.fp32 == pytest.approx(0.0, abs=1e-5)  # folded fp32: rounding
    # ONNX Runtime tried every conv in int8, then the stem in fp32: both over, both said
    assert fast.report.float_modules == ["base_layer.0"]
    assert "every conv int8: metric: " in str(fast.report)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DlagraphWarning)
        fast = dlagraph.optimize(
            model, "int8", _batches(2, 1), backend="onnxruntime", validation=metric, max_drop=1.0
        )
    assert fast.report.accuracy.within and fast.report.float_modules == []  # all int8: within
    # PyTorch (torchao) measures and reports too
    fast = dlagraph.optimize(
        model, "int8", _batches(2, 1), compile=False, validation=metric, max_drop=1.0
    )
    assert fast.report.accuracy.within and fast.report.accuracy.name == "metric"
    # without a metric the stem stays in fp32, and the report says why
    fast = dlagraph.optimize(model, "int8", _batches(2, 1), backend="onnxruntime")
    assert fast.report.float_modules == ["base_layer.0"] and "no validation metric" in str(
        fast.report
    )


@pytest.mark.slow  # builds and times every runtime's candidates: about a minute in a worker
def test_auto_keeps_int8_within_the_budget(tmp_path: Path) -> None:
    model = _model()
    metric = closeness(model, _batches(1, 2))
    x = torch.randn(4, 1, 32, 32)
    fast = dlagraph.optimize(
        model, "int8", _batches(2, 1), validation=metric, max_drop=1.0, compile=False,
        backend="auto", example_input=x, cache=tmp_path / "auto.json",
    )  # fmt: skip
    kept = [k for k in fast.auto.kept if k.endswith("int8")]
    assert kept and all("within max_drop 1" in fast.auto.kept[k] for k in kept)


@pytest.mark.parametrize("backend", ["torch", "openvino"])
def test_the_metric_of_fp32_is_measured_once(backend: str) -> None:
    """A metric may take minutes: fp32's is measured once (first, to fail fast) and reused by
    the report, and the int8 model is measured as the caller gets it (OpenVINO's compiled model,
    not a second compile)."""
    model = _model()
    metric = closeness(model, _batches(1, 2))
    seen: list[str] = []

    def counted(m: torch.nn.Module) -> float:
        seen.append(type(m).__name__)
        return metric(m)

    kw = {"compile": False} if backend == "torch" else {"backend": backend}
    fast = dlagraph.optimize(model, "int8", _batches(2, 1), validation=counted, max_drop=1.0, **kw)
    check = fast.report.accuracy
    assert check.within and check.int8 == pytest.approx(metric(fast), abs=1e-6)
    # fp32 (a torch module) measured once, first; then the int8 model (OpenVINO: NNCF's accuracy
    # control scores its own compiled models in between, each once)
    fp32 = [name for name in seen if name != "RuntimeModule"]
    assert seen[0] == fp32[0] and len(fp32) == (2 if backend == "torch" else 1), seen
    if backend == "torch":
        assert len(seen) == 2


def test_autos_int8_rule_with_a_metric_is_the_budget() -> None:
    """The rule auto applies to each int8 candidate: over the budget it is refused, saying both
    numbers; within it, kept, saying which rule it met."""
    from dlagraph.deploy.auto import _faithful
    from dlagraph.deploy.prepare import prepare

    model = _model()
    metric = metric_of(closeness(model, _batches(1, 2)))
    x = torch.randn(4, 1, 32, 32)
    candidate = dlagraph.optimize(model, "int8", _batches(2, 1), backend="onnxruntime")
    reference = prepare(model)
    problem, _ = _faithful(reference, candidate, x, "int8", None, (metric, 0.0, 0.0))
    assert problem is not None and "over max_drop 0" in problem
    problem, rule = _faithful(reference, candidate, x, "int8", None, (metric, 0.0, 1.0))
    assert problem is None and "within max_drop 1" in rule


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"validation": [(torch.randn(0, 1, 32, 32), torch.zeros(0, dtype=torch.long))]}, "validation[0]: is empty"),
        ({"validation": [(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))]}, "validation[0]: has 3 channels, the network takes 1"),
        ({"validation": [(torch.randn(2, 1, 7, 7), torch.tensor([0, 1]))]}, "validation[0]: sides 7x7 are not multiples"),
        ({"validation": [(torch.randn(2, 1, 32, 32), torch.tensor([0, 100]))]}, "validation: labels must be class indices 0 to 9 (got 0 to 100)"),
        ({"validation": [(torch.randn(2, 1, 32, 32), torch.tensor([-1, 1]))]}, "validation: labels must be class indices 0 to 9 (got -1 to 1)"),
        ({"max_drop": 10**400}, "max_drop: give a finite number >= 0"),
        ({"max_drop": 0.01, "validation": None}, "max_drop: is the budget of a validation metric"),
    ],
)  # fmt: skip
def test_validation_data_is_checked_against_the_network(kwargs: dict, expected: str) -> None:
    args = {"validation": lambda m: 1.0, **kwargs}
    with pytest.raises(DlagraphError) as e:
        dlagraph.optimize(_model(), "int8", _batches(1, 0), backend="onnxruntime", **args)
    assert str(e.value).startswith(expected) and "\n" not in str(e.value)


def test_numpy_numbers_are_numbers() -> None:
    import numpy as np

    fast = dlagraph.optimize(
        _model(), "int8", _batches(1, 0), backend="onnxruntime",
        validation=lambda m: np.float32(0.5), max_drop=np.float32(0.1),
    )  # fmt: skip
    assert fast.report.accuracy.within and fast.report.accuracy.fp32 == 0.5
