"""dlagraph export and optimize's runtimes: every format runs in its own runtime (loaded here
independently of dlagraph) and computes what the PyTorch model computes; int8 keeps a trained
classifier's accuracy; bad input, foreign files and interruptions leave nothing behind."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import dlagraph
from dlagraph.base.errors import DlagraphError

from .helpers import on_a_terminal

ort = pytest.importorskip("onnxruntime")
ov = pytest.importorskip("openvino")
pytest.importorskip("onnxscript")

TINY = "dla_tiny_digits"


def reference(x: torch.Tensor) -> torch.Tensor:
    torch.manual_seed(0)  # export builds a spec with seed 0, as here
    model = dlagraph.build_module(TINY).eval()
    with torch.no_grad():
        return model(x)


def run_artifact(fmt: str, files: list[Path], x: torch.Tensor) -> torch.Tensor:
    """The artifact run by its runtime directly, as a deployer would."""
    path = next(p for p in files if not p.name.endswith(".json"))
    if fmt == "onnx":
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    if fmt == "openvino":
        compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return torch.from_numpy(compiled(x.numpy())[0])
    if fmt == "pt2":
        return torch.export.load(str(path)).module()(x)
    return torch.jit.load(str(path))(x)


@pytest.mark.parametrize(
    "fmt",
    [
        "onnx",
        pytest.param("openvino", marks=pytest.mark.slow),
        pytest.param("pt2", marks=pytest.mark.slow),
        pytest.param("torchscript", marks=pytest.mark.slow),
    ],
)
def test_each_format_runs_in_its_runtime_and_computes_the_model(fmt: str, tmp_path: Path) -> None:
    result = dlagraph.export(TINY, fmt, tmp_path, batch="dynamic", size=(32, 32))
    assert result.max_error < 1e-4 and result.agreement == 1.0
    meta = json.loads((tmp_path / f"{TINY}.{fmt}.json").read_text())
    assert meta["format"] == fmt and meta["input"]["shape"] == ["batch", 1, 32, 32]
    assert meta["input"]["mean"] == [0.5] and meta["num_classes"] == 10
    assert meta["spec"] == dlagraph.load_spec(TINY).to_dict()
    assert set(meta["files"]) == {p.name for p in result.files if not p.name.endswith(".json")}
    for batch in (1, 5):  # any batch: the artifact was exported with a dynamic one
        x = torch.randn(batch, 1, 32, 32)
        got, want = run_artifact(fmt, result.files, x), reference(x)
        assert torch.allclose(got, want, atol=1e-4, rtol=1e-4), (got - want).abs().max()


@pytest.mark.slow  # two CLI processes, each exporting and checking in ONNX Runtime (~20 s)
def test_a_checkpoint_exports_from_the_command_line(tmp_path: Path) -> None:
    torch.manual_seed(3)
    model = dlagraph.build_module(TINY).eval()
    ckpt = tmp_path / "my_digits.pth"
    torch.save(model.state_dict(), ckpt)
    out = tmp_path / "out"
    r = subprocess.run(
        [sys.executable, "-m", "dlagraph", "export", str(ckpt), "--format", "onnx", "--size", "32",
         "-o", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert (
        "onnx fp32 in ONNX Runtime: max error" in r.stdout and "top-1 agreement 1.0000" in r.stdout
    )
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        want = model(x)
    got = run_artifact("onnx", [out / "my_digits.onnx"], x)
    assert torch.allclose(got, want, atol=1e-4)


def test_bad_input_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "o"
    empty = tmp_path / "empty"
    empty.mkdir()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.png").write_bytes(b"\x89PNG not really")
    (broken / "b.png").write_bytes(b"\x89PNG not really")
    from PIL import Image

    bomb = tmp_path / "bomb"  # 45 megapixels in a few kilobytes: over the limit, under twice it
    bomb.mkdir()
    Image.new("1", (9000, 5000)).save(bomb / "a.png")
    Image.new("1", (9000, 5000)).save(bomb / "b.png")
    assert (bomb / "a.png").stat().st_size < 100_000
    limit = Image.MAX_IMAGE_PIXELS
    for kwargs, want in (
        ({"format": "tflite"}, "format: give one of onnx, openvino, pt2, torchscript"),
        ({"format": "onnx", "precision": "bf16"}, "onnx bf16: not supported: ONNX Runtime's"),
        ({"format": "torchscript", "precision": "int8"}, "torchscript int8: not supported"),
        ({"format": "onnx", "precision": "int8"}, "int8 needs --calibration"),
        ({"format": "onnx", "calibration": "digits"}, "calibration is for int8"),
        ({"format": "onnx", "batch": 0}, "batch: give 1 to 4096 or dynamic"),
        ({"format": "onnx", "name": "../x"}, "name: letters, digits"),
        ({"format": "onnx", "size": (33, 33)}, "33x33"),
        ({"format": "onnx", "precision": "int8", "calibration": "imagenet"}, "calibration: give"),
        ({"format": "onnx", "precision": "int8", "calibration": f"folder:{empty}"}, "no images"),
        ({"format": "onnx", "precision": "int8", "calibration": f"folder:{broken}"}, "cannot read"),
        ({"format": "onnx", "precision": "int8", "calibration": f"folder:{tmp_path / 'missing'}"}, "not a folder"),
        ({"format": "onnx", "precision": "int8", "calibration": f"folder:{bomb}"}, "DecompressionBomb"),
        ({"format": "onnx", "precision": "int8", "calibration": "random", "calibration_images": 0}, "give 1 to 100,000"),
        ({"format": "onnx", "precision": "int8", "calibration": "random", "calibration_images": 100_001}, "give 1 to 100,000"),
        ({"format": "onnx", "precision": "int8", "calibration": [torch.randn(2, 3, 32, 32)]}, "calibration[0]: a batch of shape 2x3x32x32"),
        ({"format": "onnx", "precision": "int8", "calibration": [torch.randn(2, 1, 32, 32), torch.randn(2, 1, 31, 31)]}, "calibration[1]"),
        ({"format": "onnx", "precision": "int8", "calibration": []}, "a non-empty list of tensors"),
        ({"format": "onnx", "precision": "int8", "calibration": [torch.full((2, 1, 32, 32), float("nan"))]}, "NaN"),
    ):  # fmt: skip
        with pytest.raises((DlagraphError, ValueError)) as e:
            dlagraph.export(TINY, out=out, **{"size": (32, 32), **kwargs})
        assert want in str(e.value) and len(str(e.value).splitlines()) == 1, str(e.value)
        assert not out.exists()
    assert Image.MAX_IMAGE_PIXELS == limit  # the caller's Pillow limit is put back


def test_foreign_files_are_kept_and_own_files_replaced(tmp_path: Path) -> None:
    mine = tmp_path / f"{TINY}.onnx"
    mine.write_bytes(b"someone's model")
    with pytest.raises(DlagraphError, match="not generated by dlagraph|--force"):
        dlagraph.export(TINY, "onnx", tmp_path, size=(32, 32))
    assert mine.read_bytes() == b"someone's model"
    assert not (tmp_path / f"{TINY}.onnx.json").exists()
    mine.unlink()
    first = dlagraph.export(TINY, "onnx", tmp_path, size=(32, 32))
    again = dlagraph.export(
        TINY, "onnx", tmp_path, size=(32, 32)
    )  # its own files: replaced without --force
    assert [p.name for p in first.files] == [p.name for p in again.files]


def test_an_interrupted_export_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dlagraph.deploy.onnxruntime as ort_module

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(ort_module, "onnxruntime_session", interrupted)
    with pytest.raises(KeyboardInterrupt):
        dlagraph.export(TINY, "onnx", tmp_path / "o", size=(32, 32))
    assert not (tmp_path / "o").exists()


def test_without_the_deploy_extra_the_error_names_it(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['openvino'] = None\n"
        "from dlagraph.cli import main\n"
        "sys.exit(main(['export', 'dla_tiny_digits', '--format', 'openvino', '-o', sys.argv[1]]))\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "o")], capture_output=True, text=True
    )
    assert r.returncode == 2 and not (tmp_path / "o").exists()
    assert (
        r.stderr.strip() == "error: openvino export needs openvino: pip install 'dlagraph[deploy]'"
    )


@pytest.mark.slow  # converts and compiles for two runtimes at three batch sizes: about 13 s
def test_runtime_backends_compute_the_model_at_any_batch() -> None:
    model = dlagraph.build_module(TINY).eval()
    x = torch.randn(4, 1, 32, 32)
    for backend in ("onnxruntime", "openvino"):
        fast = dlagraph.optimize(model, backend=backend, example_input=x)
        for batch in (1, 3):
            xb = torch.randn(batch, 1, 32, 32)
            with torch.no_grad():
                assert torch.allclose(fast(xb), model(xb), atol=1e-4, rtol=1e-4), backend
        assert (
            fast.backend == backend
            and "convert" in str(fast.report)
            or "export" in str(fast.report)
        )
    for kwargs, want in (
        ({"backend": "tensorrt"}, "backend: must be one of torch, openvino, onnxruntime, auto"),
        ({"backend": "onnxruntime", "precision": "bf16", "example_input": x}, "no bf16"),
        ({"backend": "openvino", "precision": "int8", "example_input": x}, "int8 needs calibration"),
        ({"backend": "openvino", "example_input": torch.randn(2, 3, 32, 32)}, "has 3 channels"),
    ):  # fmt: skip
        with pytest.raises(DlagraphError) as e:
            dlagraph.optimize(model, **kwargs)
        assert want in str(e.value), str(e.value)
    # no example: the spec's input_size (the digits network's 32x32), else the smallest square
    # from 224 it takes, as export, bench and fit default
    fast = dlagraph.optimize(model, backend="openvino")
    assert fast(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    sizeless = dlagraph.load_spec(TINY).to_dict()
    del sizeless["input_size"]
    fast = dlagraph.optimize(dlagraph.build_module(sizeless).eval(), backend="openvino")
    assert fast(torch.randn(1, 1, 224, 224)).shape == (1, 10)
    with pytest.raises(DlagraphError, match="built for N x 1 x 224 x 224"):  # said
        fast(torch.randn(1, 1, 32, 32))


def broken_weights(how: str) -> torch.nn.Module:
    """The tiny network with weights no deployment may pass as faithful."""
    torch.manual_seed(0)
    model = dlagraph.build_module(TINY).eval()
    with torch.no_grad():
        if how == "nan":
            model.base_layer[0].weight.view(-1)[0] = float("nan")
        elif how == "negative variance":
            model.base_layer[1].running_var.fill_(-1.0)
        else:  # past float32's range once multiplied through the network
            for p in model.parameters():
                p.mul_(1e30)
    return model


@pytest.mark.parametrize("how", ["nan", "negative variance", "huge"])
def test_a_model_whose_outputs_are_not_finite_is_not_exported(how: str, tmp_path: Path) -> None:
    with pytest.raises(DlagraphError, match="the model's own outputs are not finite") as e:
        dlagraph.export(broken_weights(how), "onnx", tmp_path / "o", size=(32, 32))
    assert len(str(e.value).splitlines()) == 1 and not (tmp_path / "o").exists()


def test_the_comparison_treats_anything_not_finite_as_a_failure() -> None:
    from dlagraph.deploy.check import compare

    ref = torch.ones(2, 10)
    for bad in (float("nan"), float("inf"), -float("inf")):
        got = ref.clone()
        got[1, 3] = bad
        assert compare(ref, got).error == float("inf")  # never below a limit
        with pytest.raises(DlagraphError, match="own outputs are not finite"):
            compare(got, ref)
    assert compare(ref, ref * 1.5).error == pytest.approx(0.5)
    assert compare({"a": ref}, {"a": ref}).error == 0.0
    with pytest.raises(DlagraphError, match="are not the model's"):
        compare(ref, torch.ones(2, 11))


def test_a_batch_larger_than_the_check_images_is_still_compared(tmp_path: Path) -> None:
    batch = 40  # more than the 32 check images (the 32 are repeated)
    result = dlagraph.export(TINY, "onnx", tmp_path, size=(32, 32), batch=batch)
    # all 32 distinct images compared, in one batch of 40 (repeated): the count is of distinct ones
    assert result.metadata["check"]["compared"] == 32 and result.max_error < 1e-4


def test_fp32_reads_no_calibration_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dlagraph.deploy.export as export_module

    counts: list[int] = []
    real = export_module.images

    def recording(*args: object, **kwargs: object) -> object:
        counts.append(int(kwargs["count"]))  # type: ignore[arg-type]
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(export_module, "images", recording)
    dlagraph.export(TINY, "onnx", tmp_path, size=(32, 32))
    assert counts == [0]


def test_an_export_that_cannot_fit_in_memory_is_refused_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = dlagraph.build_module(TINY).eval()  # built before the machine "runs out"
    monkeypatch.setattr("dlagraph.base.system.available_memory", lambda: 2**20)
    want = r"needs about .* GiB \(weights of 3 models, images and activations\), but 0\.0 GiB"
    with pytest.raises(DlagraphError, match=want):
        dlagraph.export(model, "onnx", tmp_path / "o", size=(256, 256), batch=64)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("which", ["artifact", "metadata"])
def test_a_users_file_of_an_output_name_is_kept_without_force(which: str, tmp_path: Path) -> None:
    mine = tmp_path / (f"{TINY}.onnx" if which == "artifact" else f"{TINY}.onnx.json")
    mine.write_text("mine\n")
    with pytest.raises(DlagraphError, match="was not generated by dlagraph"):
        dlagraph.export(TINY, "onnx", tmp_path, size=(32, 32))
    assert mine.read_text() == "mine\n" and len(list(tmp_path.iterdir())) == 1
    dlagraph.export(TINY, "onnx", tmp_path, size=(32, 32), force=True)
    assert mine.read_bytes() != b"mine\n"


def test_calibration_folders_that_cannot_calibrate_are_refused(tmp_path: Path) -> None:
    from PIL import Image

    one = tmp_path / "one"
    one.mkdir()
    Image.new("L", (32, 32)).save(one / "a.png")
    postscript = tmp_path / "ps"
    postscript.mkdir()
    for name in ("a.png", "b.png"):  # decoded as what the suffix promises, never by content
        (postscript / name).write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n")
    for source, want in (
        (f"folder:{one}", "one image"),
        ("folder:", "folder: needs a path"),
        ("folder:/", "is the root of the file system"),
        (f"folder:{postscript}", "cannot read"),
    ):
        with pytest.raises(DlagraphError, match=want) as e:
            dlagraph.export(
                TINY, "onnx", tmp_path / "o", size=(32, 32), precision="int8", calibration=source
            )
        assert len(str(e.value).splitlines()) == 1
        assert not (tmp_path / "o").exists()
    assert "UnidentifiedImageError" in str(e.value)


def test_calibration_images_are_listed_folder_by_folder(tmp_path: Path) -> None:
    from dlagraph.deploy.calibration import _image_files

    for rel in ("b/2.png", "a/1.png", "a/0.png", "z.png", "c/x.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    names = [p.relative_to(tmp_path).as_posix() for p in _image_files(tmp_path, 3)]
    assert names == ["z.png", "a/0.png", "a/1.png"]  # stops at 3; the root's files first


def test_a_runtime_module_refuses_another_image_size_in_one_line() -> None:
    model = dlagraph.build_module(TINY).eval()
    fast = dlagraph.optimize(model, backend="onnxruntime", example_input=torch.randn(2, 1, 32, 32))
    fast(torch.randn(5, 1, 32, 32))  # any batch
    for x, got in (
        (torch.randn(2, 1, 64, 64), "2 x 1 x 64 x 64"),
        (torch.randn(2, 3, 32, 32), "2 x 3 x 32 x 32"),
        (torch.randn(1, 32, 32), "1 x 32 x 32"),
    ):
        with pytest.raises(
            DlagraphError, match=f"built for N x 1 x 32 x 32 batches \\(got {got}\\)"
        ):
            fast(x)


@pytest.mark.slow  # whole CLI processes or int8 conversions: over the quick run's share
def test_no_deployment_call_touches_the_callers_random_stream(tmp_path: Path) -> None:
    """A preset name is built with the same random weights every time (seed 0), inside a forked
    RNG: the caller's own stream goes on as if nothing had run."""
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    a = dlagraph.export(TINY, "onnx", tmp_path / "a", size=(32, 32))
    dlagraph.optimize(TINY, compile=False)
    assert torch.equal(torch.get_rng_state(), state)
    b = dlagraph.export(TINY, "onnx", tmp_path / "b", size=(32, 32))
    x = torch.randn(1, 1, 32, 32)
    assert torch.equal(run_artifact("onnx", a.files, x), run_artifact("onnx", b.files, x))


