"""int8 export within a measured budget: ``dlagraph export --validation digits|folder:PATH
--max-drop X`` and ``dlagraph.export(..., validation=, max_drop=)``. The metric is recorded in the
metadata and checked here against top-1 computed independently (scikit-learn's digits read
directly, the artifact run by its own runtime); an artifact over its budget is not written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

import dlagraph
from dlagraph.base.errors import DlagraphError
from dlagraph.cli import main
from dlagraph.deploy.calibration import labelled
from dlagraph.deploy.prepare import in_batches_of

from .conftest import THREADS
from .helpers import import_file
from .test_accuracy import closeness
from .test_export import run_artifact

pytest.importorskip("openvino")
pytest.importorskip("onnxruntime")

TINY = "dla_tiny_digits"
CFG = {"mean": (0.5,), "std": (0.5,)}


def _digits_tail(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The last ``n`` of scikit-learn's digits at 32x32, as the tiny network takes them."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images[-n:], dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
    return (x - 0.5) / 0.5, torch.tensor(d.target[-n:])


def _png(path: Path, value: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (8, 8), value).save(path)


def test_a_class_folder_tree_gives_labels_in_name_order_taken_in_turn(tmp_path: Path) -> None:
    for c, count in (("cat", 3), ("ant", 1), ("bee", 2)):
        for i in range(count):
            _png(tmp_path / c / f"{i}.png", 10 * i)
    _png(tmp_path / "loose.png", 0)  # beside the class folders: not a class, not read
    items = labelled(f"folder:{tmp_path}", 1, (8, 8), CFG, count=5, batch=4).items
    labels = torch.cat([y for _, y in items]).tolist()
    assert labels == [0, 1, 2, 1, 2]  # ant, bee, cat; then bee, cat: each class in turn
    assert [len(x) for x, _ in items] == [4, 1] and items[0][0].shape[1:] == (1, 8, 8)
    # the images normalised as calibration's are: (x - mean) / std
    assert float(items[0][0][0].mean()) == pytest.approx((0 - 0.5) / 0.5)


def test_digits_validation_reads_the_digits_calibration_does_not(tmp_path: Path) -> None:
    x, y = _digits_tail(200)
    items = labelled("digits", 1, (32, 32), CFG, count=200, batch=64).items
    got_x, got_y = torch.cat([a for a, _ in items]), torch.cat([b for _, b in items])
    assert torch.equal(got_y, y) and torch.allclose(got_x, x)


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        ({}, "no class folders under"),
        ({"a/x.png": 1, "b/notes.txt": 0}, "class folder 'b' under"),
        ({"a/x.png": 1, "b/y.png": "not a png"}, "validation: cannot read"),
        ({"a/x.png": 1}, "validation: 1 image; top-1 needs at least 2"),
    ],
)
def test_folders_that_cannot_validate_are_one_line(
    layout: dict, expected: str, tmp_path: Path
) -> None:
    for name, content in layout.items():
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, int) and name.endswith(".png"):
            _png(p, content)
        else:
            p.write_text(str(content))
    with pytest.raises(DlagraphError) as e:
        labelled(f"folder:{tmp_path}", 1, (8, 8), CFG)
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_a_loop_of_links_and_a_file_are_refused(tmp_path: Path) -> None:
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (tmp_path / "f.png").write_bytes(b"")
    for where, expected in (("loop", "cannot be read"), ("f.png", "is not a folder")):
        with pytest.raises(DlagraphError, match=expected):
            labelled(f"folder:{tmp_path / where}", 1, (8, 8), CFG)


def test_fewer_images_than_asked_warn_and_more_classes_than_the_network_are_refused(
    tmp_path: Path,
) -> None:
    for c in ("a", "b", "c"):
        _png(tmp_path / c / "0.png", 0)
    with pytest.warns(dlagraph.DlagraphWarning, match=r"3 images from .* \(50 asked\)"):
        read = labelled(f"folder:{tmp_path}", 1, (8, 8), CFG, count=50)
    assert len(read) == 3 and read.classes == ["a", "b", "c"]
    with pytest.raises(DlagraphError, match="3 class folders under .*, the network has 2 classes"):
        labelled(f"folder:{tmp_path}", 1, (8, 8), CFG, num_classes=2)


def test_a_folder_path_with_a_tilde_is_the_users_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for c in ("a", "b"):
        _png(tmp_path / "set" / c / "0.png", 0)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert labelled("folder:~/set", 1, (8, 8), CFG, count=2).classes == ["a", "b"]


@pytest.mark.parametrize("calibration", ["{root}/", "{root}/a", "{root}/..", "~/set"])
def test_the_calibration_folder_as_validation_warns(
    calibration: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same folder, one inside the other either way, and ``~`` all overlap."""
    root = tmp_path / "set"
    for c in ("a", "b"):
        _png(root / c / "0.png", 0)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.warns(dlagraph.DlagraphWarning, match="calibrated on"):
        labelled(
            f"folder:{root}",
            1,
            (8, 8),
            CFG,
            2,
            calibration="folder:" + calibration.format(root=root),
        )


