"""BN-folded inference (interpreter and generated code) and graph-break-free torch.compile."""

from __future__ import annotations

import pytest

import dlagraph
from dlagraph import DlagraphError, build_module, fold_bn, generate_source, load_spec

from .helpers import exec_generated

torch = pytest.importorskip("torch")

SPECS = ["dla36", "dla62_s_s", "dla60_res2next", "dla36_seg_camvid", "dla34_up"]


def trained_like(name: str) -> object:
    """A model with non-trivial BatchNorm statistics and affine parameters."""
    model = build_module(f"specs/{name}.yaml")
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    return model.eval()


def outputs(model: object, x: object) -> tuple:
    with torch.no_grad():
        out = model(x)
    return out if isinstance(out, tuple) else (out,)


def rel_err(a: tuple, b: tuple) -> float:
    return max(((u - v).abs().max() / u.abs().max()).item() for u, v in zip(a, b, strict=True))


@pytest.mark.parametrize("name", SPECS)
def test_folded_interpreter_is_close(name: str) -> None:
    model = trained_like(name)
    x = torch.randn(2, 3, 64, 64)
    ref = outputs(model, x)
    folded = dlagraph.fold_bn(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert rel_err(ref, outputs(folded, x.contiguous(memory_format=torch.channels_last))) < 1e-4


@pytest.mark.parametrize("name", SPECS)
def test_folded_generated_code_is_close(name: str) -> None:
    model = trained_like(name)
    gen = exec_generated(generate_source(f"specs/{name}.yaml", fold_bn=True))()
    gen.load_state_dict(model.state_dict())  # an ordinary, unfolded checkpoint
    gen.fold_bn()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in gen.modules())
    x = torch.randn(2, 3, 64, 64)
    assert rel_err(outputs(model, x), outputs(gen, x)) < 1e-4


def test_fold_requires_eval_mode() -> None:
    with pytest.raises(DlagraphError, match="call model.eval"):
        fold_bn(build_module("specs/dla36.yaml").train())


def test_generated_code_compiles_without_graph_breaks() -> None:
    model = exec_generated(generate_source("specs/dla48_s_s.yaml"))().eval()
    explain = torch._dynamo.explain(model)(torch.randn(1, 3, 64, 64))
    assert explain.graph_break_count == 0


def test_segmentation_heads_compile_without_graph_breaks() -> None:
    for name in ("dla36_seg_camvid", "dla34_up"):
        model = build_module(load_spec(f"specs/{name}.yaml")).eval()
        explain = torch._dynamo.explain(model)(torch.randn(1, 3, 64, 64))
        assert explain.graph_break_count == 0, name
