"""``python benchmarks/bench.py --int8``: dlagraph's int8 against the peers' plain code, on both
axes, on this machine.

Speed: DLA-36 (batch 8, 224x224) and CenterNet DLA-34 (batch 1, 512x512), random weights and
calibration, 2 threads, each row in a process of its own (``dlagraph.deploy.clock.isolated``),
3 rounds; the peers built by the code a user would write (``benchmarks/peers.py``).

Accuracy: a DLA-36 trained here on scikit-learn's digits (``examples/train_classifier.py``, 10
epochs, about 2 minutes on 2 cores) and the detection example's CenterNet trained here (a short
run) with its deformable twin (a DCN with zero offsets and doubled weights computes the trained
conv: ``tests/test_examples.py``); top-1 on the 360 test digits, mAP@0.5 on 256 held-out images.
Every int8 row is calibrated on the same 256 training images. The rows "with validation" get a
validation set apart from the reported one (digits: 180 of the test images, reported also on the
other 180 alone; detection: 128 images of another seed) and the default budget.
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import dlagraph

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

import peers  # noqa: E402


def _example(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _ms(t: Any) -> str:
    return f"{t.median * 1e3:.1f} ms [{t.low * 1e3:.1f}-{t.high * 1e3:.1f}]"


def speed_table(
    title: str, rows: dict[str, tuple[Callable[..., Any], tuple]], base: str, runs: int
) -> list[str]:
    from dlagraph.deploy.clock import isolated

    timed = isolated(rows, runs, 3, progress=_progress)
    ref = timed.get(base)
    lines = [title, "", f"| row | ms per batch [rounds' range] | vs {base} |", "|---|---:|---:|"]
    for label, t in timed.items():
        if isinstance(t, str):
            lines.append(f"| {label} | {t} | |")
            continue
        ratio = (
            f"{ref.median / t.median:.2f}x" if ref is not None and not isinstance(ref, str) else ""
        )
        lines.append(f"| {label} | {_ms(t)} | {ratio} |")
    return lines


def _progress(label: str, seconds: float | None) -> None:
    if seconds is not None:
        print(f"  built {label} in {seconds:.0f} s", file=sys.stderr, flush=True)


def dla36_speed(runs: int, threads: int = 2) -> list[str]:
    size, n, seed, b = (224, 224), 4, 1, 8
    rows = {
        "timm dla34 fp32 eager": (peers.timm_fp32, ("dla34", None, b, size, threads)),
        "plain NNCF int8 (defaults)": (peers.plain_nncf, ("dla34", None, b, size, threads, seed, n)),
        "dlagraph OpenVINO int8": (
            peers.dlagraph_row, ("dla36", None, b, size, threads, "int8", "openvino", seed, n)
        ),
        "plain ONNX Runtime QDQ int8 (defaults)": (
            peers.plain_ort_qdq, ("dla34", None, b, size, threads, seed, n)
        ),
        "dlagraph ONNX Runtime int8": (
            peers.dlagraph_row, ("dla36", None, b, size, threads, "int8", "onnxruntime", seed, n)
        ),
        "dlagraph PyTorch int8 (torchao, compiled)": (
            peers.dlagraph_row, ("dla36", None, b, size, threads, "int8", "torch", seed, n)
        ),
    }  # fmt: skip
    title = (
        f"### int8 speed: DLA-36, batch {b}, 224x224, {threads} threads, random weights, {n} "
        "random calibration batches; each row in its own process, 3 rounds"
    )
    return speed_table(title, rows, "plain NNCF int8 (defaults)", runs)


def openvino_profile(runs: int = 10, threads: int = 2) -> list[str]:
    """Where OpenVINO's int8 time goes on DLA-36 (batch 8, 224x224), plain NNCF against
    dlagraph's conversion (``prepare`` + ``openvino_model``, what ``optimize`` runs): OpenVINO's
    own per-node counters (``PERF_COUNT``), summed by node kind and kernel, per batch. Both are
    timed in this process, one after the other: for the kernels' shares, not a race."""
    import collections

    import openvino as ov

    from dlagraph.deploy.openvino import openvino_model
    from dlagraph.deploy.prepare import prepare

    size, n, seed, b = (224, 224), 4, 1, 8
    batches = peers._calibration(b, size, seed, n)
    x = torch.randn(b, 3, *size)
    models = {
        "plain NNCF": peers._nncf_defaults(peers._timm("dla34", None), x, batches),
        "dlagraph": openvino_model(
            prepare(dlagraph.build_module("dla36").eval()), x, True,
            [torch.from_numpy(c) for c in batches],
        ),
    }  # fmt: skip
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads, "PERF_COUNT": True}
    kinds: dict[str, collections.Counter] = {}
    for label, model in models.items():
        request = ov.Core().compile_model(model, "CPU", config).create_infer_request()
        spent: collections.Counter = collections.Counter()
        for i in range(runs + 2):
            request.infer({0: x.numpy()})
            if i < 2:  # warm-up
                continue
            for p in request.profiling_info:
                if p.status == p.Status.EXECUTED:
                    spent[f"{p.node_type} ({p.exec_type})"] += p.real_time.total_seconds() * 1e3
        kinds[label] = collections.Counter({k: v / runs for k, v in spent.items()})
    plain, ours = kinds["plain NNCF"], kinds["dlagraph"]
    lines = [
        f"### Where OpenVINO's int8 time goes: DLA-36, batch {b}, 224x224, {threads} threads "
        f"(OpenVINO's per-node counters, mean of {runs} batches)",
        "",
        "| node (kernel) | plain NNCF, ms | dlagraph, ms |",
        "|---|---:|---:|",
    ]
    for k, _ in (plain + ours).most_common():
        lines.append(f"| {k} | {plain.get(k, 0.0):.2f} | {ours.get(k, 0.0):.2f} |")
    lines.append(f"| total | {sum(plain.values()):.1f} | {sum(ours.values()):.1f} |")
    return lines


