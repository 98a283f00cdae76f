"""load_weights: reports, layout conversion, safe file reading."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlagraph import WeightsError, build_module, load_spec, load_weights

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")


@pytest.fixture(scope="module")
def ref_sd() -> dict:
    return timm.create_model("dla34").state_dict()


def official(model_spec: str = "specs/dla36.yaml") -> object:
    return build_module(load_spec(model_spec).model_copy(update={"layout": "official"}))


def test_timm_checkpoint_loads_strictly(ref_sd: dict) -> None:
    report = load_weights(build_module("specs/dla36.yaml"), ref_sd)
    assert report.ok and len(report.matched) == len(ref_sd) and not report.dropped


def test_official_checkpoint_into_timm_layout_drops_dead_projections() -> None:
    off_sd = official().state_dict()
    model = build_module("specs/dla36.yaml")
    report = load_weights(model, off_sd)
    assert sorted({k.rsplit(".", 2)[0] for k in report.dropped}) == [
        "level3.project",
        "level4.project",
    ]
    assert report.by_level()["level3"]["dropped"] == 6
    assert all(
        torch.equal(model.state_dict()[k], v) for k, v in off_sd.items() if k in model.state_dict()
    )


def test_timm_checkpoint_into_official_layout_keeps_model_values(ref_sd: dict) -> None:
    report = load_weights(official(), ref_sd)
    assert report.ok and len(report.kept) == 12


def test_strict_refusal_reports_per_level_and_loads_nothing(ref_sd: dict) -> None:
    model = build_module("specs/dla36.yaml")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    bad = dict(ref_sd)
    bad["fc.weight"] = torch.zeros(10, 512, 1, 1)
    del bad["level2.root.conv.weight"]
    bad["extra.weight"] = torch.zeros(1)
    with pytest.raises(WeightsError) as info:
        load_weights(model, bad)
    text = str(info.value)
    assert "missing: level2.root.conv.weight" in text and "unexpected: extra.weight" in text
    assert "shape: fc.weight: checkpoint [10, 512, 1, 1], model [1000, 512, 1, 1]" in text
    assert "level2: missing 1" in text
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_non_strict_loads_what_fits(ref_sd: dict) -> None:
    model = build_module("specs/dla36.yaml")
    bad = dict(ref_sd)
    bad["fc.weight"] = torch.zeros(10, 512, 1, 1)
    report = load_weights(model, bad, strict=False)
    assert [k for k, _, _ in report.mismatched] == ["fc.weight"]
    assert torch.equal(model.state_dict()["level0.0.weight"], ref_sd["level0.0.weight"])


def test_files_torch_save_safetensors_and_wrappers(tmp_path: Path, ref_sd: dict) -> None:
    from safetensors.torch import save_file

    p = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in ref_sd.items()}}, p)
    assert load_weights(build_module("specs/dla36.yaml"), p).ok
    s = tmp_path / "ckpt.safetensors"
    save_file({k: v.contiguous() for k, v in ref_sd.items()}, str(s))
    assert load_weights(build_module("specs/dla36.yaml"), s).ok


class _Evil:
    def __reduce__(self) -> tuple:
        return (print, ("pwned",))


def test_pickled_code_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    p = tmp_path / "evil.pth"
    torch.save({"x": _Evil()}, p)
    with pytest.raises(WeightsError, match="never unpickles code"):
        load_weights(build_module("specs/dla36.yaml"), p)
    assert "pwned" not in capsys.readouterr().out


def test_prefix_loads_an_imagenet_checkpoint_into_the_dla_up_backbone(ref_sd: dict) -> None:
    model = build_module("specs/dla34_up.yaml")
    before = model.state_dict()["dla_up.ida_0.node_1.0.weight"].clone()
    report = load_weights(model, ref_sd, prefix="base.")
    assert report.ok and len(report.kept) == 12  # the official layout's unused projections
    sd = model.state_dict()
    assert torch.equal(sd["base.level2.tree1.conv1.weight"], ref_sd["level2.tree1.conv1.weight"])
    assert torch.equal(sd["base.fc.weight"], ref_sd["fc.weight"])
    assert torch.equal(sd["dla_up.ida_0.node_1.0.weight"], before)  # the head is untouched


# ---- instant loading: build_module(spec, weights=...) and generated Model.from_weights ----------


@pytest.fixture(scope="module")
def ref() -> object:
    torch.manual_seed(3)
    return timm.create_model("dla34").eval()


def _files(tmp_path: Path, sd: dict) -> list:
    from safetensors.torch import save_file

    save_file(sd, str(tmp_path / "w.safetensors"))
    torch.save(sd, tmp_path / "w.pth")
    torch.save(sd, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)  # torch < 1.6
    return [tmp_path / "w.safetensors", tmp_path / "w.pth", tmp_path / "legacy.pth", sd]


def _generated() -> type:
    from .conftest import ROOT
    from .helpers import import_file

    return import_file(ROOT / "codegen" / "dla36.py", "_dlagraph_weights_dla36").Dla36


def test_build_with_weights_equals_timm_and_owns_its_memory(tmp_path: Path, ref: object) -> None:
    sd = ref.state_dict()
    x = torch.randn(1, 3, 64, 64)
    for source in _files(tmp_path, sd):
        for model in (build_module("dla36", weights=source), _generated().from_weights(source)):
            state = model.state_dict()
            assert list(state) == list(sd) and not any(v.is_meta for v in state.values())
            assert all(torch.equal(v, sd[k]) for k, v in state.items())
            assert not {v.data_ptr() for v in state.values()} & {v.data_ptr() for v in sd.values()}
            assert all(p.requires_grad for p in model.parameters())
            with torch.no_grad():
                assert torch.equal(model.eval()(x), ref(x))
    report = build_module("dla36", weights=sd).load_report
    assert report.ok and len(report.matched) == len(sd)


def test_build_with_weights_skips_the_random_init(monkeypatch: pytest.MonkeyPatch) -> None:
    import dlagraph.backends.torch.interpret as interpret

    sd = build_module("dla_tiny_digits", init=False).state_dict()

    def fail(*args: object) -> None:
        raise AssertionError("initialised before loading")

    def meta_only(init: object) -> object:
        def guarded(*args: object, **kwargs: object) -> object:
            t = args[0] if args else kwargs["tensor"]  # torch's dispatch passes it by name
            assert t.is_meta, "a random init wrote real memory"
            return init(*args, **kwargs)

        return guarded

    monkeypatch.setattr(interpret, "init_weights", fail)  # the official init
    for name in ("kaiming_uniform_", "uniform_", "normal_"):  # nn.Conv2d's own
        monkeypatch.setattr(torch.nn.init, name, meta_only(getattr(torch.nn.init, name)))
    model = build_module("dla_tiny_digits", weights=sd)
    assert all(torch.equal(v, sd[k]) for k, v in model.state_dict().items())


def test_timm_checkpoint_into_official_layout_initialises_the_unused_projections(
    ref: object,
) -> None:
    spec = load_spec("dla36").model_copy(update={"layout": "official"})
    model = build_module(spec, weights=ref.state_dict())
    assert len(model.load_report.kept) == 12
    w = model.level3.project[0].weight  # never in a timm checkpoint: initialised as the official
    n = w.shape[2] * w.shape[3] * w.shape[0]  # code does, N(0, sqrt(2 / n))
    assert not w.is_meta and abs(w.std().item() - (2 / n) ** 0.5) < 0.2 * (2 / n) ** 0.5
    assert torch.equal(model.level3.project[1].running_var, torch.ones_like(w[:, 0, 0, 0]))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), ref(x))


def test_build_with_weights_converts_dtypes_and_refuses_misfits(ref: object) -> None:
    half = {k: v.half() if v.is_floating_point() else v for k, v in ref.state_dict().items()}
    model = build_module("dla36", weights=half)
    assert model.fc.weight.dtype == torch.float32 and model.load_report.converted
    bad = dict(ref.state_dict())
    del bad["level2.root.conv.weight"]
    with pytest.raises(WeightsError, match="missing: level2.root.conv.weight"):
        build_module("dla36", weights=bad)
    with pytest.raises(WeightsError, match="no such checkpoint file"):
        build_module("dla36", weights="nowhere.safetensors")
    with pytest.raises(
        RuntimeError, match=r"does not fit Dla36: missing \[.level2.root.conv.weight.\]"
    ):
        _generated().from_weights(bad)


def test_safetensors_reader_equals_the_library_and_refuses_malformed_files(tmp_path: Path) -> None:
    import json
    import struct

    from safetensors.torch import load_file, save_file

    from dlagraph.backends.torch.safetensors_read import read_safetensors

    sd = {
        "f32": torch.randn(3, 4),
        "bf16": torch.randn(5).bfloat16(),
        "f16": torch.randn(2, 2).half(),
        "scalar": torch.tensor(7),
        "empty": torch.zeros(0, 3),
        "bool": torch.tensor([True, False, True]),
        "i8": torch.arange(-3, 3, dtype=torch.int8),
    }
    save_file(sd, str(tmp_path / "ok.safetensors"), metadata={"format": "pt"})
    ours, ref = (
        read_safetensors(tmp_path / "ok.safetensors"),
        load_file(tmp_path / "ok.safetensors"),
    )
    assert sorted(ours) == sorted(ref)
    assert all(torch.equal(ours[k], ref[k]) and ours[k].dtype == ref[k].dtype for k in ref)

    def file(header: object, data: bytes = b"") -> Path:
        raw = json.dumps(header).encode()
        path = tmp_path / f"bad{len(list(tmp_path.iterdir()))}.safetensors"
        path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
        return path

    entry = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
    cases = {
        "not within the file": file({"a": {**entry, "data_offsets": [0, 16]}}, bytes(8)),
        "bytes for 8": file({"a": {**entry, "data_offsets": [0, 4]}}, bytes(8)),
        "is not one of": file({"a": {**entry, "dtype": "F8_E9"}}, bytes(8)),
        "is not a list of sizes": file({"a": {**entry, "shape": [-2]}}, bytes(8)),
        "not {dtype, shape, data_offsets}": file({"a": [1, 2]}),
        "not a JSON object": file([1, 2]),
    }
    for why, path in cases.items():
        with pytest.raises(ValueError, match=why.replace("{", r"\{").replace("}", r"\}")):
            read_safetensors(path)
        with pytest.raises(WeightsError, match="not a readable safetensors file"):
            build_module("dla_tiny_digits", weights=path)
    huge = tmp_path / "huge.safetensors"
    huge.write_bytes(struct.pack("<Q", 2**62) + b"{}")
    with pytest.raises(ValueError, match="beyond the file"):
        read_safetensors(huge)


@pytest.mark.parametrize(
    "name", ["dla_tiny_seg", "centernet_tiny_shapes", "dla48_s_s", "dla62_s_s_seg_camvid"]
)
def test_every_head_loads_instantly_in_both_backends(name: str) -> None:
    from dlagraph import generate_source

    from .helpers import exec_generated

    model = build_module(name).eval()
    state = model.state_dict()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        want = model(x)
        for other in (
            build_module(name, weights=state),
            exec_generated(generate_source(name)).from_weights(state),
        ):
            got = other.eval()(x)
            pairs = [(got[k], want[k]) for k in want] if isinstance(want, dict) else [(got, want)]
            assert all(torch.equal(a, b) for a, b in pairs)
