"""Static analysis against real references: timm models, the official counts, torch's FLOP counter."""

from __future__ import annotations

import copy

import pytest

from dlagraph import InputSizeError, load_spec, summarize

from .conftest import SPEC_PATHS, spec_ids

timm = pytest.importorskip("timm")
torch = pytest.importorskip("torch")

# Official ucbdrive counts (ground truth §5b/§6), unused projections included; the paper's
# Tables 2, 3, 5 round these to 0.1M. DLA-48-B-m has no official model: measured with its classes.
OFFICIAL = {
    "dla36": 15_783_832,
    "dla48_b_s": 1_309_848,
    "dla48_b_m": 4_576_152,
    "dla62_b": 22_334_104,
    "dla104_b": 33_731_736,
    "dla48_s_s": 1_076_888,
    "dla62_s_s": 1_336_728,
    "dla62_s": 17_649_816,
    "dla104_s": 26_772_120,
    "dla102x2": 41_745_048,
    "dla169": 53_989_016,
}
PAPER_M = {
    "dla36": 15.8,
    "dla48_b_s": 1.3,
    "dla48_b_m": 4.5,
    "dla62_b": 22.3,
    "dla104_b": 33.7,
    "dla48_s_s": 1.1,
    "dla62_s_s": 1.3,
    "dla62_s": 17.7,
    "dla104_s": 26.8,
}
REFERENCED = [p for p in SPEC_PATHS if (load_spec(p).reference or "").startswith("timm:")]


def official(path: object) -> dict:
    d = load_spec(path).to_dict()
    d["layout"] = "official"
    return d


@pytest.mark.parametrize("path", REFERENCED, ids=[p.stem for p in REFERENCED])
def test_params_equal_timm(path: object) -> None:
    spec = load_spec(path)
    model = timm.create_model(spec.reference.split(":")[1])
    assert summarize(spec).params == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_official_layout_params_equal_the_official_code(name: str) -> None:
    s = summarize(official(f"specs/{name}.yaml"))
    assert s.params == OFFICIAL[name]
    if name in PAPER_M:  # the paper quotes 0.1M figures (not always correctly rounded)
        assert abs(s.params / 1e6 - PAPER_M[name]) < 0.1


def test_dla48_b_m_is_the_papers_4_5m() -> None:
    assert summarize("specs/dla48_b_m.yaml").params == 4_534_424


def test_per_level_params_of_dla34() -> None:
    s = summarize("specs/dla36.yaml")
    got = {lv.module: lv.params for lv in s.levels}
    assert got == {
        "base_layer": 2_384,
        "level0": 2_336,
        "level1": 4_672,
        "level2": 140_032,
        "level3": 1_207_040,
        "level4": 4_822_528,
        "level5": 9_050_112,
        "global_pool": 0,
        "head_drop": 0,  # timm's DLA has these two modules too
        "fc": 513_000,
        "flatten": 0,
    }


@pytest.mark.parametrize("name", ["dla36", "dla62_s_s", "dla104_s"])
def test_macs_equal_torchs_flop_counter(name: str) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    spec = load_spec(f"specs/{name}.yaml")
    model = timm.create_model(spec.reference.split(":")[1]).eval()
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(torch.randn(1, 3, 128, 160))
    assert summarize(spec, (128, 160)).macs * 2 == fc.get_total_flops()


def test_shapes_equal_traced_shapes() -> None:
    model = timm.create_model("dla34", features_only=True, out_indices=(0, 1, 2, 3, 4, 5))
    outs = model(torch.randn(1, 3, 96, 160))
    s = summarize("specs/dla36.yaml", (96, 160))
    assert [fi["reduction"] for fi in s.feature_info] == [1, 2, 4, 8, 16, 32]
    by_module = {lv.module: lv.shape for lv in s.levels}
    for i, out in enumerate(outs):
        assert by_module[f"level{i}"] == tuple(out.shape[1:])


@pytest.mark.parametrize("size", [(200, 224), (224, 230), (31, 32)])
def test_bad_input_sizes_are_refused_early(size: tuple[int, int]) -> None:
    with pytest.raises(InputSizeError, match="multiples of the total stride 32"):
        summarize("specs/dla36.yaml", size)


@pytest.mark.parametrize(
    "size", [(0, 32), (32.0, 32.0), (32,), (32, 32, 32), "32x32", 32, (True, True), (2**40, 32)]
)
def test_input_sizes_that_are_not_two_sides_are_one_line(size: object) -> None:
    """What a Python caller passes as ``input_size`` is two whole numbers from 1 to 65,536 (numpy's
    ints too), else one line naming what was given."""
    with pytest.raises(InputSizeError) as e:
        summarize("specs/dla36.yaml", size)  # type: ignore[arg-type]
    assert str(e.value).startswith("input size: give (height, width), two whole numbers")
    np = pytest.importorskip("numpy")
    assert summarize("specs/dla36.yaml", (np.int64(64), np.int64(64))).input_size == (64, 64)


def test_non_square_input() -> None:
    s = summarize("specs/dla36.yaml", (64, 256))
    level5 = next(lv for lv in s.levels if lv.module == "level5")
    assert level5.shape == (512, 2, 8) and s.output_shape == (1000,)


def test_aggregation_depth_grows_with_log2_blocks() -> None:
    base = load_spec("specs/dla36.yaml").to_dict()
    for depth in (1, 2, 3, 4):
        spec = copy.deepcopy(base)
        spec["levels"][3]["depth"] = depth
        lv = summarize(spec).levels[4]
        assert lv.blocks == 2**depth
        assert lv.aggregations_to_root == depth


def test_unused_nodes_are_reported() -> None:
    s = summarize(official("specs/dla36.yaml"))
    assert s.unused == ["level3.project", "level4.project"]
    assert s.unused_params == 41_728  # official - timm (ground truth §6)


def test_summary_is_a_mapping_too() -> None:
    s = summarize("specs/dla104_s.yaml")
    assert s["params"] == s.params == 26_309_272
    assert "level4" in s.table()


@pytest.mark.parametrize("path", SPEC_PATHS, ids=spec_ids())
def test_static_shapes_per_node(path: object) -> None:
    s = summarize(path, (64, 96))
    for n in s.nodes:
        if n.op in ("block", "aggregate", "project"):
            assert n.shape[1:] in {(64 // r, 96 // r) for r in (2, 4, 8, 16, 32)}