def test_a_linked_class_folder_is_a_class_and_missing_classes_warn(tmp_path: Path) -> None:
    """As torchvision's ImageFolder: a link to a folder is a class (dropping it would shift every
    later label); fewer class folders than the network's classes say what the labels are."""
    for c in ("a", "c"):
        _png(tmp_path / "set" / c / "0.png", 0)
    _png(tmp_path / "elsewhere" / "0.png", 0)
    (tmp_path / "set" / "b").symlink_to(tmp_path / "elsewhere")
    read = labelled(f"folder:{tmp_path / 'set'}", 1, (8, 8), CFG, 3, num_classes=3)
    assert read.classes == ["a", "b", "c"] and torch.cat([y for _, y in read.items]).tolist() == [
        0,
        1,
        2,
    ]
    with pytest.warns(
        dlagraph.DlagraphWarning, match="3 class folders .* the network has 4 classes"
    ):
        labelled(f"folder:{tmp_path / 'set'}", 1, (8, 8), CFG, 3, num_classes=4)


def test_folders_nested_too_deeply_to_walk_are_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """os.walk recurses once per level (Python < 3.12): a tree deeper than the recursion limit
    (lowered here, so that the test's own clean-up can still remove the tree)."""
    import sys

    _png(tmp_path / "set" / "b" / "0.png", 0)
    deep = tmp_path / "set" / "a" / Path(*["a"] * 300)
    deep.mkdir(parents=True)
    (deep / "x.png").write_bytes(b"")
    monkeypatch.setattr(sys, "getrecursionlimit", sys.getrecursionlimit)  # (restored after)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(250)
    try:
        with pytest.raises(DlagraphError, match="nest too deeply to walk"):
            labelled(f"folder:{tmp_path / 'set'}", 1, (8, 8), CFG, 5)
    finally:
        sys.setrecursionlimit(limit)


def test_a_rise_in_the_metric_reads_as_a_gain() -> None:
    from dlagraph.deploy.accuracy import AccuracyCheck

    # the runtimes' rounding (1e-5 of the metric's units) is forgiven, no more
    assert AccuracyCheck("m", 0.9, 0.9 - 9e-6, 0.0).within
    assert not AccuracyCheck("m", 0.9, 0.9 - 2e-5, 0.0).within
    assert "(gain 0.04, within max_drop 0.005)" in str(AccuracyCheck("top-1", 0.87, 0.91, 0.005))
    assert "(drop 0.01, over max_drop 0.005)" in str(AccuracyCheck("top-1", 0.9, 0.89, 0.005))


