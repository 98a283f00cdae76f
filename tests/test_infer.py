"""From weights back to a spec (infer_spec), two networks compared (diff), and transfer loading."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict

import dlagraph
from dlagraph import DlagraphError, build_module, infer_checkpoint, infer_spec, load_spec
from dlagraph.base.shapes import get
from dlagraph.blocks import BlockShapes
from dlagraph.cli import main
from dlagraph.spec import Spec, presets

from .conftest import ROOT
from .helpers import TINY
from .strategies import TEST_BLOCK, DepthwiseSeparable, valid_specs

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

X = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def non_inferable(spec: Spec) -> dict[str, Any]:
    """The fields no tensor shows, as ``infer_spec`` overrides."""
    out: dict[str, Any] = {"aggregation.residual": spec.aggregation.residual}
    head = spec.head
    if head.type == "classifier":
        out["head.dropout"] = head.dropout
    elif head.type == "segmentation" and head.upsample == "bilinear":
        out["head"] = head.model_dump()  # its tensors are a classifier's
    elif head.type == "segmentation":
        out["head.dilation"] = head.dilation
    elif head.type == "features":
        out["head.out_indices"] = list(head.out_indices)
    if spec.block.type == "res2net":  # several base widths can give the same shapes
        out["block.base_width"] = spec.block.options.base_width
    other = "official" if spec.layout == "timm" else "timm"
    if list(meta_shapes(spec)) == list(meta_shapes(spec.model_copy(update={"layout": other}))):
        out["layout"] = spec.layout  # no projection to place: both layouts are the same tensors
    return out


def meta_shapes(spec: Spec) -> dict:
    return {k: tuple(v.shape) for k, v in meta_state(spec).items()}


def canonical(spec: Spec | dict) -> dict[str, Any]:
    """The spec with defaults made explicit the one way, and its names (and the input size it is
    meant for: no tensor shows it) left out."""
    data = load_spec(spec if isinstance(spec, dict) else spec.to_dict()).to_dict()
    for key in ("name", "paper_name", "reference", "input_size"):
        data.pop(key, None)
    for i, level in enumerate(data["levels"]):
        if level.get("aggregate_input") is not None and level["aggregate_input"] == (i > 2):
            del level["aggregate_input"]  # what None means at this position
    if (
        data["head"]["type"] == "centernet"
        and data["head"].get("last_level") == len(data["levels"]) - 1
    ):
        del data["head"]["last_level"]  # what the default means
    return data


def meta_state(spec: Spec | dict | str) -> dict:
    with torch.device("meta"):
        return build_module(spec, init=False).state_dict()


def _cases() -> list[tuple[str, str]]:
    out = []
    for name, path in presets().items():
        out.append((name, load_spec(path).layout))
        if load_spec(path).layout == "timm":
            out.append((name, "official"))
    return out


@pytest.mark.parametrize(("name", "layout"), _cases(), ids=[f"{n}-{lo}" for n, lo in _cases()])
def test_every_preset_round_trips_in_both_layouts(name: str, layout: str) -> None:
    spec = load_spec(name).model_copy(update={"layout": layout})
    got = infer_spec(meta_state(spec), overrides=non_inferable(spec))
    assert canonical(got) == canonical(spec)


@given(valid_specs(max_tree_levels=4, max_depth=3))
def test_random_specs_round_trip(data: dict[str, Any]) -> None:
    assume(data["block"]["type"] != TEST_BLOCK)  # a registered block's tensors are its own
    head = data["head"]
    # a features head drops the levels after its last index: those specs have no weights there
    assume(head["type"] != "features" or max(head["out_indices"]) == len(data["levels"]) - 1)
    spec = load_spec(data)
    got = infer_spec(meta_state(spec), overrides=non_inferable(spec))
    assert canonical(got) == canonical(spec)


# timm's own dla models: the inferred spec's module loads them strictly and computes the same
TIMM = {
    "dla34": False,
    "dla46_c": False,
    "dla46x_c": False,
    "dla60x_c": False,
    "dla60": False,
    "dla60x": False,
    "dla102": True,
    "dla60_res2net": False,
    "dla60_res2next": False,
}  # fmt: skip  (name: residual root, timm's configuration, which no tensor shows)


@pytest.mark.parametrize("name", list(TIMM))
def test_timm_checkpoints_give_specs_that_load_them_and_compute_the_same(name: str) -> None:
    torch.manual_seed(0)
    ref = timm.create_model(name).eval()
    sd = ref.state_dict()
    for k, v in sd.items():  # BN statistics that matter
        if k.endswith("running_var"):
            v.uniform_(0.5, 2.0)
    spec = infer_spec(sd, overrides={"aggregation.residual": TIMM[name]})
    model = build_module(spec, weights=sd).eval()
    assert model.load_report.ok
    with torch.no_grad():
        assert torch.equal(model(X), ref(X))


@pytest.mark.parametrize("dcn", [True, False], ids=["dcn", "conv"])
def test_official_centernet_checkpoint_gives_a_spec_that_loads_it(dcn: bool) -> None:
    from .reference_centernet import DLASeg

    torch.manual_seed(0)
    ref = DLASeg({"hm": 3, "wh": 2, "reg": 2}, head_conv=32, dcn=dcn).eval()
    inf = infer_checkpoint(ref.state_dict())
    assert inf.spec.head.type == "centernet" and inf.spec.head.node == ("dcn" if dcn else "conv")
    assert inf.spec.layout == "official" and inf.spec.head.heads == {"hm": 3, "wh": 2, "reg": 2}
    model = build_module(inf.spec, weights=ref.state_dict()).eval()
    with torch.no_grad():
        want, got = ref(X)[0], model(X)
    assert list(got) == list(want) and all(torch.equal(got[k], want[k]) for k in want)


def test_wrapped_checkpoints_and_files(tmp_path: Path) -> None:
    sd = meta_state("dla_tiny_digits")
    sd = {k: torch.zeros(v.shape, dtype=v.dtype) for k, v in sd.items()}
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "tiny.pth")
    inf = infer_checkpoint(tmp_path / "tiny.pth")
    assert inf.spec.name == "tiny" and inf.spec.in_channels == 1
    assert canonical(inf.spec) == canonical(
        load_spec("dla_tiny_digits").model_copy(update={"aggregation": inf.spec.aggregation})
    )


def test_assumptions_are_reported_and_overrides_settle_them() -> None:
    sd = meta_state("dla104_s")
    inf = infer_checkpoint(sd)
    fields = [a.split(":")[0] for a in inf.assumptions]
    assert fields == ["aggregation.residual", "head.dropout", "head.type", "name"]
    assert inf.spec.aggregation.residual is False  # taken from the defaults, and said so
    inf = infer_checkpoint(sd, {"aggregation.residual": True, "head.dropout": 0.2}, name="x")
    assert [a.split(":")[0] for a in inf.assumptions] == ["head.type"]  # a name given is no guess
    assert inf.spec.aggregation.residual and inf.spec.head.dropout == 0.2
    with pytest.raises(dlagraph.SpecError, match="aggregation.kernel_size"):
        infer_spec(sd, {"aggregation.kernel_size": 2})


def test_foreign_checkpoints_get_clear_errors() -> None:
    resnet = timm.create_model("resnet18").state_dict()
    with pytest.raises(DlagraphError, match=r"tensor conv1.weight \[64, 3, 7, 7\] fits no DLA"):
        infer_spec(resnet)
    with pytest.raises(DlagraphError, match="tensor x .* fits no DLA module"):
        infer_spec({"x": torch.randn(3, 4)})
    with pytest.raises(DlagraphError, match="holds no tensors"):
        infer_spec({})
    sd = dict(meta_state("dla36"))
    sd["level3.tree1.tree1.conv2.weight"] = torch.empty(128, 128, 5, 5)
    with pytest.raises(
        DlagraphError, match=r"level3.tree1.tree1.conv2.weight is \[128, 128, 5, 5\]"
    ):
        infer_spec(sd)
    sd = dict(meta_state("dla36"))
    sd["level2.extra.weight"] = torch.empty(3)
    with pytest.raises(DlagraphError, match="level2.extra.weight"):
        infer_spec(sd)


# ---- a user's block type, recognised through the registry ----------------------------------------


class _Expand(torch.nn.Module):
    """A user's block: 1x1 expansion, depthwise 3x3 (strided), 1x1 projection, its convs named
    like a bottleneck's."""

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)
        expand: int = 4

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, expand: int = 4):
        super().__init__()
        mid = out_channels * expand
        self.conv1 = torch.nn.Conv2d(in_channels, mid, 1, bias=False)
        self.conv2 = torch.nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False)
        self.conv3 = torch.nn.Conv2d(mid, out_channels, 1, bias=False)
        self.bn3 = torch.nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        out = self.conv3(torch.relu(self.conv2(torch.relu(self.conv1(x)))))
        return torch.relu(self.bn3(out) + shortcut)