@pytest.mark.slow  # three exports and their checks
def test_the_sidecar_and_the_output_say_where_the_weights_came_from(tmp_path: Path) -> None:
    steps: list[tuple[str, float | None]] = []
    random = dlagraph.export(
        TINY, "onnx", tmp_path / "r", size=(32, 32), progress=lambda s, t: steps.append((s, t))
    )
    assert random.metadata["weights"] == {"source": "random", "seed": 0}
    assert "random weights (seed 0)" in str(random)
    names = [s for s, t in steps if t is None]
    assert names == ["build", "fold BN", "convert to onnx", "check in ONNX Runtime"]
    assert all(t is not None and t >= 0 for s, t in steps if s in names and t is not None)
    path = tmp_path / "w.pth"
    torch.save(dlagraph.build_module(TINY).state_dict(), path)
    trained = dlagraph.export(TINY, "onnx", tmp_path / "t", size=(32, 32), weights=path)
    import hashlib

    assert trained.metadata["weights"] == {
        "source": "file",
        "file": "w.pth",
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }
    assert "random" not in str(trained)


@pytest.mark.slow  # whole CLI processes or int8 conversions: over the quick run's share
def test_export_shows_its_steps_on_a_terminal_and_is_quiet_when_piped(tmp_path: Path) -> None:
    args = [sys.executable, "-m", "dlagraph", "export", TINY, "--format", "onnx", "--size", "32"]
    quick = [a.replace("onnx", "torchscript") for a in args]  # the same steps, converted faster
    piped = subprocess.run([*quick, "-o", str(tmp_path / "p")], capture_output=True, text=True)
    assert piped.returncode == 0 and piped.stderr == ""
    assert "random weights (seed 0)" in piped.stdout
    rc, _, seen = on_a_terminal([*args, "-o", str(tmp_path / "t")])
    assert rc == 0
    assert (
        b"build ..." in seen and b"convert to onnx ..." in seen and b"check in ONNX Runtime" in seen
    )


