"""Fine-tune a preset from a timm or official DLA checkpoint file, with a new classifier head.

    python -c "import timm, torch; torch.save(timm.create_model('dla34').state_dict(), 'dla34.pth')"
    python examples/finetune_from_timm.py --spec specs/dla36.yaml --checkpoint dla34.pth

The checkpoint (a ``torch.save`` state dict or ``.safetensors``; pickled code is refused) is loaded
*strictly* through ``dlagraph.load_weights``, which converts official checkpoints (their unused
projections) to the spec's layout and reports what matched. Then the 1000-way ``fc`` is replaced for
the new task (scikit-learn's digits, upscaled to 64x64 RGB, 10 classes) and the network fine-tuned.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import dlagraph

# the repository's presets, found from this file (the examples run from any folder)
SPECS = Path(__file__).resolve().parent.parent / "specs"


def digits_rgb(size: int) -> tuple[TensorDataset, TensorDataset]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = ((x - 0.5) / 0.5).expand(-1, 3, -1, -1).contiguous()
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    cut = int(0.8 * len(x))
    return TensorDataset(x[perm[:cut]], y[perm[:cut]]), TensorDataset(x[perm[cut:]], y[perm[cut:]])


def replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    """A fresh 1x1-conv classifier under the same name (``fc``), so forward is unchanged."""
    old = model.fc
    model.fc = nn.Conv2d(old.in_channels, num_classes, 1, bias=True)
    return model


def main(argv: list[str] | None = None) -> float:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--spec", default=str(SPECS / "dla36.yaml"))
    ap.add_argument("--checkpoint", required=True, help=".pth/.pt state dict or .safetensors")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = dlagraph.build_module(args.spec)
    report = dlagraph.load_weights(model, args.checkpoint, strict=True)
    print(f"loaded {args.checkpoint}: {report}")
    replace_head(model, 10)
    train, test = digits_rgb(args.image_size)
    loader = DataLoader(
        train,
        args.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
        drop_last=True,
    )
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=1e-4)
    model.train()
    step = 0
    while step < args.steps:
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step % 20 == 0:
                print(f"step {step}/{args.steps}: loss {loss.item():.4f}", flush=True)
            if step >= args.steps:
                break
    model.eval()
    with torch.inference_mode():
        x, y = test.tensors
        acc = (model(x).argmax(1) == y).float().mean().item()
    print(f"test accuracy: {acc:.4f}")
    return acc


if __name__ == "__main__":
    try:
        main()
    except dlagraph.DlagraphError as e:  # a bad spec or checkpoint: its message, no traceback
        print("\n".join(f"error: {line}" for line in str(e).splitlines()), file=sys.stderr)
        sys.exit(2)
