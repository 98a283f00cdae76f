"""The examples run and reach their stated results (on real or generated data, on the CPU)."""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType

import pytest

import dlagraph

from .conftest import ROOT, THREADS
from .helpers import import_file

torch = pytest.importorskip("torch")


def example(name: str) -> ModuleType:
    return import_file(ROOT / "examples" / f"{name}.py", f"_example_{name}")


def test_shapes_dataset_is_deterministic_and_labelled() -> None:
    seg = example("train_segmentation")
    x1, y1 = seg.make_shapes(8, seed=3)
    x2, y2 = seg.make_shapes(8, seed=3)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert x1.shape == (8, 3, 64, 64) and set(y1.unique().tolist()) <= {0, 1, 2, 3}


@pytest.mark.slow
def test_segmentation_example_learns_in_its_short_mode(tmp_path: Path) -> None:
    """A shorter run than the example's default (8 epochs of 1,000 images instead of 12 of 1,500,
    about 45% of the work; the full run reaches 0.86 mean IoU, docs/examples.md)."""
    seg = example("train_segmentation")
    short = ["--threads", str(THREADS), "--epochs", "8", "--train", "1000", "--lr", "2e-2"]
    assert seg.main(short) >= 0.7


@pytest.mark.slow  # trains or benchmarks: see the README's test commands
def test_digits_classifier_reaches_95_percent_and_keeps_it_in_int8_and_bf16(
    tmp_path: Path,
) -> None:
    pytest.importorskip("torchao")
    clf = example("train_classifier")
    acc = clf.run(["--threads", str(THREADS), "--out", str(tmp_path / "run"), "--deploy"])
    assert acc["fp32"] >= 0.95
    # dlagraph.optimize: int8 calibrated on training images, and bf16, lose at most 0.5 points
    # (a gain is no failure: int8 classifies two more of the 360 test images right here)
    assert acc["int8"] >= acc["fp32"] - 0.005
    # the same in OpenVINO (NNCF) and ONNX Runtime (static QDQ): what `dlagraph export` writes
    for backend in ("openvino", "onnxruntime"):
        assert acc[f"int8 {backend}"] >= acc["fp32"] - 0.005, backend
    if dlagraph.native_bf16():  # elsewhere bf16 is emulated: the example skips it, and says so
        assert acc["bf16"] >= acc["fp32"] - 0.005
    else:
        assert "bf16" not in acc
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 8 and not list(tmp_path.glob("run/.*.tmp"))


@pytest.mark.slow  # trains or benchmarks: see the README's test commands
def test_resume_continues_from_the_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    clf = example("train_classifier")
    out = str(tmp_path / "run")
    clf.main(["--threads", str(THREADS), "--out", out, "--epochs", "2"])
    clf.main(["--threads", str(THREADS), "--out", out, "--epochs", "3", "--resume"])
    text = capsys.readouterr().out
    assert "resumed from" in text and "epoch 3/3" in text and "epoch 1/3" not in text


@pytest.mark.slow  # trains or benchmarks: see the README's test commands
def test_ddp_two_cpu_processes_end_with_identical_weights(tmp_path: Path) -> None:
    import os
    import socket
    import subprocess

    with socket.socket() as sock:  # a free port on loopback for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "DLAGRAPH_DUMP_RANK_WEIGHTS": "1", "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--master_addr=127.0.0.1",
            f"--master_port={port}",
            str(ROOT / "examples" / "train_classifier.py"),
            "--dataset",
            "digits",
            "--epochs",
            "1",
            "--max-steps",
            "6",
            "--threads",
            "1",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=env,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert "2 process(es)" in r.stdout and (tmp_path / "last.pt").exists()


@pytest.mark.slow  # trains or benchmarks: see the README's test commands
def test_finetune_from_a_timm_checkpoint_file(tmp_path: Path) -> None:
    timm = pytest.importorskip("timm")
    ckpt = tmp_path / "dla46_c.pth"
    torch.save(timm.create_model("dla46_c").state_dict(), ckpt)
    ft = example("finetune_from_timm")
    acc = ft.main(
        [
            "--spec",
            "specs/dla48_b_s.yaml",
            "--checkpoint",
            str(ckpt),
            "--steps",
            "20",
            "--threads",
            str(THREADS),
            "--image-size",
            "32",
        ]
    )
    assert 0.0 <= acc <= 1.0


def test_finetune_refuses_a_mismatched_checkpoint(tmp_path: Path) -> None:
    timm = pytest.importorskip("timm")
    ckpt = tmp_path / "dla34.pth"
    torch.save(timm.create_model("dla34").state_dict(), ckpt)
    ft = example("finetune_from_timm")

    with pytest.raises(dlagraph.WeightsError, match="does not fit"):
        ft.main(["--spec", "specs/dla48_b_s.yaml", "--checkpoint", str(ckpt), "--steps", "1"])