@pytest.mark.slow  # whole CLI processes or int8 conversions: over the quick run's share
@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_int8_with_your_own_batches_fits_the_artifacts_batch(fmt: str, tmp_path: Path) -> None:
    """Batches of 8 calibrate an artifact of batch 1 (they are re-batched to it); the image size
    comes from the batches, as optimize takes it."""
    batches = [torch.randn(8, 1, 32, 32) for _ in range(3)]
    result = dlagraph.export(TINY, fmt, tmp_path, precision="int8", calibration=batches)
    assert result.metadata["input"]["shape"] == [1, 1, 32, 32]
    assert result.max_error < 0.5


@pytest.mark.slow  # whole CLI processes or int8 conversions: over the quick run's share
def test_a_checkpoints_export_takes_the_hints_it_prints(tmp_path: Path) -> None:
    ckpt = tmp_path / "w.pth"
    torch.save(dlagraph.build_module(TINY).state_dict(), ckpt)
    args = [
        sys.executable,
        "-m",
        "dlagraph",
        "export",
        str(ckpt),
        "--format",
        "torchscript",  # the hints are no format's own: the fastest one
        "--size",
        "32",
    ]
    r = subprocess.run([*args, "-o", str(tmp_path / "a")], capture_output=True, text=True)
    assert r.returncode == 0 and "--set aggregation.residual=true" in r.stdout
    r = subprocess.run(
        [*args, "--set", "aggregation.residual=true", "-o", str(tmp_path / "b")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    meta = json.loads((tmp_path / "b" / "w.torchscript.json").read_text())
    assert meta["spec"]["aggregation"]["residual"] is True


def test_a_thin_calibration_folder_says_how_its_images_are_used(tmp_path: Path) -> None:
    from PIL import Image

    for i in range(6):
        Image.new("L", (32, 32), color=i * 40).save(tmp_path / f"{i}.png")
    with pytest.warns(dlagraph.DlagraphWarning, match=r"6 images from folder:.* \(256 \+ 32 "
                                                      r"asked\): 5 calibrate, 1 check"):  # fmt: skip
        dlagraph.export(
            TINY, "onnx", tmp_path / "o", size=(32, 32), precision="int8",
            calibration=f"folder:{tmp_path}",
        )  # fmt: skip


@pytest.mark.slow  # whole CLI processes or int8 conversions: over the quick run's share
def test_int8_calibration_counts_that_are_not_a_multiple_of_the_batch_still_export(
    tmp_path: Path,
) -> None:
    result = dlagraph.export(
        TINY, "onnx", tmp_path, size=(32, 32), precision="int8", calibration="random",
        calibration_images=10, batch=3,
    )  # fmt: skip
    assert result.metadata["input"]["shape"][0] == 3 and result.max_error < 0.5


def test_a_file_the_user_replaced_after_an_export_is_kept(tmp_path: Path) -> None:
    first = dlagraph.export(TINY, "onnx", tmp_path, size=(32, 32))
    artifact = next(p for p in first.files if p.suffix == ".onnx")
    artifact.write_bytes(b"my own model")
    with pytest.raises(DlagraphError, match="was not generated by dlagraph"):
        dlagraph.export(TINY, "onnx", tmp_path, size=(32, 32))
    assert artifact.read_bytes() == b"my own model"


@pytest.mark.parametrize("how", ["nan", "huge"])
def test_int8_of_a_model_whose_outputs_are_not_finite_is_refused_before_converting(
    how: str, tmp_path: Path
) -> None:
    with pytest.raises(DlagraphError, match="the model's own outputs are not finite") as e:
        dlagraph.export(
            broken_weights(how), "onnx", tmp_path / "o", size=(32, 32), precision="int8",
            calibration="random", calibration_images=8,
        )  # fmt: skip
    assert len(str(e.value).splitlines()) == 1 and not (tmp_path / "o").exists()


def test_an_artifact_that_is_not_the_model_is_not_written(tmp_path: Path) -> None:
    def zeros(net, x, request, dynamic, tmp):  # noqa: ANN001, ANN202
        return {".z": b"z"}, lambda xb: torch.zeros_like(net(xb))

    dlagraph.register_format(dlagraph.Format("zeros", "nothing", (".z",), ("fp32",), zeros))
    try:
        with pytest.raises(DlagraphError, match=r"are not the model's: relative error 1 > 0\.01"):
            dlagraph.export(TINY, "zeros", tmp_path / "o", size=(32, 32))
    finally:
        dlagraph.unregister_format("zeros")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "kwargs, want",
    [
        ({"size": (32,)}, "size: give (H, W)"),
        ({"size": ("32", "32")}, "size: give (H, W)"),
        ({"batch": True}, "batch: give 1 to 4096"),
        ({"name": 5}, "name: give a file name stem"),
        ({"name": ""}, "name: give a file name stem"),
        ({"precision": "x" * 100_000}, "precision: give fp32"),
        ({"precision": "int8", "calibration": torch.zeros(1, 1, 32, 32)}, "calibration: give"),
    ],
)
def test_export_arguments_are_one_line_each(kwargs: dict, want: str, tmp_path: Path) -> None:
    with pytest.raises(DlagraphError, match=re.escape(want)) as e:
        dlagraph.export(TINY, "onnx", tmp_path / "o", **{"size": (32, 32), **kwargs})
    assert len(str(e.value).splitlines()) == 1 and len(str(e.value)) < 300