def test_in_batches_of_runs_a_fixed_batch_artifact_at_any_batch() -> None:
    seen = []

    def artifact(x: torch.Tensor) -> dict[str, torch.Tensor]:
        assert len(x) == 3  # the artifact's only batch size
        seen.append(len(x))
        return {"a": x.sum((1, 2, 3)), "b": [x[:, :1, 0, 0]]}

    x = torch.randn(7, 2, 2, 2)
    out = in_batches_of(artifact, 3)(x)
    assert torch.allclose(out["a"], x.sum((1, 2, 3))) and out["b"][0].shape == (7, 1)
    assert seen == [3, 3, 3]  # 3 + 3 + 1 filled to 3, whose copies are dropped


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"validation": "digits"}, "validation: only int8"),
        ({"precision": "int8", "calibration": "random", "validation": "imagenet"}, "validation: give digits or folder:PATH"),
        ({"precision": "int8", "calibration": "random", "validation": "digits", "validation_images": 0}, "validation images: give 1 to 100,000"),
        ({"precision": "int8", "calibration": "random", "validation": "digits", "validation_images": True}, "validation images: give 1 to 100,000"),
        ({"precision": "int8", "calibration": "random", "max_drop": 0.1}, "max_drop: is the budget of a validation metric"),
        ({"precision": "int8", "calibration": "random", "validation": "digits", "max_drop": float("nan")}, "max_drop: give a finite number >= 0"),
        ({"precision": "int8", "calibration": "digits", "calibration_images": 1700, "validation": "digits"}, "at most 65 can validate apart"),
        ({"precision": "int8", "calibration": "random", "validation": [(torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))]}, "validation[0]: has 3 channels"),
        ({"precision": "int8", "calibration": "random", "validation": [(torch.randn(2, 1, 64, 64), torch.tensor([0, 1]))]}, "validation[0]: images of 64x64; the artifact takes 32x32"),
        ({"precision": "int8", "calibration": "random", "validation": [(torch.randn(2, 1, 32, 32), torch.tensor([True, False]))]}, "validation[0]: labels must be a 1-D integer"),
        ({"precision": "int8", "calibration": "digits", "calibration_images": 5000, "validation": "digits", "validation_images": 1}, "so at most 0 can validate"),
    ],
)  # fmt: skip
def test_bad_validation_is_one_line_and_writes_nothing(
    kwargs: dict, expected: str, tmp_path: Path
) -> None:
    with pytest.raises(DlagraphError) as e:
        dlagraph.export(TINY, "onnx", tmp_path / "out", size=(32, 32), **kwargs)
    assert expected in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_network_without_a_classifier_is_told_to_give_a_function(tmp_path: Path) -> None:
    spec = dlagraph.load_spec(TINY).to_dict()
    spec["head"] = {"type": "features", "out_indices": [1, 2, 3, 4]}
    with pytest.raises(DlagraphError, match="has no classifier head: give a metric function"):
        dlagraph.export(
            spec, "onnx", tmp_path, size=(32, 32), precision="int8", calibration="random",
            validation="digits",
        )  # fmt: skip


@pytest.mark.slow  # an ONNX export and two int8 quantizations: ~7 s, over the quick run's share
def test_an_artifact_over_its_budget_is_not_written(tmp_path: Path) -> None:
    """A budget of 0 on closeness to the fp32 outputs: any int8 error is over it. ONNX tries
    every conv in int8, then the stem in fp32; both are over, so nothing is written."""
    torch.manual_seed(0)
    model = dlagraph.build_module(TINY).eval()
    metric = closeness(model, [torch.randn(4, 1, 32, 32)])
    with pytest.raises(DlagraphError) as e:
        dlagraph.export(
            model, "onnx", tmp_path, precision="int8", calibration="random", size=(32, 32),
            validation=metric, max_drop=0.0,
        )  # fmt: skip
    text = str(e.value)
    assert "int8 over its budget: metric:" in text and "not written" in text
    assert "format openvino" in text and "\n" not in text
    assert not list(tmp_path.iterdir())


def test_metric_edges_are_one_line() -> None:
    from dlagraph.cli.common import budget
    from dlagraph.deploy.accuracy import metric_of, top1

    with pytest.raises(DlagraphError, match="past float's range"):
        metric_of(lambda m: 10**400)(lambda x: x)
    seg = [(torch.zeros(2, 1, 8, 8), torch.tensor([0, 1]))]
    with pytest.raises(DlagraphError, match="returns a 4-D output: give a metric function"):
        top1(lambda x: torch.zeros(2, 3, 8, 8), seg)
    assert str(budget("-0")) == "0.0"


@pytest.mark.slow  # an ONNX int8 export: ~5 s, over the quick run's share
def test_a_metric_function_is_handed_a_module_at_any_batch(tmp_path: Path) -> None:
    """The artifact of batch 2, as a module (``eval()`` works), run on a batch of 5."""
    seen = []

    def metric(m: torch.nn.Module) -> float:
        m.eval()
        out = m(torch.zeros(5, 1, 32, 32))
        seen.append(tuple(out.shape))
        return 1.0

    result = dlagraph.export(
        TINY, "onnx", tmp_path, precision="int8", calibration="random", size=(32, 32), batch=2,
        validation=metric,
    )  # fmt: skip
    assert seen == [(5, 10), (5, 10)]  # fp32, then the artifact
    assert result.metadata["accuracy"]["validation"] == "the function metric"


