"""The interpreter equals timm (state_dict keys and order, init, outputs), and exports cleanly."""

from __future__ import annotations

import copy
import io
import warnings

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict

import dlagraph
from dlagraph import (
    DlagraphError,
    RegistryError,
    SpecError,
    build_module,
    generate_source,
    load_spec,
    summarize,
)

from .conftest import SPEC_PATHS, spec_ids
from .helpers import TINY, exec_generated

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
nn = torch.nn

REFERENCED = [p for p in SPEC_PATHS if (load_spec(p).reference or "").startswith("timm:")]


def randomize_bn(sd: dict, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in sd.items():
        if k.endswith("running_mean"):
            v = torch.rand(v.shape, generator=g) - 0.5
        elif k.endswith("running_var"):
            v = torch.rand(v.shape, generator=g) + 0.5
        out[k] = v
    return out


@pytest.mark.parametrize("path", REFERENCED, ids=[p.stem for p in REFERENCED])
def test_equals_timm(path: object) -> None:
    spec = load_spec(path)
    torch.manual_seed(7)
    ours = build_module(spec)
    torch.manual_seed(7)
    ref = timm.create_model(spec.reference.split(":")[1])
    ours_sd, ref_sd = ours.state_dict(), ref.state_dict()
    assert list(ours_sd) == list(ref_sd)  # same keys in the same order
    assert all(torch.equal(ours_sd[k], v) for k, v in ref_sd.items())  # same init, same seed
    ref.load_state_dict(randomize_bn(ref_sd))
    ours.load_state_dict(ref.state_dict(), strict=True)
    ours.eval(), ref.eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(ours(x), ref(x))
    assert summarize(spec).params == sum(p.numel() for p in ours.parameters())


@pytest.mark.parametrize("path", SPEC_PATHS, ids=spec_ids())
def test_static_params_equal_torch_in_both_layouts(path: object) -> None:
    for layout in ("timm", "official"):
        spec = load_spec(path).model_copy(update={"layout": layout})
        with torch.device("meta"):
            model = build_module(spec)
        assert summarize(spec).params == sum(p.numel() for p in model.parameters())


def test_official_layout_key_order_and_equal_outputs() -> None:
    spec = load_spec("specs/dla36.yaml")
    off = build_module(spec.model_copy(update={"layout": "official"})).eval()

    def order(model: object, level: str) -> list[str]:
        keys = [k for k in model.state_dict() if k.startswith(level + ".")]
        return list(dict.fromkeys(k.split(".")[1] for k in keys))

    # ground truth §7: the official Tree registers tree1, tree2, root, project; timm project first
    assert order(off, "level2") == ["tree1", "tree2", "root", "project"]
    assert order(off, "level3") == ["tree1", "tree2", "project"]
    assert order(build_module(spec), "level2") == ["project", "tree1", "tree2", "root"]
    ref = timm.create_model("dla34").eval()
    ref.load_state_dict(randomize_bn(ref.state_dict()))
    report = dlagraph.load_weights(off, ref.state_dict())
    assert len(report.kept) == 12
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(off(x), ref(x))


def test_features_head_matches_timm_features_only() -> None:
    spec = load_spec("specs/dla36.yaml").to_dict()
    spec["head"] = {"type": "features", "out_indices": [1, 2, 3, 4, 5]}
    ours = build_module(spec).eval()
    ref = timm.create_model("dla34", features_only=True).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(1, 3, 96, 64)
    with torch.no_grad():
        outs, refs = ours(x), ref(x)
    assert len(outs) == 5 and all(torch.equal(a, b) for a, b in zip(outs, refs, strict=True))
    assert [(f["num_chs"], f["reduction"], f["module"]) for f in ours.feature_info] == [
        (f["num_chs"], f["reduction"], f["module"]) for f in ref.feature_info.get_dicts()
    ]
    static = summarize(spec, (96, 64)).output_shape
    assert static == [tuple(o.shape[1:]) for o in outs]


def test_features_head_prunes_later_levels() -> None:
    spec = copy.deepcopy(TINY)
    spec["head"] = {"type": "features", "out_indices": [0, 2]}
    model = build_module(spec)
    assert not hasattr(model, "level3")
    outs = model(torch.randn(1, 3, 32, 32))
    assert [tuple(o.shape) for o in outs] == [(1, 8, 32, 32), (1, 32, 8, 8)]


def test_errors_inside_forward_name_the_node() -> None:
    model = build_module(TINY)
    with pytest.raises(RuntimeError) as info:
        model(torch.randn(1, 4, 32, 32))
    assert "while executing 'base_layer' (from levels[0])" in info.value.__notes__


def test_torch_compile_has_no_graph_breaks() -> None:
    model = build_module(TINY).eval()
    explain = torch._dynamo.explain(model)(torch.randn(1, 3, 32, 32))
    assert explain.graph_break_count == 0 and explain.graph_count == 1


def test_torchscript_and_trace() -> None:
    model = build_module(load_spec("specs/dla60_res2next.yaml")).eval()
    x = torch.randn(1, 3, 64, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(model)
        traced = torch.jit.trace(model, x)
    with torch.no_grad():
        ref = model(x)
        assert torch.equal(scripted(x), ref) and torch.equal(traced(x), ref)


def test_onnx_export_runs_in_onnxruntime() -> None:
    ort = pytest.importorskip("onnxruntime")
    model = build_module(TINY).eval()
    x = torch.randn(1, 3, 64, 64)
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), f, dynamo=False, input_names=["x"])
    sess = ort.InferenceSession(f.getvalue(), providers=["CPUExecutionProvider"])
    (out,) = sess.run(None, {"x": x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(out), model(x), rtol=1e-4, atol=1e-5)


def test_pickles_and_deepcopies() -> None:
    import pickle

    model = build_module(TINY).eval()
    clone = pickle.loads(pickle.dumps(model))
    other = copy.deepcopy(model)
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(clone(x), model(x)) and torch.equal(other(x), model(x))


# ---- the block registry -------------------------------------------------------------------------


class _InvertedResidual(nn.Module):
    """MobileNetV2-style block: expand 1x1, depthwise 3x3 (strided), project 1x1."""

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)
        expand: int = 4

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, expand: int = 4):
        super().__init__()
        mid = in_channels * expand
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, mid, 1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(),
            nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(),
            nn.Conv2d(mid, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + shortcut)


