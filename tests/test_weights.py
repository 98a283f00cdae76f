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