def centernet_speed(runs: int, threads: int = 2) -> list[str]:
    size, n, seed, b = (512, 512), 2, 1, 1
    spec = "centernet_dla34"
    rows = {
        "dlagraph eager fp32 (torchvision DCN)": (
            peers.spec_eager, (spec, None, b, size, threads)
        ),
        "plain NNCF int8 (defaults)": (
            peers.plain_nncf_spec, (spec, None, b, size, threads, seed, n)
        ),
        "dlagraph OpenVINO int8": (
            peers.dlagraph_row, (spec, None, b, size, threads, "int8", "openvino", seed, n)
        ),
    }  # fmt: skip
    title = (
        f"### int8 speed: CenterNet DLA-34 (DCN neck), batch {b}, 512x512, {threads} threads, "
        f"random weights, {n} random calibration batches; each row in its own process, 3 rounds"
    )
    return speed_table(title, rows, "plain NNCF int8 (defaults)", runs)


def _accuracy_rows(
    model: torch.nn.Module,
    calibration: list[torch.Tensor],
    validation: Any,
) -> list[tuple[str, Any, str]]:
    """(row, its model, what stayed in floating point) for fp32 and every int8 path."""
    import warnings

    example = calibration[0][:1]
    rows = [("fp32 (eager)", model, "")]
    plain = peers.plain_nncf_module(model, example, calibration)
    rows.append(("plain NNCF int8 (defaults)", plain, ""))
    plain = peers.plain_ort_qdq_module(model, example, calibration)
    rows.append(("plain ONNX Runtime QDQ int8 (defaults)", plain, ""))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for backend, with_validation in (
            ("openvino", False),
            ("openvino", True),
            ("onnxruntime", False),
            ("torch", False),
        ):
            fast = dlagraph.optimize(
                model, "int8", calibration, backend=backend,
                validation=validation if with_validation else None,
            )  # fmt: skip
            label = f"dlagraph {backend} int8" + (" with validation" if with_validation else "")
            floats = ", ".join(fast.report.float_modules) if hasattr(fast, "report") else ""
            rows.append((label, fast, floats))
    return rows


def digits_accuracy(weights: str | None = None) -> list[str]:
    clf = _example("train_classifier")
    if weights is None:
        out = tempfile.mkdtemp(prefix="dlagraph_int8_digits_")
        clf.main(["--spec", str(ROOT / "specs" / "dla36.yaml"), "--dataset", "digits",
                  "--epochs", "10", "--threads", "2", "--out", out])  # fmt: skip
        weights = str(Path(out) / "last.pt")
    ckpt = torch.load(weights, weights_only=True)
    model = dlagraph.build_module(ckpt["spec"])
    model.load_state_dict(ckpt["model"])
    model.eval()
    train, test, _, _ = clf.digits(32)
    xs, ys = test.tensors
    calibration = list(train.tensors[0][:256].split(64))
    validation = list(zip(xs[:180].split(60), ys[:180].split(60), strict=True))

    def top1(m: Any, x: torch.Tensor = xs, y: torch.Tensor = ys) -> float:
        with torch.inference_mode():
            return float((m(x).argmax(1) == y).float().mean())

    rows = _accuracy_rows(model, calibration, validation)
    lines = [
        "### int8 accuracy: DLA-36 trained on digits (32x32), top-1",
        "",
        "| row | top-1, 360 test images | drop | the 180 validation did not see | drop | in floating point |",
        "|---|---:|---:|---:|---:|---|",
    ]
    ref, ref_held = top1(model), top1(model, xs[180:], ys[180:])
    for label, m, floats in rows:
        a, h = top1(m), top1(m, xs[180:], ys[180:])
        lines.append(
            f"| {label} | {a:.4f} | {ref - a:+.4f} | {h:.4f} | {ref_held - h:+.4f} | {floats or '-'} |"
        )
    return lines


def detection_accuracy(epochs: int = 6) -> list[str]:
    det = _example("train_detection")
    folder = Path(tempfile.mkdtemp(prefix="dlagraph_int8_det_"))
    short = ["--epochs", str(epochs), "--train", "1024", "--lr", "6e-3", "--threads", "2"]
    det.run([*short, "--save", str(folder / "det.pt")])
    ckpt = torch.load(folder / "det.pt", weights_only=True)
    spec = ckpt["spec"]
    spec["head"]["node"] = "dcn"
    twin = dlagraph.build_module(spec).eval()
    twin.load_state_dict(ckpt["model"], strict=False)
    with torch.no_grad():
        for m in twin.modules():
            if type(m).__name__ == "DCN":
                m.weight.mul_(2)
    images, targets = det.make_detection_data(256, 64, seed=1)
    val_images, val_targets = det.make_detection_data(128, 64, seed=2)
    calibration = list(det.make_detection_data(256, 64, seed=0)[0].split(64))

    def map50(m: Any) -> float:
        return float(det.evaluate(m, val_images, val_targets, 4))

    rows = _accuracy_rows(twin, calibration, map50)
    lines = [
        "### int8 accuracy: the detection example's CenterNet, deformable twin (64x64), mAP@0.5",
        "",
        "| row | mAP@0.5, 256 held-out images | drop | in floating point |",
        "|---|---:|---:|---|",
    ]
    ref = float(det.evaluate(twin, images, targets, 4))
    for label, m, floats in rows:
        value = float(det.evaluate(m, images, targets, 4))
        lines.append(f"| {label} | {value:.4f} | {ref - value:+.4f} | {floats or '-'} |")
    return lines