def test_custom_block_example_builds_runs_and_trains() -> None:

    try:
        summary = example("custom_block").main()
        assert summary.params > 0 and summary.name == "dla_inverted"
    finally:
        dlagraph.unregister_block("inverted_residual")


@pytest.mark.slow  # trains a CenterNet for about a minute
def test_detection_example_learns_and_keeps_its_map_in_int8_and_bf16(tmp_path: Path) -> None:
    """A shorter run than the example's default (6 epochs of 1,024 images instead of 12 of 2,048,
    a quarter of the work; the full run reaches 0.99 mAP@0.5, docs/examples.md)."""
    pytest.importorskip("torchmetrics")
    pytest.importorskip("torchao")
    mod = example("train_detection")
    short = ["--epochs", "6", "--train", "1024", "--lr", "6e-3", "--threads", str(THREADS)]
    score = mod.run([*short, "--deploy", "--save", str(tmp_path / "det.pt")])
    assert score["fp32"] >= 0.5
    # dlagraph.optimize on the validation set: within 1 point of fp32's mAP@0.5
    assert abs(score["int8"] - score["fp32"]) <= 0.01
    if dlagraph.native_bf16():
        assert abs(score["bf16"] - score["fp32"]) <= 0.01

    # The same network with deformable convs (training them on a CPU is slow): a DCN whose offsets
    # are zero and whose weights are doubled (the mask is sigmoid(0) = 0.5) computes what the
    # trained conv computes, so optimize's deformable path meets real data too.

    ckpt = torch.load(tmp_path / "det.pt", weights_only=True)
    spec = ckpt["spec"]
    spec["head"]["node"] = "dcn"
    twin = dlagraph.build_module(spec).eval()
    missing = twin.load_state_dict(ckpt["model"], strict=False).missing_keys
    dcns = [m for m in twin.modules() if type(m).__name__ == "DCN"]
    assert dcns and len(missing) == 3 * len(dcns)  # the bias and the offset conv of each
    with torch.no_grad():
        for m in dcns:
            m.weight.mul_(2)
    images, targets = mod.make_detection_data(256, 64, seed=1)
    assert mod.evaluate(twin, images, targets, 4) == pytest.approx(score["fp32"], abs=1e-3)
    calibration = list(mod.make_detection_data(256, 64, seed=0)[0].split(64))
    # torch's int8 keeps the DCNs in float: within 1 point of mAP@0.5 too. Eager (compiling this
    # network took a minute of this test's three; the compiled DCN's lowering to gather + matmul
    # is checked against eager in test_optimize.py)
    fast = dlagraph.optimize(twin, "int8", calibration, compile=False)
    assert abs(mod.evaluate(fast, images, targets, 4) - score["fp32"]) <= 0.01
    # int8 in OpenVINO and ONNX Runtime (what `dlagraph export` writes), which run the DCNs
    # natively (DeformableConvolution, ONNX DeformConv): within 1 point of mAP@0.5 too
    for backend in ("openvino", "onnxruntime"):
        fast = dlagraph.optimize(twin, "int8", calibration, backend=backend)
        assert abs(mod.evaluate(fast, images, targets, 4) - score["fp32"]) <= 0.01, backend
    # its int8 pt2 program keeps the DCNs in float, says so, and what loading it needs
    result = dlagraph.export(
        twin, "pt2", tmp_path / "pt2", precision="int8", calibration=calibration[:1]
    )
    kinds = {type(dict(twin.named_modules())[n]).__name__ for n in result.float_modules}
    assert kinds == {"DCN"} and len(result.float_modules) == len(dcns)
    assert "torchvision" in result.metadata["load"] and "torchao" in result.metadata["load"]


def test_detection_data_boxes_enclose_their_shapes() -> None:
    mod = example("train_detection")
    images, targets = mod.make_detection_data(8, 64, seed=3)
    assert images.shape == (8, 3, 64, 64) and all(1 <= len(t) <= 4 for t in targets)
    for boxes in targets:
        for cls, x1, y1, x2, y2 in boxes:
            assert cls in (0, 1, 2) and 0 <= x1 < x2 <= 64 and 0 <= y1 < y2 <= 64
    enc = mod.encode(targets, 3, 16, 4)
    assert int(enc["mask"].sum()) == sum(len(t) for t in targets)
    assert torch.all(enc["hm"].amax(dim=(2, 3)) <= 1)


def test_custom_head_example_registers_a_head_every_part_of_dlagraph_uses() -> None:
    """examples/custom_head.py: a head that is not built in, from YAML, through the interpreter,
    the generated code, the static counts, infer and the diagram."""
    try:
        out = example("custom_head").main([])
    finally:
        dlagraph.unregister_head("fcos")
    assert out["same"] and out["params"]
    assert out["inferred"].head == out["spec"].head  # the head read back from the weights
    assert list(out["shapes"]) == [f"{t}{lv}" for lv in (3, 4, 5) for t in ("cls", "box", "ctr")]
    assert out["shapes"]["cls3"] == (1, 20, 32, 32) and out["shapes"]["box5"] == (1, 4, 8, 8)