def _recognise_expand(blocks: list[BlockShapes]) -> tuple[dict, dict] | None:
    b = blocks[0]
    if b.names() != {"conv1", "conv2", "conv3", "bn3"}:
        return None
    mid, per_group = get(b.shapes, "conv2.weight", 4, under=b.where)[:2]
    return ({"expand": mid // b.out_channels}, {}) if per_group == 1 else None


def _recognise_separable(blocks: list[BlockShapes]) -> tuple[dict, dict] | None:
    conv1 = blocks[0].shapes.get("conv1.weight", ())
    return ({}, {}) if conv1[1:] == (1, 3, 3) else None  # depthwise: one input channel per group


@pytest.mark.parametrize(
    ("options", "cls", "recognise"),
    [
        # a split block's names, and at Level 3 its shapes (cardinality 64), not at Level 4
        ({"expand": 2}, _Expand, _recognise_expand),
        # a basic block's names (conv1, bn1, conv2, bn2), not its shapes
        ({}, DepthwiseSeparable, _recognise_separable),
    ],
)
def test_a_registered_block_type_is_recognised_by_its_own_function(
    options: dict, cls: type, recognise: Any
) -> None:
    block = {"type": "user_test", **options}
    data = {**TINY, "block": block, "head": {"type": "classifier", "num_classes": 10}}
    dlagraph.register_block("user_test", recognise=recognise)(cls)
    try:
        spec = load_spec(data)
        got = infer_spec(meta_state(spec), overrides=non_inferable(spec))
        assert canonical(got) == canonical(spec)
        dlagraph.register_block("user_test", replace=True)(cls)  # without recognise: not found
        registered = "basic, bottleneck, res2net, split, user_test"
        with pytest.raises(DlagraphError, match=rf"level2\.tree1\..* block type \({registered}\)"):
            infer_spec(meta_state(spec))
    finally:
        dlagraph.unregister_block("user_test")


@pytest.mark.parametrize(
    ("recognise", "want"),
    [
        (lambda blocks: 1 / 0, "block type 'user_test': its recognise raised ZeroDivisionError"),
        (
            lambda blocks: "abc",
            "block type 'user_test': its recognise must return (options, notes)",
        ),
        (lambda blocks: ({}, None), "its recognise must return (options, notes), two dicts"),
    ],
)
def test_a_recognise_that_fails_is_one_line_naming_it(recognise: Any, want: str) -> None:
    data = {**TINY, "block": {"type": "user_test", "expand": 2}}
    dlagraph.register_block("user_test", recognise=recognise)(_Expand)
    try:
        with pytest.raises(DlagraphError, match=re.escape(want)) as e:
            infer_spec(meta_state(load_spec(data)))
        assert len(str(e.value).splitlines()) == 1
    finally:
        dlagraph.unregister_block("user_test")


# ---- the CLI ---------------------------------------------------------------------------------


def test_cli_infer_writes_a_spec_that_builds(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    torch.save(timm.create_model("dla46x_c").state_dict(), tmp_path / "dla46x_c.pth")
    out = tmp_path / "spec.yaml"
    args = ["infer", str(tmp_path / "dla46x_c.pth"), "-o", str(out), "--set", "head.dropout=0.1"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "parameters 1,068,440" in text and "aggregation.residual: False" in text
    assert "head.dropout" not in text.split("assumed")[1].split("module")[0]
    spec = load_spec(out)
    assert spec.block.options.cardinality == 32 and spec.head.dropout == 0.1
    assert yaml.safe_load(out.read_text())["name"] == "dla46x_c"
    assert main(args) == 0  # its own file: replaced


def test_cli_infer_refuses_a_foreign_checkpoint(tmp_path: Path) -> None:
    torch.save(timm.create_model("resnet18").state_dict(), tmp_path / "r18.pth")
    r = subprocess.run(
        [sys.executable, "-m", "dlagraph", "infer", str(tmp_path / "r18.pth")],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith("error: not a DLA checkpoint: tensor conv1.weight")
    assert main(["infer", str(tmp_path / "r18.pth"), "--set", "oops"]) == 2


def test_cli_diff_levels_tensors_and_first_difference(capsys: pytest.CaptureFixture) -> None:
    assert main(["diff", "dla62_s", "dla104_s"]) == 0
    out = capsys.readouterr().out
    assert "level3       256       2 -> 3  4 -> 8" in out
    assert "total" in out and "+8,956,928" in out  # 26,309,272 - 17,352,344
    assert "first module that differs: level2 (aggregation:" in out
    assert "116 the same" in out


def test_diff_names_renames_and_reshapes(tmp_path: Path) -> None:
    from dlagraph.inspect.diff import diff_tensors, load_side

    torch.save(timm.create_model("dla34", num_classes=10).state_dict(), tmp_path / "d.pth")
    a, b = load_side(str(tmp_path / "d.pth")), load_side("centernet_dla34")
    d = diff_tensors(a.shapes, b.shapes)
    backbone = [k for k in a.shapes if not k.startswith("fc.")]
    assert sorted(old for old, _ in d.renamed) == sorted(backbone)  # all under base. in B
    assert all(new == "base." + old for old, new in d.renamed)
    assert d.removed == ["fc.weight", "fc.bias"] and not d.reshaped
    d = diff_tensors(a.shapes, load_side("dla36").shapes)
    assert d.reshaped == [("fc.weight", (10, 512, 1, 1), (1000, 512, 1, 1)),
                          ("fc.bias", (10,), (1000,))]  # fmt: skip
    d = diff_tensors(load_side("dla36").shapes, meta_shapes_official("dla36"))
    assert len(d.renamed) == 0 and {k.split(".")[1] for k in d.added} == {"project"}


def meta_shapes_official(name: str) -> dict:
    spec = load_spec(name).model_copy(update={"layout": "official"})
    return {k: tuple(v.shape) for k, v in meta_state(spec).items()}


# ---- transfer loading ------------------------------------------------------------------------


def _levels(model: Any, n: int) -> list:
    with torch.no_grad():
        return model.eval().forward_intermediates(X, list(range(n)), intermediates_only=True)


def test_transfer_dla62_s_into_dla104_s_keeps_the_levels_before_the_first_difference() -> None:
    from dlagraph.inspect.diff import first_difference

    torch.manual_seed(0)
    a, b = build_module("dla62_s"), build_module("dla104_s")
    report = dlagraph.load_weights(b, a.state_dict(), transfer=True)
    table = {r.split()[0]: r.split()[1:] for r in report.transfer_table()[1:]}
    sa, sb = a.state_dict(), b.state_dict()
    for level in ("base_layer", "level2", "level3", "level5"):  # counted from the state dicts
        mine = [k for k in sb if k.split(".")[0] == level]
        fits = [k for k in mine if k in sa and sa[k].shape == sb[k].shape]
        nowhere = [k for k in sa if k.split(".")[0] == level and k not in sb]
        assert table[level] == [str(len(fits)), str(len(mine) - len(fits)), str(len(nowhere))]
    assert table["level2"][1:] == ["0", "0"] and table["level3"][0] == "0"
    assert sum(int(row[0]) + int(row[1]) for row in table.values()) == len(sb)  # each once
    assert f"transferred {len(report.matched)} tensors" in str(report)
    module, why = first_difference(load_spec("dla62_s"), load_spec("dla104_s"))
    assert module == "level2" and "residual False" in why  # eq. 4 in dla104_s only
    la, lb = _levels(a, 3), _levels(b, 3)
    assert torch.equal(la[0], lb[0]) and torch.equal(la[1], lb[1])  # before level2: identical
    assert not torch.equal(la[2], lb[2])


def test_transfer_across_a_deeper_level_keeps_everything_before_it() -> None:
    from dlagraph.inspect.diff import first_difference

    data = load_spec("dla104_s").to_dict()
    data["levels"][4]["depth"] = 3  # Level 5 shallower: levels 0-3 unchanged
    torch.manual_seed(0)
    a, b = build_module(data), build_module("dla104_s")
    assert first_difference(load_spec(data), load_spec("dla104_s"))[0] == "level4"
    dlagraph.load_weights(b, a.state_dict(), transfer=True)
    la, lb = _levels(a, 6), _levels(b, 6)
    assert all(torch.equal(la[i], lb[i]) for i in range(4))
    assert not torch.equal(la[4], lb[4])


# ---- any shapes, any sizes, any names -------------------------------------------------------------


def _shapes_of(name: str) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in meta_state(name).items()}


@pytest.fixture(scope="module")
def preset_shapes() -> dict[str, dict[str, tuple[int, ...]]]:
    return {n: _shapes_of(n) for n in ("dla36", "dla48_s_s", "dla60_res2net", "dla36_seg_cityscapes",
                                       "dla34_up", "centernet_tiny_shapes")}  # fmt: skip


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_damaged_shapes_give_a_dlagraph_error_naming_a_tensor(
    preset_shapes: dict, data: Any
) -> None:
    """Tensors reshaped (a dimension dropped, added, emptied or scaled), removed or renamed: infer
    answers with a spec or a DlagraphError, never an IndexError or KeyError."""
    name = data.draw(st.sampled_from(sorted(preset_shapes)))
    shapes = dict(preset_shapes[name])
    keys = sorted(shapes)
    for _ in range(data.draw(st.integers(1, 3))):
        k = data.draw(st.sampled_from(keys))
        if k not in shapes:
            continue
        s, how = (
            shapes[k],
            data.draw(st.sampled_from(["drop", "add", "zero", "scale", "del", "rank0"])),
        )
        if how == "del":
            del shapes[k]
        else:
            shapes[k] = {"drop": s[:-1], "add": (*s, 1), "zero": (0, *s[1:]), "rank0": (),
                         "scale": tuple(3 * x for x in s)}[how]  # fmt: skip
    sd = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    try:
        infer_checkpoint(sd)
    except DlagraphError as e:
        assert len(str(e).splitlines()) == 1


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"level2.root.conv.weight": (128, 384)}, "level2.root.conv.weight [128, 384] has 2 dim"),
        ({"level3.tree1.tree1.conv2.weight": (0, 128, 3, 3)}, "is empty"),
        ({"fc.weight": (1000,)}, "tensor fc.weight [1000] has 1 dimensions where a DLA's has 4"),
    ],
)
def test_shapes_are_checked_before_use(preset_shapes: dict, change: dict, problem: str) -> None:
    sd = {k: torch.empty(s, device="meta") for k, s in {**preset_shapes["dla36"], **change}.items()}
    with pytest.raises(DlagraphError, match=re.escape(problem)):
        infer_checkpoint(sd)


