"""Rewrites that keep a DLA's function and that only dlagraph knows to make, measured on every
runtime before being kept (``python benchmarks/bench.py --rewrites``).

:func:`split_roots`: an aggregation root's conv over the concatenation of its inputs (eq. 3)
computed as a sum of one conv per input, ``W [x1; x2; x3] = W1 x1 + W2 x2 + W3 x3``, so no
concatenated buffer is written and read again. Measured on DLA-36 (docs/deployment.md): 1.14x in
compiled PyTorch fp32, where ``optimize`` applies it; slower in int8 (0.94x), OpenVINO (0.89x)
and ONNX Runtime (0.94x), where it is not applied.
"""

from __future__ import annotations

import torch
from torch import nn

from ..backends.torch.modules import DlaRoot

__all__ = ["SplitRoot", "split_roots"]


class SplitRoot(nn.Module):
    """A :class:`DlaRoot` whose conv over ``cat(xs)`` is one conv per input, summed."""

    def __init__(self, root: DlaRoot, splits: list[int]) -> None:
        super().__init__()
        conv = root.conv
        if sum(splits) != conv.in_channels:
            raise ValueError(f"splits {splits} do not add up to {conv.in_channels} channels")
        self.convs = nn.ModuleList()
        start = 0
        for i, c in enumerate(splits):
            part = nn.Conv2d(
                c,
                conv.out_channels,
                conv.kernel_size,  # type: ignore[arg-type]
                conv.stride,  # type: ignore[arg-type]
                conv.padding,  # type: ignore[arg-type]
                bias=i == 0 and conv.bias is not None,
            )
            part.weight = nn.Parameter(conv.weight[:, start : start + c].detach().clone())
            if part.bias is not None and conv.bias is not None:
                part.bias = nn.Parameter(conv.bias.detach().clone())
            self.convs.append(part)
            start += c
        self.bn, self.relu, self.residual = root.bn, root.relu, root.residual

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        x = self.convs[0](xs[0])
        for conv, xi in zip(self.convs[1:], xs[1:], strict=True):
            x = x + conv(xi)
        x = self.bn(x)
        if self.residual:
            x = x + xs[0]
        return self.relu(x)


def split_roots(model: nn.Module, example: torch.Tensor) -> int:
    """Replace every ``DlaRoot`` of ``model`` (in place) by a :class:`SplitRoot`, its inputs'
    channels read from one forward pass on ``example``; returns how many were replaced."""
    if not any(isinstance(m, DlaRoot) for m in model.modules()) or example.numel() == 0:
        return 0
    splits: dict[str, list[int]] = {}
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, DlaRoot):

            def record(mod: nn.Module, args: tuple, name: str = name) -> None:
                splits[name] = [int(t.shape[1]) for t in args[0]]

            hooks.append(m.register_forward_pre_hook(record))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    for name, channels in splits.items():
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, SplitRoot(model.get_submodule(name), channels))  # type: ignore[arg-type]
    return len(splits)
