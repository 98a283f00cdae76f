"""The deployment rewrites only dlagraph can make (dlagraph.deploy.rewrites): channel padding
keeps every output; optimize applies it where it was measured to win and says so."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import dlagraph
from dlagraph.deploy.registry import get_runtime
from dlagraph.deploy.rewrites import SplitRoot, pad_channels, split_roots

from .helpers import exec_generated, trained_bn


def odd(name: str, channels: list[int], **changes: Any) -> dict[str, Any]:
    """A preset with other level widths (not multiples of 8)."""
    spec = dlagraph.load_spec(name).to_dict()
    spec["levels"] = [{**lv, "channels": c} for lv, c in zip(spec["levels"], channels, strict=True)]
    return {**spec, "name": f"{name}_odd", **changes}


CASES = {
    "basic": (odd("dla_tiny_digits", [6, 12, 20, 36, 100]), (2, 1, 32, 32)),
    "bottleneck, residual roots, 3x3": (
        odd(
            "dla_tiny_digits",
            [6, 12, 20, 36, 100],
            block={"type": "bottleneck"},
            aggregation={"residual": True, "kernel_size": 3},
        ),
        (2, 1, 32, 32),
    ),
    # level 2 stays apart from the head's 16 IDA channels (equal, the head drops a projection)
    "segmentation (IDA up)": (odd("dla_tiny_seg", [6, 20, 20, 28, 44, 60]), (2, 3, 64, 64)),
}


@pytest.mark.parametrize("case", CASES)
def test_padded_copy_computes_the_same_outputs(case: str) -> None:
    spec, shape = CASES[case]
    torch.manual_seed(0)
    model = trained_bn(dlagraph.build_module(spec))
    padded = pad_channels(model)
    assert padded is not None
    levels = padded.dag.graph["spec"]["levels"]
    assert all(lv["channels"] % 8 == 0 for lv in levels)
    assert [lv["channels"] for lv in levels] != [lv["channels"] for lv in spec["levels"]]
    x = torch.randn(*shape)
    with torch.no_grad():
        want, got = model(x), padded(x)
    assert got.shape == want.shape
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()
    assert model.dag.graph["spec"]["levels"] == spec["levels"]  # the original is left alone


def test_padding_only_where_it_was_measured_to_win() -> None:
    torch_pad, ov_pad = get_runtime("torch").pad, get_runtime("openvino").pad
    assert torch_pad["fp32"] == torch_pad["int8"] == ov_pad["fp32"] == ov_pad["int8"] == 8
    assert not get_runtime("onnxruntime").pad and "bf16" not in torch_pad


def test_nothing_to_pad_or_nothing_padded_exactly() -> None:
    assert pad_channels(dlagraph.build_module("dla_tiny_digits").eval()) is None  # all 8k
    spec, _ = CASES["basic"]
    assert pad_channels(dlagraph.build_module(spec)) is None  # still training: BN not fixed
    generated = exec_generated(dlagraph.generate_source(spec))().eval()
    assert pad_channels(generated) is None  # no spec to rebuild from
    assert pad_channels(dlagraph.build_module(spec).eval(), multiple=1) is None
    # a multiple past the spec's channel limit is refused by the spec, not allocated
    assert pad_channels(dlagraph.build_module(spec).eval(), multiple=10**9) is None
    # padded to 16 channels, level 2 would equal the IDA width and lose its projection
    seg = odd("dla_tiny_seg", [6, 10, 20, 28, 44, 60])
    assert pad_channels(dlagraph.build_module(seg).eval()) is None


@pytest.mark.slow  # two torch.compile runs
def test_optimize_pads_in_compiled_fp32_and_says_so() -> None:
    spec, shape = CASES["basic"]
    model = trained_bn(dlagraph.build_module(spec))
    x = torch.randn(*shape)
    fast = dlagraph.optimize(model, example_input=x)
    assert "padded to multiples of 8" in str(fast.report)
    with torch.no_grad():
        assert (fast(x) - model(x)).abs().max() <= 1e-4 * model(x).abs().max()
    # a generated class has no spec to pad from; its roots are still split (it once raised)
    generated = exec_generated(dlagraph.generate_source(spec))().eval()
    generated.load_state_dict(model.state_dict())
    fast = dlagraph.optimize(generated, example_input=x)
    assert "padded" not in str(fast.report) and "split per input" in str(fast.report)
    with torch.no_grad():
        assert (fast(x) - model(x)).abs().max() <= 1e-4 * model(x).abs().max()


@pytest.mark.slow  # four runtime conversions
def test_openvino_pads_and_onnxruntime_does_not() -> None:
    pytest.importorskip("openvino")
    pytest.importorskip("onnxruntime")
    spec, shape = CASES["basic"]
    model = trained_bn(dlagraph.build_module(spec))
    x = torch.randn(*shape)
    with torch.no_grad():
        want = model(x)
    for backend, padded in (("openvino", True), ("onnxruntime", False)):
        fast = dlagraph.optimize(model, backend=backend, example_input=x)
        assert ("padded to multiples of 8" in str(fast.report)) == padded, backend
        assert (fast(x) - want).abs().max() <= 1e-4 * want.abs().max()
    plain = dlagraph.optimize(model, backend="openvino", example_input=x, rewrites=False)
    assert "padded" not in str(plain.report)
    with pytest.raises(dlagraph.DlagraphError, match="rewrites=False"):
        dlagraph.optimize(model, backend="auto", example_input=x, rewrites=False)


def test_split_roots_computes_what_the_roots_compute() -> None:
    for name in (
        "dla_tiny_digits",
        {
            **dlagraph.load_spec("dla_tiny_digits").to_dict(),
            "aggregation": {"residual": True, "kernel_size": 3},
        },
    ):
        torch.manual_seed(0)
        model = dlagraph.build_module(name).eval()
        split = dlagraph.build_module(name).eval()
        split.load_state_dict(model.state_dict())
        x = torch.randn(2, 1, 32, 32)
        n = split_roots(split)
        assert n == sum(isinstance(m, SplitRoot) for m in split.modules()) > 0
        with torch.no_grad():
            assert torch.allclose(split(x), model(x), rtol=1e-5, atol=1e-4)


def test_split_roots_reads_a_generated_class_from_the_spec_its_tensors_show() -> None:
    """A generated class carries no DAG: the roots' input widths come from the spec inferred from
    its state_dict, not from a forward pass."""
    spec = {
        **dlagraph.load_spec("dla_tiny_digits").to_dict(),
        "aggregation": {"residual": True, "kernel_size": 1},
    }
    torch.manual_seed(0)
    model = exec_generated(dlagraph.generate_source(spec))().eval()
    split = exec_generated(dlagraph.generate_source(spec))().eval()
    split.load_state_dict(model.state_dict())
    n = split_roots(split)
    assert n == sum(isinstance(m, SplitRoot) for m in split.modules()) > 0
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(split(x), model(x), rtol=1e-5, atol=1e-4)


def test_split_roots_leaves_a_module_tree_the_dag_does_not_describe() -> None:
    model = dlagraph.build_module("dla_tiny_digits").eval()
    other = dlagraph.compile_spec({**dlagraph.load_spec("dla_tiny_digits").to_dict(), "levels": [
        {**lv, "channels": lv["channels"] * 2}
        for lv in dlagraph.load_spec("dla_tiny_digits").to_dict()["levels"]
    ]})  # fmt: skip
    assert split_roots(model, other) == 0
    assert not any(isinstance(m, SplitRoot) for m in model.modules())
    assert split_roots(torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1))) == 0  # no DLA at all


def test_split_roots_finds_the_roots_under_the_official_layouts_base_prefix() -> None:
    """CenterNet's backbone sits under ``base.``: the plan reads each root's module path from the
    layout, not the node id."""
    model = trained_bn(dlagraph.build_module("centernet_dla34"))
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        want = model(x)
    assert split_roots(model) == 6  # DLA-34's aggregation roots
    assert sum(isinstance(m, SplitRoot) for m in model.base.modules()) == 6
    with torch.no_grad():
        got = model(x)
    assert all((got[k] - want[k]).abs().max() <= 1e-4 * want[k].abs().max() for k in want)