def test_cli_validation_flags_that_cannot_work_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    base = ["export", TINY, "--format", "onnx", "--size", "32", "-o", str(tmp_path)]
    int8 = [*base, "--precision", "int8", "--calibration", "random"]
    for args, expected in (
        ([*base, "--max-drop", "0.1"], "--max-drop is for --validation"),
        ([*base, "--validation-images", "9"], "--validation-images is for --validation"),
        ([*base, "--validation", "digits"], "--validation measures int8 (the precision is fp32)"),
        ([*int8, "--validation", "digits", "--max-drop", "inf"], "must be a fraction from 0 to 1"),
        ([*int8, "--validation", "digits", "--max-drop", "1.5"], "0.01 for one point of top-1"),
        (
            [*int8, "--validation", "digits", "--validation-images", "200000"],
            "must be 1 to 100,000",
        ),
        ([*int8, "--calibration-images", "200000"], "must be 1 to 100,000"),
        ([*int8, "--validation", "digits", "--max-drop", "x"], "give a number such as 0.005"),
        ([*int8, "--validation", f"folder:{tmp_path}"], "no class folders under"),
    ):
        with pytest.raises(SystemExit) as e:
            raise SystemExit(main(args))
        err = capsys.readouterr().err
        assert e.value.code == 2 and expected in err and "Traceback" not in err, (args, err)
    assert not list(tmp_path.glob("*.onnx"))