def test_a_missing_companion_tensor_is_named(preset_shapes: dict) -> None:
    shapes = dict(preset_shapes["dla36_seg_cityscapes"])
    del shapes["ida_up.proj_1.0.weight"]
    with pytest.raises(DlagraphError, match="lacks tensor ida_up.proj_1.0.weight, which IDA"):
        infer_checkpoint({k: torch.empty(s, device="meta") for k, s in shapes.items()})


def test_a_hundred_thousand_tensors_are_answered_in_seconds(preset_shapes: dict) -> None:
    import time

    many = {k: torch.empty(s, device="meta") for k, s in preset_shapes["dla36"].items()}
    many.update({f"level{i}.conv.weight": torch.empty(1, 1, 3, 3, device="meta")
                 for i in range(6, 100_000)})  # fmt: skip
    start = time.perf_counter()
    with pytest.raises(DlagraphError, match="level modules, a DLA at most 18"):
        infer_checkpoint(many)
    wide = dict(many)
    for i in range(6, 100_000):
        del wide[f"level{i}.conv.weight"]
    wide.update({f"level3.x{i}.weight": torch.empty(1, device="meta") for i in range(100_000)})
    with pytest.raises(DlagraphError, match="level3.x"):
        infer_checkpoint(wide)
    assert time.perf_counter() - start < 20


