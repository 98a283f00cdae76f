"""Train a DLA classifier built from a spec, on one process or many (torchrun), with checkpoints.

    python examples/train_classifier.py --spec specs/dla_tiny_digits.yaml --dataset digits
    python examples/train_classifier.py --spec specs/dla36.yaml --dataset folder:/data/birds --device cuda
    torchrun --nproc_per_node=2 examples/train_classifier.py --dataset digits      # DDP (gloo on CPU)

``digits`` is scikit-learn's bundled handwritten digits (1,797 8x8 images, shipped inside the
package: nothing is downloaded), upscaled to 32x32; ``folder:PATH`` reads an ImageFolder-style
directory (``PATH/train/<class>/*.jpg`` and ``PATH/val/<class>/*.jpg``, or one folder split 80/20).
The spec's ``in_channels`` and ``num_classes`` are set from the data. Training follows the paper
(SGD, momentum 0.9, weight decay 1e-4), with a short cosine schedule for the demo. Checkpoints are
written atomically to ``--out`` after every epoch (rank 0 only); ``--resume`` continues from one.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler, TensorDataset, random_split

import dlagraph

# the repository's presets, found from this file (the examples run from any folder)
SPECS = Path(__file__).resolve().parent.parent / "specs"


def digits(image_size: int = 32, seed: int = 0) -> tuple[Dataset, Dataset, int, int]:
    """scikit-learn's digits, upscaled and standardised; a fixed 80/20 split."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    x = (x - 0.5) / 0.5
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    cut = int(0.8 * len(x))
    tr, te = perm[:cut], perm[cut:]
    return TensorDataset(x[tr], y[tr]), TensorDataset(x[te], y[te]), 1, 10


