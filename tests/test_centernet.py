"""CenterNet / FairMOT DLA-34: the published DLASeg, deformable convs without a compiled extension."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import dlagraph
from dlagraph import SpecError, WeightsError, build_module, generate_source, load_spec, summarize

from .helpers import exec_generated
from .reference_centernet import DCN as RefDCN
from .reference_centernet import DLASeg

PRESETS = {  # name: (heads, dcn, published parameter count, measured on the published code)
    "centernet_dla34": ({"hm": 80, "wh": 2, "reg": 2}, True, 19_675_892),
    "fairmot_dla34": ({"hm": 1, "wh": 4, "id": 128, "reg": 2}, True, 19_836_711),
    "fairmot_dla34_conv": ({"hm": 1, "wh": 4, "id": 128, "reg": 2}, False, 19_196_983),
}


def reference(name: str) -> nn.Module:
    heads, dcn, _ = PRESETS[name]
    return DLASeg(heads, dcn=dcn)


def perturbed(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random offsets (so the deformation is real), BN statistics and biases."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, RefDCN):
                m.conv_offset_mask.weight.copy_(
                    torch.randn(m.conv_offset_mask.weight.shape, generator=g) * 0.05
                )
                m.conv_offset_mask.bias.copy_(torch.randn(27, generator=g))
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.1)
    return model.eval()


@pytest.mark.parametrize("name", list(PRESETS))
def test_parameter_counts_equal_the_published_networks(name: str) -> None:
    ref = reference(name)
    total = PRESETS[name][2]
    assert sum(p.numel() for p in ref.parameters()) == total  # the oracle is the published net
    assert summarize(name).params == total  # static, no torch
    model = build_module(name)
    assert sum(p.numel() for p in model.parameters()) == total
    parts = {
        k: sum(p.numel() for n, p in model.named_parameters() if n.startswith(k + "."))
        for k in ("base", "dla_up", "ida_up")
    }
    ref_parts = {k: sum(p.numel() for p in getattr(ref, k).parameters()) for k in parts}
    assert parts == ref_parts
    if name == "centernet_dla34":  # ground truth §10
        assert parts == {"base": 15_270_832, "dla_up": 3_515_012, "ida_up": 425_324}


@pytest.mark.parametrize("name", list(PRESETS))
def test_module_tree_and_state_dict_keys_equal_the_published_dlaseg(name: str) -> None:
    ours, ref = build_module(name).state_dict(), reference(name).state_dict()
    assert list(ours) == list(ref)  # names and order
    assert all(ours[k].shape == ref[k].shape for k in ref)
    assert not any(k.startswith("base.fc") for k in ours)


@pytest.mark.parametrize("name", list(PRESETS))
def test_published_checkpoint_loads_strictly_both_ways_and_outputs_are_equal(name: str) -> None:
    torch.manual_seed(1)
    ref = perturbed(reference(name))
    ours = build_module(name).eval()
    report = dlagraph.load_weights(ours, ref.state_dict())  # strict by default
    assert report.ok and not report.missing and not report.unexpected
    back = reference(name).eval()
    back.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, 3, 128, 96)
    with torch.no_grad():
        want = ref(x)[0]
        got = ours(x)
        again = back(x)[0]
    assert list(got) == list(PRESETS[name][0])  # a dict in the spec's head order
    for k in want:
        assert torch.allclose(got[k], want[k], rtol=1e-5, atol=1e-5), k
        assert torch.equal(again[k], want[k])


def test_the_offsets_really_deform() -> None:
    """With zero offsets a DCN is a plain conv (mask 0.5); perturbed offsets change the output."""
    torch.manual_seed(0)
    dcn = dlagraph.nn.modules.DCN(4, 8)  # type: ignore[attr-defined]
    x = torch.randn(1, 4, 16, 16)
    plain = nn.functional.conv2d(x, dcn.weight * 0.5, dcn.bias, padding=1)
    assert torch.allclose(dcn(x), plain, atol=1e-5)
    with torch.no_grad():
        dcn.conv_offset_mask.weight.normal_(0, 0.5)
    assert not torch.allclose(dcn(x), plain, atol=1e-3)


@pytest.mark.parametrize("name", list(PRESETS))
def test_interpreter_and_generated_code_are_bit_identical(name: str) -> None:
    torch.manual_seed(0)
    interp = build_module(name)
    torch.manual_seed(0)
    gen = exec_generated(generate_source(name))()
    ref = perturbed(reference(name))
    for m in (interp, gen):
        m.load_state_dict(ref.state_dict())
        m.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a, b = interp(x), gen(x)
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    sd_a, sd_b = interp.state_dict(), gen.state_dict()
    assert list(sd_a) == list(sd_b) and all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)


def test_init_follows_the_published_code() -> None:
    torch.manual_seed(0)
    m = build_module("fairmot_dla34")
    assert torch.all(m.hm[2].bias == -2.19)
    for head in (m.wh, m.id, m.reg):
        assert torch.all(head[0].bias == 0) and torch.all(head[2].bias == 0)
    dcn = m.dla_up.ida_0.proj_1.conv
    bound = 1 / math.sqrt(256 * 9)
    assert float(dcn.weight.detach().abs().max()) <= bound and torch.all(dcn.bias == 0)
    assert torch.all(dcn.conv_offset_mask.weight == 0) and torch.all(dcn.conv_offset_mask.bias == 0)
    up = m.ida_up.up_2  # x4: an 8x8 bilinear kernel, every channel the same, trainable
    ref = nn.ConvTranspose2d(64, 64, 8, 4, 2, groups=64, bias=False)
    from .reference_centernet import fill_up_weights

    fill_up_weights(ref)
    assert torch.equal(up.weight, ref.weight) and up.weight.requires_grad


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"down_ratio": 3}, "head.down_ratio: must be one of 2, 4, 8 or 16"),
        ({"down_ratio": 16, "last_level": 4}, "head.last_level: last_level must be above"),
        ({"last_level": 2}, "head.last_level: last_level must be above log2(down_ratio) = 2"),
        ({"last_level": 6}, "at most the last level index 5"),
        ({"heads": {}}, "head.heads: must not be empty"),
        ({"heads": {"hm": 0}}, "head.heads.hm: must be greater than 0"),
        ({"heads": {"9x": 1}}, "head names must be identifiers"),
        ({"heads": {"class": 1}}, "head names must be identifiers"),
        ({"heads": {"base": 1}}, "head name 'base' is taken by the network's own module"),
        ({"heads": {"eval": 1}}, "head.heads.eval: 'eval' is an attribute or method"),
        ({"head_conv": -1}, "head.head_conv: must be at least 0"),
        ({"node": "dcnv3"}, "head.node: must be one of 'dcn' or 'conv'"),
        ({"final_kernel": 2}, "head.final_kernel: must be odd"),
    ],
)
def test_head_validation(change: dict, problem: str) -> None:
    spec = load_spec("centernet_dla34").to_dict()
    spec["head"].update(change)
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    assert any(problem in p for p in info.value.problems), info.value.problems


TINY_NET = {  # the smallest CenterNet: fast enough to build many
    "name": "tiny_ct",
    "block": {"type": "basic"},
    "levels": [{"channels": 4}, {"channels": 4}, {"channels": 8, "depth": 1},
               {"channels": 8, "depth": 1}],
    "head": {"type": "centernet", "heads": {"hm": 2}, "down_ratio": 2, "head_conv": 4,
             "node": "conv"},
}  # fmt: skip


def _with_heads(heads: dict[str, int]) -> dict:
    return {**TINY_NET, "head": {**TINY_NET["head"], "heads": heads}}


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("type", "attribute or method"),
        ("training", "attribute or method"),
        ("to", "attribute or method"),
        ("forward", "attribute or method"),
        ("state_dict", "attribute or method"),
        ("from_weights", "attribute or method"),
        ("forward_level2", "attribute or method"),
        ("_modules", "reserved for the module's private"),
        ("output", "taken by the network's own module or graph node"),
        ("input", "taken by the network's own module or graph node"),
        ("ida_up", "taken by the network's own module or graph node"),
        ("x" * 65, "at most 64 characters"),
    ],
)
def test_head_names_that_would_collide_are_refused_at_their_path(name: str, why: str) -> None:
    with pytest.raises(SpecError) as info:
        build_module(_with_heads({"hm": 1, name: 2}))
    where = f"head.heads.{name}: " if len(name) < 60 else "head.heads['xxx"
    assert any(p.startswith(f"<spec>: {where}") and why in p
               for p in info.value.problems), info.value.problems  # fmt: skip


@pytest.mark.parametrize(
    "heads",
    [{"x": 1, "x_": 2}, {"hm": 1, "ida_up_node_1": 2}, {"hm": 1, "dla_up_ida_0_node_1": 2}],
    ids=["sanitised-twins", "neck-variable", "dla-up-variable"],
)
def test_head_names_that_share_a_generated_variable_are_refused(heads: dict) -> None:
    with pytest.raises(SpecError, match=r"head.heads.\w+: .* would share the variable"):
        dlagraph.compile_spec(_with_heads(heads))


def test_the_reserved_names_cover_every_attribute_of_the_built_modules() -> None:
    """The spec layer refuses head names from a static list (it has no torch); that list must hold
    every public attribute the installed torch, the interpreter and the generated classes have."""
    from dlagraph.base.names import MODULE_ATTRIBUTES, attribute_clash

    spec = load_spec("centernet_tiny_shapes")
    interpreted = build_module(spec, weights=build_module(spec).state_dict())  # load_report too
    generated = exec_generated(generate_source(spec, fold_bn=True))()
    classifier = exec_generated(generate_source("dla_tiny_digits"))()
    own = {"base", "dla_up", "ida_up", *spec.head.heads, "level0", "level1", "level2", "level3",
           "level4", "level5", "base_layer", "fc", "global_pool", "head_drop", "flatten"}  # fmt: skip
    for model in (interpreted, generated, classifier, build_module("dla_tiny_digits")):
        public = {a for a in dir(model) if not a.startswith("_")} - own
        missing = sorted(a for a in public if attribute_clash(a) is None)
        assert not missing, f"{type(model).__name__}: {missing} are not in MODULE_ATTRIBUTES"
    assert "forward_level9" not in MODULE_ATTRIBUTES and attribute_clash("forward_level9")


@settings(deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["hm", "wh", "reg", "id", "x", "x_", "self", "input_", "torch", "nn",
                         "F", "math", "base_", "level2", "ida_up_up_1", "hm_0", "out", "fc",
                         "forward_features", "cuda", "dla_up_ida_0_proj_1", "node", "proj_1"]),
        st.integers(1, 3),
        min_size=1,
        max_size=4,
    )
)  # fmt: skip
def test_any_head_set_is_refused_or_computes_the_same_in_both_backends(heads: dict) -> None:
    """Whatever the names: a SpecError at a head's path, or a network whose interpreter and
    generated class construct and compute the same maps (never a class that fails or differs)."""
    spec = _with_heads(heads)
    try:
        dlagraph.compile_spec(spec)
    except SpecError as e:
        assert all("head.heads" in p for p in e.problems), e.problems
        return
    torch.manual_seed(0)
    ours = build_module(spec).eval()
    gen = exec_generated(generate_source(spec))()
    gen.load_state_dict(ours.state_dict())
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        a, b = ours(x), gen.eval()(x)
    assert list(a) == list(b) == list(heads)
    assert all(torch.equal(a[k], b[k]) for k in heads)


def test_any_backbone_gets_the_neck_with_static_channel_bookkeeping() -> None:
    """The swapped-backbone complaint: dla62_s under the neck has other widths; dlagraph computes
    them, and a dla34 checkpoint is refused with the mismatched tensors named, not half-loaded."""
    spec = load_spec("dla62_s").to_dict()
    spec.update(name="centernet_dla62_s", layout="official")
    spec["head"] = load_spec("centernet_dla34").to_dict()["head"]
    g = dlagraph.compile_spec(spec)
    # dla62_s's levels are 128, 256, 512 wide from Level 3: IDAUp's projections follow them
    assert g.nodes["ida_up.proj_2"]["rec"]["in_channels"] == 512
    assert g.nodes["hm"]["rec"]["in_channels"] == 128
    s = summarize(spec, (256, 256))
    assert s.output_shape == [(80, 64, 64), (2, 64, 64), (2, 64, 64)]
    model = build_module(spec).eval()
    out = model(torch.randn(1, 3, 64, 64))
    assert out["hm"].shape == (1, 80, 16, 16)
    with pytest.raises(WeightsError, match="shape-mismatched"):
        dlagraph.load_weights(model, build_module("centernet_dla34").state_dict())


def test_a_wrapped_published_checkpoint_file_loads(tmp_path: object) -> None:
    """CenterNet saves {'epoch': …, 'state_dict': …}; DataParallel adds `module.`."""
    ref = perturbed(reference("centernet_dla34"))
    buf = io.BytesIO()
    torch.save(
        {"epoch": 70, "state_dict": {"module." + k: v for k, v in ref.state_dict().items()}}, buf
    )
    path = tmp_path / "ctdet_coco_dla_2x.pth"  # type: ignore[operator]
    path.write_bytes(buf.getvalue())
    ours = build_module("centernet_dla34")
    assert dlagraph.load_weights(ours, path).ok


def test_spec_round_trip_keeps_the_head_order() -> None:
    spec = load_spec("fairmot_dla34")
    again = load_spec(copy.deepcopy(spec.to_dict()))
    assert list(again.head.heads) == ["hm", "wh", "id", "reg"]  # type: ignore[union-attr]


# ---- decoding --------------------------------------------------------------------------------


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_decode_hand_made_heatmap() -> None:
    hm = torch.full((1, 3, 8, 8), _logit(0.01))
    hm[0, 2, 3, 5] = _logit(0.9)  # class 2 at x=5, y=3
    hm[0, 2, 3, 6] = _logit(0.6)  # its neighbour: not a peak, suppressed
    hm[0, 0, 6, 1] = _logit(0.7)  # class 0 at x=1, y=6
    wh = torch.zeros(1, 2, 8, 8)
    wh[0, :, 3, 5] = torch.tensor([4.0, 2.0])
    wh[0, :, 6, 1] = torch.tensor([2.0, 6.0])
    reg = torch.zeros(1, 2, 8, 8)
    reg[0, :, 3, 5] = torch.tensor([0.25, 0.5])
    (det,) = dlagraph.centernet_decode({"hm": hm, "wh": wh, "reg": reg}, k=2, down_ratio=4)
    assert det["classes"].tolist() == [2, 0]
    assert torch.allclose(det["scores"], torch.tensor([0.9, 0.7]))
    # center (5.25, 3.5) +- (2, 1), and (1, 6) +- (1, 3) without offset: times 4 pixels
    want = torch.tensor([[3.25, 2.5, 7.25, 4.5], [0.0, 3.0, 2.0, 9.0]]) * 4
    assert torch.allclose(det["boxes"], want)


def test_decode_without_reg_adds_half_a_cell_and_reads_ltrb() -> None:
    hm = torch.full((2, 1, 4, 4), _logit(0.05))
    hm[1, 0, 2, 1] = _logit(0.8)
    wh = torch.zeros(2, 4, 4, 4)
    wh[1, :, 2, 1] = torch.tensor([1.0, 0.5, 2.0, 1.5])  # FairMOT's left, top, right, bottom
    dets = dlagraph.centernet_decode({"hm": hm, "wh": wh}, k=1, down_ratio=2)
    assert len(dets) == 2 and dets[0]["boxes"].shape == (1, 4)
    box = dets[1]["boxes"][0]  # center (1.5, 2.5)
    assert torch.allclose(box, torch.tensor([0.5, 2.0, 3.5, 4.0]) * 2)


def test_decode_network_output_end_to_end() -> None:
    model = build_module("centernet_dla34").eval()
    with torch.no_grad():
        dets = dlagraph.centernet_decode(model(torch.randn(2, 3, 64, 64)), k=10)
    assert len(dets) == 2 and dets[0]["boxes"].shape == (10, 4)
    assert bool((dets[0]["scores"] <= 1).all()) and int(dets[0]["classes"].max()) < 80


def test_decode_refuses_outputs_without_hm() -> None:
    with pytest.raises(dlagraph.DlagraphError, match="needs `hm` and `wh`"):
        dlagraph.centernet_decode({"wh": torch.zeros(1, 2, 4, 4)})


def _maps(b: int = 1, c: int = 3, h: int = 8, w: int = 8, wh: int = 2) -> dict:
    return {"hm": torch.randn(b, c, h, w), "wh": torch.rand(b, wh, h, w),
            "reg": torch.rand(b, 2, h, w)}  # fmt: skip


@pytest.mark.parametrize(
    ("outputs", "kwargs", "problem"),
    [
        ([torch.zeros(1, 1, 4, 4)], {}, "outputs: give the network's dict of maps"),
        ({**_maps(), "wh": torch.rand(2, 2, 8, 8)}, {}, "outputs['wh']: .* disagrees with `hm`"),
        ({**_maps(), "reg": torch.rand(1, 2, 4, 8)}, {}, "outputs['reg']: .* in batch or size"),
        ({**_maps(), "reg": torch.rand(1, 3, 8, 8)}, {}, "outputs['reg']: must have 2 channels"),
        (_maps(wh=3), {}, "outputs['wh']: must have 2 or 4 channels"),
        ({**_maps(), "hm": torch.randn(3, 8, 8)}, {}, "outputs['hm']: must be a float"),
        ({**_maps(), "hm": torch.ones(1, 3, 8, 8, dtype=torch.long)}, {}, "must be a float"),
        ({**_maps(), "wh": [[1.0]]}, {}, "outputs['wh']: must be a float .*got list"),
        (_maps(c=0), {}, "outputs['hm']: has no classes or no positions"),
        (_maps(), {"k": 0}, "k: must be a whole number from 1"),
        (_maps(), {"down_ratio": 2.5}, "down_ratio: must be a whole number from 1"),
        (_maps(), {"k": True}, "k: must be a whole number from 1"),
    ],
)
def test_decode_names_the_argument_that_is_wrong(
    outputs: object, kwargs: dict, problem: str
) -> None:
    with pytest.raises(
        dlagraph.DlagraphError, match=problem.replace("[", r"\[").replace("]", r"\]")
    ):
        dlagraph.centernet_decode(outputs, **kwargs)  # type: ignore[arg-type]


def test_decode_of_an_empty_batch_is_an_empty_list() -> None:
    assert dlagraph.centernet_decode(_maps(b=0)) == []
    dets = dlagraph.centernet_decode(_maps(b=2, c=1, h=2, w=2), k=1000)  # k above the positions
    assert len(dets) == 2 and dets[0]["boxes"].shape == (4, 4)


# ---- export and compile ----------------------------------------------------------------------


def _deformed(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        for m in model.modules():
            if type(m).__name__ == "DCN":
                m.conv_offset_mask.weight.normal_(0, 0.05)
    return model.eval()


@pytest.mark.slow  # two ONNX exports: about 10 s each on one core
@pytest.mark.parametrize("backend", ["interpreter", "generated"])
def test_onnx_export_with_deformconv_runs_in_onnxruntime(backend: str) -> None:
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    if backend == "interpreter":
        model = build_module("centernet_dla34")
    else:
        model = exec_generated(generate_source("centernet_dla34"))()
    model = _deformed(model)
    x = torch.randn(1, 3, 64, 64)
    program = torch.onnx.export(model, (x,), dynamo=True, verbose=False)
    proto = program.model_proto
    assert any(n.op_type == "DeformConv" for n in proto.graph.node)
    sess = ort.InferenceSession(proto.SerializeToString())
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        want = model(x)
    for g, (k, w) in zip(got, want.items(), strict=True):
        assert torch.allclose(torch.from_numpy(g), w, atol=1e-4), k


@pytest.mark.slow  # inductor compiles the network: about 10 s on one core
def test_torch_compile_has_no_graph_breaks_and_torchscript_scripts() -> None:
    model = _deformed(build_module("fairmot_dla34"))
    x = torch.randn(1, 3, 64, 64)
    assert torch._dynamo.explain(model)(x).graph_break_count == 0
    gen = _deformed(exec_generated(generate_source("fairmot_dla34"))())
    assert torch._dynamo.explain(gen)(x).graph_break_count == 0
    scripted = torch.jit.script(model)
    with torch.no_grad():
        assert torch.equal(scripted(x)["id"], model(x)["id"])


def test_diagram_of_the_neck() -> None:
    src = dlagraph.draw("centernet_dla34", collapse_depth=0).source
    for cluster in ("cluster_dla_up_ida_0", "cluster_dla_up_ida_2", "cluster_ida_up"):
        assert cluster in src
    assert 'label="hm 64→80"' in src and "Σ DCN 64" in src
    # every edge inside the neck is drawn as IDA (eq. 1): bold and red
    neck = [line for line in src.splitlines() if "->" in line and "ida_up_node_1 " in line]
    assert neck and all('color="#c0392b"' in line for line in neck)