@pytest.mark.slow  # an ONNX int8 export: ~4 s, over the quick run's share
def test_cli_validation_records_the_metric(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    int8 = ["export", TINY, "--format", "onnx", "--size", "32", "-o", str(tmp_path),
            "--precision", "int8", "--calibration", "random"]  # fmt: skip
    assert (
        main([*int8, "--validation", "digits", "--validation-images", "64", "--max-drop", "1"]) == 0
    )
    out = capsys.readouterr().out
    assert "top-1: int8" in out and "within max_drop 1" in out
    meta = json.loads((tmp_path / f"{TINY}_int8.onnx.json").read_text())
    assert meta["accuracy"]["validation"] == "digits (64 images)"
    assert meta["accuracy"]["classes"] == [str(i) for i in range(10)]
    assert meta["accuracy"]["max_drop"] == 1.0 and meta["load"] is None


@pytest.mark.slow  # an int8 program and a fresh torch process: ~14 s
def test_an_int8_pt2_says_how_to_load_it_and_loads_so_in_a_fresh_process(tmp_path: Path) -> None:
    """torch.export.load alone cannot resolve the quantized ops an int8 program calls; after
    ``import torchao`` it can: the metadata and the command line say so."""
    import subprocess
    import sys

    pytest.importorskip("torchao")
    result = dlagraph.export(
        TINY, "pt2", tmp_path, precision="int8", calibration="random", size=(32, 32)
    )
    assert "import torchao" in result.metadata["load"]
    code = (
        "import sys, torch\n"
        "try:\n    torch.export.load(sys.argv[1])\nexcept Exception:\n    print('plain: no')\n"
        "import torchao\n"
        "out = torch.export.load(sys.argv[1]).module()(torch.zeros(1, 1, 32, 32))\n"
        "print('after torchao:', tuple(out.shape))\n"
    )
    path = next(p for p in result.files if p.suffix == ".pt2")
    r = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "plain: no" in r.stdout and "after torchao: (1, 10)" in r.stdout


def loaded(fmt: str, files: list[Path]):  # noqa: ANN201
    """The artifact loaded once by its own runtime (as :func:`run_artifact` runs it)."""
    path = next(p for p in files if not p.name.endswith(".json"))
    if fmt == "pt2":
        program = torch.export.load(str(path)).module()
        return lambda x: program(x)
    return lambda x: run_artifact(fmt, files, x)


@pytest.mark.slow  # trains for ~6 s, then three int8 exports measured on 300 images: ~30 s
def test_a_trained_network_exports_within_the_budget_measured_independently(
    tmp_path: Path,
) -> None:
    """The tiny digits network trained briefly (two epochs: about 0.9 top-1), exported by each
    path of its own (OpenVINO's accuracy control on a fixed batch, ONNX's trial of the stem, pt2
    measured by export)."""
    root = Path(__file__).resolve().parent.parent
    clf = import_file(root / "examples" / "train_classifier.py", "_example_train_classifier")
    clf.main(["--epochs", "2", "--threads", str(THREADS), "--out", str(tmp_path), "--seed", "0"])
    trained = tmp_path / "last.pt"
    ckpt = torch.load(trained, weights_only=True)
    model = dlagraph.build_module(ckpt["spec"]).eval()
    model.load_state_dict(ckpt["model"])
    x, y = _digits_tail(300)
    with torch.no_grad():
        fp32 = float((model(x).argmax(1) == y).float().mean())
    assert fp32 > 0.8

    # onnx: every conv int8 strays from this network's outputs past the artifact check's limit
    # (a relative error of ~0.6, though its top-1 is within budget): the stem conv then stays in
    # fp32 instead of the export failing its check
    def top1(m: torch.nn.Module) -> float:  # a user's metric: it calls eval() on the module
        m.eval()
        with torch.no_grad():
            return float((m(x).argmax(1) == y).float().mean())

    # onnx with a metric function (no labelled images of its own): every conv int8 is checked
    # against the check images too before it is kept
    onnx = dlagraph.export(
        trained, "onnx", tmp_path / "f", precision="int8", calibration="digits",
        calibration_images=64, batch="dynamic", validation=top1,
    )  # fmt: skip
    assert onnx.accuracy is not None and onnx.accuracy.fp32 == pytest.approx(fp32)
    for fmt in ("openvino", "onnx", "pt2"):
        result = dlagraph.export(
            trained, fmt, tmp_path / fmt, precision="int8", calibration="digits", batch=4,
            validation="digits", validation_images=300, max_drop=0.02,
        )  # fmt: skip
        run = loaded(fmt, result.files)
        int8 = float((torch.cat([run(xb) for xb in x.split(4)]).argmax(1) == y).float().mean())
        acc = result.metadata["accuracy"]
        assert acc["fp32"] == pytest.approx(fp32, abs=1e-6), fmt
        assert acc["int8"] == pytest.approx(int8, abs=1e-6) and acc["drop"] <= 0.02 + 1e-5, fmt
        assert result.accuracy is not None and result.accuracy.within
        assert f"top-1: int8 {int8:.6g}" in str(result)
        assert result.metadata["spec"]["name"] == "dla_tiny_digits"  # the stored spec, not "last"


@pytest.mark.slow  # NNCF's accuracy control restores layer after layer: ~25 s
def test_openvino_that_keeps_every_layer_in_float_is_not_written_as_int8(tmp_path: Path) -> None:
    """A budget of 0 on closeness to fp32's outputs, scaled up so that int8's error is far past
    the runtimes' rounding: only all-float meets it, which is not an int8 model."""
    torch.manual_seed(0)
    model = dlagraph.build_module(TINY).eval()
    close = closeness(model, [torch.randn(4, 1, 32, 32)])

    def metric(m: torch.nn.Module) -> float:
        return 1e3 * close(m)

    with pytest.raises(DlagraphError, match="kept every layer in floating point .* not written"):
        dlagraph.export(
            model, "openvino", tmp_path, precision="int8", calibration="random", size=(32, 32),
            validation=metric, max_drop=0.0,
        )  # fmt: skip
    assert not list(tmp_path.iterdir())


@pytest.mark.slow  # one ONNX int8 export: ~5 s
def test_class_names_that_are_not_utf8_are_recorded_as_json_text(tmp_path: Path) -> None:
    import os

    root = tmp_path / "set"
    for name in (b"a", b"b\xff"):
        folder = os.path.join(bytes(root), name)
        os.makedirs(folder)
        _png(Path(os.fsdecode(folder)) / "0.png", 0)
    with pytest.warns(dlagraph.DlagraphWarning, match="2 class folders"):
        result = dlagraph.export(
            TINY, "onnx", tmp_path / "out", size=(32, 32), precision="int8", calibration="random",
            validation=f"folder:{root}", validation_images=2, max_drop=1.0,
        )  # fmt: skip
    text = (tmp_path / "out" / f"{TINY}_int8.onnx.json").read_text(encoding="utf-8")
    assert json.loads(text)["accuracy"]["classes"] == ["a", "b\\xff"]
    assert result.metadata["accuracy"]["classes"][1].encode("utf-8")  # encodable text