@pytest.fixture
def inverted() -> object:
    dlagraph.register_block("inverted_test")(_InvertedResidual)
    yield
    dlagraph.unregister_block("inverted_test")


def test_registered_block_builds_counts_and_trains(inverted: object) -> None:
    spec = copy.deepcopy(TINY)
    spec["block"] = {"type": "inverted_test", "expand": 2}
    model = build_module(spec)
    assert summarize(spec).params == sum(p.numel() for p in model.parameters())
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_registered_block_options_are_validated(inverted: object) -> None:
    spec = copy.deepcopy(TINY)
    spec["block"] = {"type": "inverted_test", "expnad": 2}
    with pytest.raises(SpecError, match=r"block.expnad: unknown key"):
        load_spec(spec)


def test_unknown_block_lists_registered_types(inverted: object) -> None:
    spec = copy.deepcopy(TINY)
    spec["block"] = {"type": "nope"}
    with pytest.raises(
        SpecError, match="registered: basic, bottleneck, res2net, split, inverted_test"
    ):
        load_spec(spec)


def test_builtin_blocks_cannot_be_replaced() -> None:
    with pytest.raises(RegistryError, match="built in"):
        dlagraph.register_block("basic")(_InvertedResidual)


# ---- random architectures that timm's DLA class accepts -----------------------------------------

BLOCKS = {
    "basic": (lambda: timm.models.dla.DlaBasic, {}, {"type": "basic"}),
    "bottleneck": (lambda: timm.models.dla.DlaBottleneck, {}, {"type": "bottleneck"}),
    "split": (
        lambda: timm.models.dla.DlaBottleneck,
        {"cardinality": 32, "base_width": 4},
        {"type": "split", "cardinality": 32},
    ),
}


@given(
    block=st.sampled_from(sorted(BLOCKS)),
    depths=st.lists(st.integers(1, 3), min_size=4, max_size=4),
    widths=st.lists(st.sampled_from([32, 64]), min_size=4, max_size=4),
    residual=st.booleans(),
    num_classes=st.integers(1, 20),
)
def test_random_timm_architectures_are_equal(
    block: str, depths: list[int], widths: list[int], residual: bool, num_classes: int
) -> None:
    cls, kwargs, block_spec = BLOCKS[block]
    levels = [1, 1, *depths]
    channels = [8, 16, *sorted(widths)]
    torch.manual_seed(0)
    ref = timm.models.dla.DLA(
        levels=levels,
        channels=channels,
        num_classes=num_classes,
        block=cls(),
        shortcut_root=residual,
        **kwargs,
    ).eval()
    spec = {
        "name": "random_arch",
        "block": block_spec,
        "levels": [{"channels": 8, "convs": 1}, {"channels": 16, "convs": 1}]
        + [{"channels": c, "depth": d} for c, d in zip(channels[2:], depths, strict=True)],
        "aggregation": {"residual": residual},
        "head": {"type": "classifier", "num_classes": num_classes},
    }
    torch.manual_seed(0)
    ours = build_module(spec).eval()
    assert list(ours.state_dict()) == list(ref.state_dict())
    ref.load_state_dict(randomize_bn(ref.state_dict()))
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(ours(x), ref(x))


# ---- sizes and heads -----------------------------------------------------------------------------


def test_a_network_too_wide_for_memory_is_refused_before_allocating() -> None:
    spec = copy.deepcopy(TINY)
    spec["levels"][2]["channels"] = 65_536
    spec["levels"][3]["channels"] = 65_536
    with pytest.raises(DlagraphError, match=r"need [\d,.]+ GiB of float32 memory, but only"):
        build_module(spec)


def test_unsorted_out_indices_agree_with_feature_info() -> None:
    spec = {**TINY, "head": {"type": "features", "out_indices": [3, 1]}}
    model = build_module(spec).eval()
    outs = model(torch.randn(1, 3, 32, 32))
    assert [f["num_chs"] for f in model.feature_info] == [o.shape[1] for o in outs] == [64, 16]
    gen = exec_generated(generate_source(spec))().eval()
    assert [o.shape[1] for o in gen(torch.randn(1, 3, 32, 32))] == [64, 16]