def test_hostile_tensor_names_are_escaped_and_clipped(preset_shapes: dict) -> None:
    sd = {k: torch.empty(s, device="meta") for k, s in preset_shapes["dla36"].items()}
    sd["level2.x\nerror: fake" + "y" * 500] = torch.empty(3, device="meta")
    with pytest.raises(DlagraphError) as e:
        infer_checkpoint(sd)
    assert (
        "\n" not in str(e.value) and "x\\nerror: fake" in str(e.value) and len(str(e.value)) < 300
    )


@pytest.mark.parametrize(
    ("stem", "name"),
    [("random", "random_dla"), ("class", "class_dla"), ("3x", "dla_3x"), ("--", "inferred"),
     ("My Net.v2", "my_net_v2"), ("torch", "torch_dla")],
)  # fmt: skip
def test_a_checkpoint_named_like_a_module_gets_a_fallback_name(
    tmp_path: Path, stem: str, name: str
) -> None:
    path = tmp_path / f"{stem}.pth"
    torch.save(build_module("dla_tiny_digits").state_dict(), path)
    inf = infer_checkpoint(path)
    assert inf.spec.name == name
    assert any(a.startswith(f"name: {name!r}") for a in inf.assumptions), inf.assumptions


def test_set_errors_are_one_line_each(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "w.pth"
    torch.save(build_module("dla_tiny_digits").state_dict(), path)
    sets = ["levels.x.channels=3", "levels.99.depth=2", "block.type.extra=1", "a\nb=1"]
    args = ["infer", str(path)] + [x for s in sets for x in ("--set", s)]
    assert main(args) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[:3] == [
        "error: --set 'levels.x.channels': 'x' is not an index 0..4 of its list",
        "error: --set 'levels.99.depth': '99' is not an index 0..4 of its list",
        "error: --set 'block.type.extra': 'type' is not a mapping or list in the spec",
    ]


def test_infer_output_echoes_the_file_name_as_one_comment_line(tmp_path: Path) -> None:
    path = tmp_path / "we\nird: [x].pth"
    torch.save(build_module("dla_tiny_digits").state_dict(), path)
    out = tmp_path / "spec.yaml"
    assert main(["infer", str(path), "-o", str(out)]) == 0
    text = out.read_text()
    assert text.splitlines()[0].startswith("# Generated by dlagraph") and "we\\nird" in text
    assert load_spec(out).name == "we_ird_x"


def test_diff_takes_a_name_and_refuses_negative_examples(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = tmp_path / "random.pth"
    torch.save(build_module("dla_tiny_digits").state_dict(), path)
    assert main(["diff", str(path), "dla_tiny_digits", "--name", "mine"]) == 0
    assert "A: " + str(path) + " (checkpoint): mine, layout timm" in capsys.readouterr().out
    assert main(["diff", str(path), "dla_tiny_digits"]) == 0  # the fallback name: no error
    with pytest.raises(SystemExit) as e:
        main(["diff", str(path), "dla36", "--examples", "-1"])
    assert e.value.code == 2 and "must be 0 or more" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["dla_tiny_digits", "dla34_up", "centernet_tiny_shapes"])
def test_every_hint_infer_prints_is_a_command_that_works(name: str, tmp_path: Path) -> None:
    """Each ``--set ...`` an assumption suggests, followed as printed, gives a spec that still
    reproduces every tensor of the checkpoint."""
    import re
    import shlex

    path = tmp_path / "w.pth"
    torch.save(build_module(name).state_dict(), path)
    hints = [
        m
        for a in infer_checkpoint(path).assumptions
        for m in re.findall(r"(--set \S+=[^\s)]+(?: --set \S+=[^\s)]+)*)", a)
    ]
    assert hints or name != "dla_tiny_digits"
    for hint in hints:
        words = shlex.split(hint)
        assert main(["infer", str(path), *words, "-o", str(tmp_path / "s.yaml"), "--force"]) == 0, (
            hint
        )


def test_diff_costs_both_sides_at_one_size(capsys: pytest.CaptureFixture) -> None:
    """Both sides' MACs at one input size (each at its own once made the digits network's
    unchanged stem differ by its MACs): A's input_size where B takes it; ``--input-size`` sets
    it; sides whose strides differ meet at a size both divide."""
    from dlagraph.inspect.diff import common_size

    fit = str(ROOT / "examples" / "dla_tiny_digits_fit.yaml")
    assert main(["diff", "dla_tiny_digits", fit]) == 0
    out = capsys.readouterr().out
    assert "levels (MACs at 32x32):" in out
    stem = next(line for line in out.splitlines() if line.startswith("base_layer"))
    assert stem.split()[-1] == "0"  # the unchanged stem: no difference in MACs
    assert main(["diff", "dla_tiny_digits", fit, "--input-size", "64", "64"]) == 0
    assert "levels (MACs at 64x64):" in capsys.readouterr().out
    a, b = load_spec("dla_tiny_digits"), load_spec("dla36")  # strides 16 and 32
    assert common_size(a, b) == (32, 32)  # A's own, which dla36 takes
    big = load_spec({**a.to_dict(), "input_size": [48, 48]})  # not a multiple of 32
    assert common_size(big, b) == (224, 224)  # then B's own, which A takes
    assert common_size(big, b, (64, 96)) == (64, 96)
    rect = load_spec({**b.to_dict(), "input_size": [64, 96]})  # B states a size, A does not
    assert common_size(b, rect) == (64, 96)


def test_a_checkpoint_that_stores_its_spec_is_read_as_that_spec(tmp_path: Path) -> None:
    """dlagraph's training examples save ``{"model": ..., "spec": ...}``: the stored spec is
    taken (its name, a residual root the weights cannot show) with no assumptions, where its
    state dict is the checkpoint's; a stored spec that does not match is inferred over."""
    import torch

    spec = load_spec(TINY).to_dict()
    spec["aggregation"] = {**spec.get("aggregation", {}), "residual": True}
    spec["name"] = "my_digits"
    sd = build_module(spec).state_dict()
    path = tmp_path / "last.pt"
    torch.save({"model": sd, "epoch": 3, "spec": spec}, path)
    found = infer_checkpoint(path)
    assert found.assumptions == [] and found.spec.name == "my_digits" and found.carried
    assert found.spec.aggregation.residual is True
    assert infer_checkpoint(path, {"name": "other"}).spec.name == "other"
    assert infer_checkpoint(path, name="named").spec.name == "named"  # infer --name
    fc = tuple(sd["fc.weight"].shape)
    for stored, why in (
        ({**spec, "head": {"type": "classifier", "num_classes": 7}},
         f"does not match its weights (first: 'fc.weight', {fc} in the checkpoint, "
         f"{(7, *fc[1:])} in the spec)"),
        ({"levels": "x"}, "does not load ("),
        (["not", "a", "spec"], "is not a mapping (a list)"),
    ):  # fmt: skip
        torch.save({"model": sd, "spec": stored}, path)
        found = infer_checkpoint(path)
        assert found.spec.aggregation.residual is False  # inferred: the weights cannot show it
        assert any(a.startswith("aggregation.residual") for a in found.assumptions)
        said = next(a for a in found.assumptions if a.startswith("spec: "))
        assert why in said and said.endswith("inferred from the tensors instead"), said
        assert not found.carried


def test_cli_infer_says_the_spec_came_from_the_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import torch

    spec = load_spec(TINY).to_dict()
    torch.save({"model": build_module(spec).state_dict(), "spec": spec}, tmp_path / "last.pt")
    assert main(["infer", str(tmp_path / "last.pt"), "-o", str(tmp_path / "s.yaml")]) == 0
    out = capsys.readouterr().out
    assert "carries its spec" in out and "assumed" not in out
    assert "the spec last.pt carries; every tensor" in (tmp_path / "s.yaml").read_text()
