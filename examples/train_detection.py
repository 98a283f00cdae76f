"""Train a small CenterNet (DLA + deformable IDA neck) to detect synthetic shapes, on the CPU.

The data is generated here: random circles, squares and triangles of several sizes on a noisy
background, 1-4 per image, with their bounding boxes. Nothing is downloaded. Training uses the
published CenterNet losses: a focal loss on Gaussian-splatted center heatmaps, and L1 on the box
size and the sub-pixel center offset at each object's center. Evaluation decodes the outputs with
``dlagraph.centernet_decode`` and computes mAP@0.5 with torchmetrics' MeanAveragePrecision.

    python examples/train_detection.py                  # CPU, about a minute on 2 cores
    python examples/train_detection.py --node dcn       # deformable convs in the neck (slower)

It ends with ``mAP@0.5: 0.xxxx`` on a held-out split.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

import dlagraph

# the repository's presets, found from this file (the examples run from any folder)
SPECS = Path(__file__).resolve().parent.parent / "specs"
CLASSES = ("circle", "square", "triangle")


def _shape_mask(rng: np.random.Generator, cls: int, cx: float, cy: float, r: float, grid: tuple
                ) -> np.ndarray:  # fmt: skip
    yy, xx = grid
    if cls == 0:
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= r**2
    if cls == 1:
        return (np.abs(xx - cx) <= r) & (np.abs(yy - cy) <= r)
    a = rng.uniform(0, 2 * math.pi)
    pts = [(cx + r * math.cos(a + k * 2 * math.pi / 3), cy + r * math.sin(a + k * 2 * math.pi / 3))
           for k in range(3)]  # fmt: skip
    inside = np.ones_like(xx, bool)
    for (x0, y0), (x1, y1) in zip(pts, pts[1:] + pts[:1], strict=True):
        inside &= (x1 - x0) * (yy - y0) - (y1 - y0) * (xx - x0) >= 0
    return inside


def make_detection_data(n: int, size: int = 64, seed: int = 0) -> tuple[torch.Tensor, list]:
    """``n`` RGB images and, per image, a list of ``(class, x1, y1, x2, y2)`` boxes."""
    rng = np.random.default_rng(seed)
    grid = np.mgrid[0:size, 0:size].astype(np.float32)
    images = np.empty((n, 3, size, size), np.float32)
    targets = []
    for i in range(n):
        img = rng.normal(0.0, 0.15, (3, 1, 1)) + rng.normal(0.0, 0.1, (3, size, size))
        boxes: list[tuple[int, float, float, float, float]] = []
        for _ in range(int(rng.integers(1, 5))):
            for _attempt in range(20):  # place it where it overlaps no other shape
                cls, r = int(rng.integers(0, 3)), float(rng.uniform(4, 13))
                cx, cy = rng.uniform(r + 1, size - r - 1, 2)
                mask = _shape_mask(rng, cls, cx, cy, r, grid)
                ys, xs = np.nonzero(mask)
                if len(xs) < 8:
                    continue
                box = (
                    cls,
                    float(xs.min()),
                    float(ys.min()),
                    float(xs.max() + 1),
                    float(ys.max() + 1),
                )
                if all(box[1] >= b[3] + 1 or box[3] + 1 <= b[1] or box[2] >= b[4] + 1
                       or box[4] + 1 <= b[2] for b in boxes):  # fmt: skip
                    color = rng.uniform(-1, 1, (3, 1, 1))
                    img = np.where(mask, color + rng.normal(0, 0.05, (3, size, size)), img)
                    boxes.append(box)
                    break
        images[i] = img
        targets.append(boxes)
    return torch.from_numpy(images), targets


def gaussian_radius(h: float, w: float, min_overlap: float = 0.7) -> float:
    """CenterNet's radius: the smallest of three cases so a box this far off keeps IoU 0.7."""
    a1, b1, c1 = 1, h + w, w * h * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1**2 - 4 * a1 * c1)) / 2
    a2, b2, c2 = 4, 2 * (h + w), (1 - min_overlap) * w * h
    r2 = (b2 + math.sqrt(b2**2 - 4 * a2 * c2)) / 2
    a3, b3, c3 = 4 * min_overlap, -2 * min_overlap * (h + w), (min_overlap - 1) * w * h
    r3 = (b3 + math.sqrt(b3**2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def encode(targets: list, classes: int, out: int, ratio: int) -> dict[str, torch.Tensor]:
    """Training targets on the output grid: Gaussian heatmaps, and size / offset at centers."""
    n = len(targets)
    hm = np.zeros((n, classes, out, out), np.float32)
    wh = np.zeros((n, 2, out, out), np.float32)
    reg = np.zeros((n, 2, out, out), np.float32)
    mask = np.zeros((n, 1, out, out), np.float32)
    yy, xx = np.mgrid[0:out, 0:out]
    for i, boxes in enumerate(targets):
        for cls, x1, y1, x2, y2 in boxes:
            w, h = (x2 - x1) / ratio, (y2 - y1) / ratio
            cx, cy = (x1 + x2) / 2 / ratio, (y1 + y2) / 2 / ratio
            ix, iy = min(int(cx), out - 1), min(int(cy), out - 1)
            r = max(0, int(gaussian_radius(math.ceil(h), math.ceil(w))))
            sigma = (2 * r + 1) / 6
            g = np.exp(-((xx - ix) ** 2 + (yy - iy) ** 2) / (2 * sigma**2))
            g[(np.abs(xx - ix) > r) | (np.abs(yy - iy) > r)] = 0
            hm[i, cls] = np.maximum(hm[i, cls], g)
            wh[i, :, iy, ix] = (w, h)
            reg[i, :, iy, ix] = (cx - ix, cy - iy)
            mask[i, 0, iy, ix] = 1
    return {k: torch.from_numpy(v) for k, v in dict(hm=hm, wh=wh, reg=reg, mask=mask).items()}


def focal_loss(logits: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss (alpha 2, beta 4) on the sigmoid of the logits."""
    pred = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = gt.eq(1).float()
    pos_loss = torch.log(pred) * (1 - pred) ** 2 * pos
    neg_loss = torch.log(1 - pred) * pred**2 * (1 - gt) ** 4 * (1 - pos)
    return -(pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp(min=1)


def l1_at_centers(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (F.l1_loss(pred * mask, target * mask, reduction="sum")) / (mask.sum() * 2 + 1e-4)


def evaluate(model: torch.nn.Module, images: torch.Tensor, targets: list, ratio: int) -> float:
    from torchmetrics.detection import MeanAveragePrecision

    metric = MeanAveragePrecision(iou_thresholds=[0.5])
    model.eval()
    with torch.no_grad():
        for start in range(0, len(images), 64):
            dets = dlagraph.centernet_decode(
                model(images[start : start + 64]), k=20, down_ratio=ratio
            )
            truth = targets[start : start + 64]
            metric.update(
                [{"boxes": d["boxes"], "scores": d["scores"], "labels": d["classes"]} for d in dets],
                [{"boxes": torch.tensor([b[1:] for b in t], dtype=torch.float32).reshape(-1, 4),
                  "labels": torch.tensor([b[0] for b in t], dtype=torch.long)} for t in truth],
            )  # fmt: skip
    return float(metric.compute()["map_50"])


def deploy_scores(
    model: torch.nn.Module, images: torch.Tensor, test_images: torch.Tensor, test_targets: list,
    ratio: int, runtimes: bool = False,
) -> dict[str, float]:  # fmt: skip
    """mAP@0.5 after ``dlagraph.optimize`` in bf16, and in int8 calibrated on 256 training
    images (CPU inference)."""
    model.eval()
    calibration = list(images[:256].split(64))
    out = {}
    # bf16 only where the CPU computes in it natively: elsewhere it is emulated (and slower
    # than fp32), and dlagraph.optimize says so
    precisions = ([("bf16", None)] if dlagraph.native_bf16() else []) + [("int8", calibration)]
    if not dlagraph.native_bf16():
        print("bf16: skipped (this CPU has no native bf16)", flush=True)
    for precision, data in precisions:
        fast = dlagraph.optimize(model, precision, calibration=data)
        out[precision] = evaluate(fast, test_images, test_targets, ratio)
        print(f"mAP@0.5, {precision} (dlagraph.optimize): {out[precision]:.4f}", flush=True)
    # int8 in the other runtimes (the same conversion `dlagraph export` writes), where installed
    for backend in ("openvino", "onnxruntime") if runtimes else ():
        if importlib.util.find_spec(backend) is None:
            print(f"{backend}: not installed (pip install 'dlagraph[deploy]')", flush=True)
            continue
        fast = dlagraph.optimize(model, "int8", calibration=calibration, backend=backend)
        out[f"int8 {backend}"] = evaluate(fast, test_images, test_targets, ratio)
        print(f"mAP@0.5, int8 ({backend}): {out[f'int8 {backend}']:.4f}", flush=True)
    return out


def main(argv: list[str] | None = None) -> float:
    """Train, evaluate and return mAP@0.5 (fp32)."""
    return run(argv)["fp32"]


def run(argv: list[str] | None = None) -> dict[str, float]:
    """Train; mAP@0.5 in fp32 and, with ``--deploy``, in bf16 and int8."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--spec", default=str(SPECS / "centernet_tiny_shapes.yaml"))
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--train", type=int, default=2048, help="training images")
    ap.add_argument("--test", type=int, default=256, help="held-out images")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument(
        "--node",
        choices=("dcn", "conv"),
        help="override the spec's neck (torchvision's CPU deform_conv2d backward is ~20x slower)",
    )
    ap.add_argument("--save", metavar="PATH", help="save the trained weights and spec here")
    ap.add_argument(
        "--deploy",
        action="store_true",
        help="also score the model after dlagraph.optimize in bf16 and int8 (CPU inference)",
    )
    ap.add_argument(
        "--runtimes",
        action="store_true",
        help="with --deploy: also int8 in OpenVINO and ONNX Runtime (what dlagraph export writes)",
    )
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    spec = dlagraph.load_spec(args.spec)
    if args.node:
        data = spec.to_dict()
        data["head"]["node"] = args.node
        spec = dlagraph.load_spec(data)
    head = spec.head
    ratio, classes = head.down_ratio, head.heads["hm"]  # type: ignore[union-attr]
    model = dlagraph.build_module(spec)
    size = 64
    images, targets = make_detection_data(args.train, size, seed=0)
    test_images, test_targets = make_detection_data(args.test, size, seed=1)
    enc = encode(targets, classes, size // ratio, ratio)
    print(f"{spec.name}: {sum(p.numel() for p in model.parameters()):,} parameters, "
          f"{args.train} train / {args.test} test images")  # fmt: skip
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    steps = args.epochs * math.ceil(args.train / args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=steps, pct_start=0.15)
    start = time.time()
    for epoch in range(args.epochs):
        model.train()
        order, total = torch.randperm(args.train), 0.0
        for i in range(0, args.train, args.batch):
            idx = order[i : i + args.batch]
            x = images[idx]
            if torch.rand(()) < 0.5:  # flip the images and their targets alike
                flip = True
                x = x.flip(-1)
            else:
                flip = False
            t = {k: v[idx].flip(-1) if flip else v[idx] for k, v in enc.items()}
            if flip:  # a flipped offset: the center moves to the mirrored cell
                t["reg"] = encode_flipped_reg(t, size // ratio)
            out = model(x)
            loss = (
                focal_loss(out["hm"], t["hm"])
                + 0.1 * l1_at_centers(out["wh"], t["wh"], t["mask"])
                + l1_at_centers(out["reg"], t["reg"], t["mask"])
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        print(f"epoch {epoch + 1}/{args.epochs}  loss {total / args.train:.4f}  "
              f"({time.time() - start:.0f} s)", flush=True)  # fmt: skip
    score = evaluate(model, test_images, test_targets, ratio)
    print(f"mAP@0.5: {score:.4f}")
    if args.save:
        torch.save({"model": model.state_dict(), "spec": spec.to_dict()}, args.save)
    scores = {"fp32": score}
    if args.deploy:
        scores |= deploy_scores(model, images, test_images, test_targets, ratio, args.runtimes)
    return scores


def encode_flipped_reg(t: dict[str, torch.Tensor], out: int) -> torch.Tensor:
    """The x offset of a horizontally flipped target: the center's cell is mirrored, so its
    sub-pixel offset becomes 1 - offset (the y offset is unchanged)."""
    reg = t["reg"].clone()
    reg[:, 0] = torch.where(t["mask"][:, 0] > 0, 1 - reg[:, 0], reg[:, 0])
    return reg


if __name__ == "__main__":
    try:
        main()
    except dlagraph.DlagraphError as e:  # a bad spec: its message, no traceback
        print("\n".join(f"error: {line}" for line in str(e).splitlines()), file=sys.stderr)
        sys.exit(2)