def folder(path: str, image_size: int, seed: int = 0) -> tuple[Dataset, Dataset, int, int]:
    """An ImageFolder tree (needs torchvision): train/ and val/ subfolders, or one folder."""
    from torchvision import datasets, transforms

    norm = transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    train_tf = transforms.Compose(
        [
            transforms.RandomResizedCrop(image_size),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            norm,
        ]
    )
    test_tf = transforms.Compose(
        [
            transforms.Resize(int(image_size * 1.14)),
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
            norm,
        ]
    )
    root = Path(path)
    if (root / "train").is_dir() and (root / "val").is_dir():
        train = datasets.ImageFolder(str(root / "train"), train_tf)
        test = datasets.ImageFolder(str(root / "val"), test_tf)
        return train, test, 3, len(train.classes)
    full = datasets.ImageFolder(str(root), train_tf)
    n_test = max(1, len(full) // 5)
    train, test = random_split(
        full, [len(full) - n_test, n_test], generator=torch.Generator().manual_seed(seed)
    )
    return train, test, 3, len(full.classes)


class Progress:
    """A one-line progress bar on stderr (only where it is a terminal, or when forced)."""

    def __init__(self, total: int, label: str, enabled: bool) -> None:
        self.total, self.label, self.enabled, self.n = total, label, enabled, 0
        self.start = time.perf_counter()

    def update(self, loss: float) -> None:
        self.n += 1
        if not self.enabled:
            return
        width = 30
        done = int(width * self.n / self.total)
        rate = self.n / max(time.perf_counter() - self.start, 1e-9)
        sys.stderr.write(
            f"\r{self.label} [{'#' * done}{'.' * (width - done)}] {self.n}/"
            f"{self.total} loss {loss:.4f} {rate:.1f} it/s"
        )
        if self.n == self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def save_atomic(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def evaluate(model: nn.Module, loader: DataLoader, device: torch.device) -> float:
    model.eval()
    correct = total = 0
    with torch.inference_mode():
        for x, y in loader:
            pred = model(x.to(device)).argmax(1)
            correct += (pred == y.to(device)).sum().item()
            total += len(y)
    return correct / max(total, 1)


def deploy_accuracies(
    model: nn.Module, train: Dataset, test_loader: DataLoader, calibration_images: int = 512
) -> dict[str, float]:
    """Test accuracy after ``dlagraph.optimize`` in bf16, and in int8 calibrated on training
    images (CPU inference)."""
    model = model.cpu().eval()
    calib = DataLoader(train, 64, shuffle=True, generator=torch.Generator().manual_seed(0))
    batches = [x for _, (x, _) in zip(range(calibration_images // 64), calib)]  # noqa: B905
    out = {}
    whole = DataLoader(test_loader.dataset, len(test_loader.dataset))  # one shape: one compile
    # bf16 only where the CPU computes in it natively: elsewhere it is emulated (and slower
    # than fp32), and dlagraph.optimize says so
    precisions = ([("bf16", None)] if dlagraph.native_bf16() else []) + [("int8", batches)]
    if not dlagraph.native_bf16():
        print("bf16: skipped (this CPU has no native bf16)", flush=True)
    for precision, data in precisions:
        fast = dlagraph.optimize(model, precision, calibration=data)
        out[precision] = evaluate(fast, whole, torch.device("cpu"))
        print(f"test accuracy, {precision} (dlagraph.optimize): {out[precision]:.4f}", flush=True)
    # int8 in the other runtimes (the same conversion `dlagraph export` writes), where installed
    for backend in ("openvino", "onnxruntime"):
        if importlib.util.find_spec(backend) is None:
            print(f"{backend}: not installed (pip install 'dlagraph[deploy]')", flush=True)
            continue
        fast = dlagraph.optimize(model, "int8", calibration=batches, backend=backend)
        out[f"int8 {backend}"] = evaluate(fast, whole, torch.device("cpu"))
        print(f"test accuracy, int8 ({backend}): {out[f'int8 {backend}']:.4f}", flush=True)
    return out


def main(argv: list[str] | None = None) -> float:
    """Train, evaluate and return the test accuracy (fp32)."""
    return run(argv)["fp32"]


def run(argv: list[str] | None = None) -> dict[str, float]:
    """Train; the test accuracy in fp32 and, with ``--deploy``, in bf16 and int8."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--spec", default=str(SPECS / "dla_tiny_digits.yaml"))
    ap.add_argument("--dataset", default="digits", help="digits | folder:PATH")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=64, help="per process")
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--out", default="runs/classifier", help="checkpoint folder")
    ap.add_argument("--resume", action="store_true", help="continue from --out/last.pt")
    ap.add_argument("--max-steps", type=int, default=0, help="stop after N steps (smoke tests)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads per process")
    ap.add_argument("--progress", action="store_true", help="progress bar even when not a tty")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--deploy",
        action="store_true",
        help="also test the model after dlagraph.optimize in bf16 and int8 (CPU inference)",
    )
    args = ap.parse_args(argv)

    distributed = "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1
    if distributed:
        dist.init_process_group("nccl" if args.device == "cuda" else "gloo")
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1
    device = torch.device(args.device)
    if args.device == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)  # every rank builds identical initial weights

    if args.dataset == "digits":
        train, test, chans, classes = digits(args.image_size, args.seed)
    elif args.dataset.startswith("folder:"):
        train, test, chans, classes = folder(args.dataset[7:], args.image_size, args.seed)
    else:
        raise SystemExit(f"--dataset: expected digits or folder:PATH (got {args.dataset!r})")
    spec = dlagraph.load_spec(args.spec).to_dict()
    spec["in_channels"] = chans
    spec["head"] = {**spec["head"], "num_classes": classes}
    model = dlagraph.build_module(spec).to(device)
    if rank == 0:
        params = sum(p.numel() for p in model.parameters())
        print(
            f"{spec['name']}: {params:,} parameters, {len(train)} train / {len(test)} test "
            f"images, {world} process(es)"
        )

    sampler = (
        DistributedSampler(train, world, rank, shuffle=True, seed=args.seed)
        if distributed
        else None
    )
    loader = DataLoader(
        train,
        args.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        generator=torch.Generator().manual_seed(args.seed),
        drop_last=True,
    )
    test_loader = DataLoader(test, 256)
    steps_per_epoch = len(loader)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / (args.epochs * steps_per_epoch)))
    )
    out = Path(args.out)
    start_epoch = step = 0
    if args.resume and (out / "last.pt").exists():
        ckpt = torch.load(out / "last.pt", map_location=device, weights_only=True)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        start_epoch, step = ckpt["epoch"], ckpt["step"]
        if rank == 0:
            print(f"resumed from {out / 'last.pt'} at epoch {start_epoch}")
    net: nn.Module = nn.parallel.DistributedDataParallel(model) if distributed else model

    for epoch in range(start_epoch, args.epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        net.train()
        bar = Progress(
            steps_per_epoch,
            f"epoch {epoch + 1}/{args.epochs}",
            rank == 0 and (args.progress or sys.stderr.isatty()),
        )
        total = 0.0
        for x, y in loader:
            loss = F.cross_entropy(net(x.to(device)), y.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            total += loss.item()
            bar.update(loss.item())
            if args.max_steps and step >= args.max_steps:
                break
        if distributed:  # DDP syncs BatchNorm buffers at each forward from rank 0; the last
            for buf in model.buffers():  # forward's update is local, so share rank 0's again
                dist.broadcast(buf, 0)
        if rank == 0:
            print(
                f"epoch {epoch + 1}/{args.epochs}: train loss {total / max(bar.n, 1):.4f}",
                flush=True,
            )
            save_atomic(
                {
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "epoch": epoch + 1,
                    "step": step,
                    "spec": spec,
                },
                out / "last.pt",
            )
        if args.max_steps and step >= args.max_steps:
            break

    acc = evaluate(model, test_loader, device)
    scores = {"fp32": acc}
    if rank == 0:
        print(f"test accuracy: {acc:.4f}")
        if args.deploy:
            scores |= deploy_accuracies(model, train, test_loader)
    if distributed:  # for tests: each rank writes its final weights
        if os.environ.get("DLAGRAPH_DUMP_RANK_WEIGHTS"):
            save_atomic(model.state_dict(), out / f"rank{rank}.pt")
        dist.barrier()
        dist.destroy_process_group()
    return scores


if __name__ == "__main__":
    try:
        main()
    except dlagraph.DlagraphError as e:  # a bad spec or checkpoint: its message, no traceback
        print("\n".join(f"error: {line}" for line in str(e).splitlines()), file=sys.stderr)
        sys.exit(2)
