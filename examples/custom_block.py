"""Register a new block type and build a DLA with it from YAML (paper §2: any block works).

    python examples/custom_block.py

The block is a MobileNetV2-style inverted residual (1x1 expand, 3x3 depthwise, 1x1 project). It
declares its contract: extra spec keys as a pydantic model (``Options``), its layers for static
parameter and MAC counts (``layers``), and the call convention ``block(x, shortcut)``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

import dlagraph
from dlagraph import Layer

HERE = Path(__file__).resolve().parent


@dlagraph.register_block("inverted_residual")
class InvertedResidual(nn.Module):
    """MobileNetV2 inverted residual: expand 1x1, depthwise 3x3 (strided), project 1x1."""

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)
        expand: int = Field(4, ge=1, le=16, description="expansion ratio of the hidden width")

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        dilation: int = 1,
        expand: int = 4,
    ):
        super().__init__()
        hidden = in_channels * expand
        self.conv1 = nn.Conv2d(in_channels, hidden, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.conv2 = nn.Conv2d(
            hidden, hidden, 3, stride, dilation, dilation, groups=hidden, bias=False
        )
        self.bn2 = nn.BatchNorm2d(hidden)
        self.conv3 = nn.Conv2d(hidden, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU6(inplace=True)

    @staticmethod
    def layers(cin: int, cout: int, stride: int, dilation: int, options: Any) -> list[Layer]:
        h = cin * options.expand
        return [
            Layer("conv1", "conv", cin, h, 1),
            Layer("bn1", "bn", h, h),
            Layer("conv2", "conv", h, h, 3, stride, groups=h, dilation=dilation, out_div=stride),
            Layer("bn2", "bn", h, h, out_div=stride),
            Layer("conv3", "conv", h, cout, 1, out_div=stride),
            Layer("bn3", "bn", cout, cout, out_div=stride),
        ]

    def forward(self, x: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.act(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return out + shortcut  # linear bottleneck: no activation after the add


def main() -> dlagraph.Summary:
    spec = dlagraph.load_spec(HERE / "inverted_residual.yaml")
    summary = dlagraph.summarize(spec)
    print(f"{spec.name}: {summary.params:,} parameters, {summary.macs / 1e9:.2f} GMACs at 224x224")
    print(summary.table())
    model = dlagraph.build_module(spec)
    assert sum(p.numel() for p in model.parameters()) == summary.params
    x = torch.randn(2, 3, 224, 224)
    out = model(x)
    out.logsumexp(1).mean().backward()
    print(
        f"forward {tuple(out.shape)}, backward ok: "
        f"{all(p.grad is not None for p in model.parameters())}"
    )
    src = dlagraph.generate_source(spec)
    print(
        f"generated source: {len(src.splitlines())} lines, class InvertedResidual included: "
        f"{'class InvertedResidual(nn.Module):' in src}"
    )
    return summary


if __name__ == "__main__":
    try:
        main()
    except dlagraph.DlagraphError as e:  # a bad spec or checkpoint: its message, no traceback
        print("\n".join(f"error: {line}" for line in str(e).splitlines()), file=sys.stderr)
        sys.exit(2)
