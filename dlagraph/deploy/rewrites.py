"""Rewrites that keep a DLA's function and that only dlagraph knows to make, measured on every
runtime before being kept (``python benchmarks/bench.py --rewrites``).

:func:`split_roots`: an aggregation root's conv over the concatenation of its inputs (eq. 3)
computed as a sum of one conv per input, ``W [x1; x2; x3] = W1 x1 + W2 x2 + W3 x3``, so no
concatenated buffer is written and read again. Measured on DLA-36 (docs/deployment.md): 1.09-1.14x
in compiled PyTorch fp32, where ``optimize`` applies it; no steady gain in OpenVINO (0.89-1.08x),
slower in int8 (0.94x) and ONNX Runtime (0.85-0.94x), where it is not applied.

:func:`pad_channels`: every level's channel count rounded up to a multiple of the CPU's fp32
SIMD width (8 lanes on AVX2), the added channels zero (zero weights, zero BN scale and shift), so
the outputs are unchanged. Measured on a DLA-36 at width 0.6 (12, 20, 40, 76, 152, 308 channels,
docs/deployment.md), for 12% more MACs: 1.15-1.31x in compiled PyTorch fp32 (1.04x int8) and
1.00-1.16x in OpenVINO fp32 (1.09x int8), where ``optimize`` applies it; 0.75-0.81x in ONNX
Runtime, where it does not. Padding to 16 was slower on every backend on that AVX2 CPU. The presets and ``dlagraph fit``'s designs are already
multiples of 8, so it changes nothing for them.

The order of the aggregation nodes, the third rewrite of this kind, is not here: the backends
build every network in :func:`dlagraph.ir.memory.run_order`, the order of least live memory.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..backends.torch.modules import DlaRoot
from ..errors import DlagraphError

__all__ = ["SIMD_FP32", "SplitRoot", "pad_channels", "padding", "split_roots"]

# fp32 lanes of the vector unit channels are padded to: 8 on AVX2; AVX-512's 16 was not measured
# on such a CPU, and 16 on AVX2 was slower than 8 on every backend
SIMD_FP32 = 8

# where padding was measured to win (docs/deployment.md, DLA-36 at width 0.6): compiled PyTorch
# fp32 1.15-1.31x and int8 1.04x, OpenVINO fp32 1.00-1.16x and int8 1.09x; ONNX Runtime was
# slower (0.75-0.81x) and bf16 was not measured (no CPU here has it natively)
_PADDING_WINS = {("torch", "fp32"), ("torch", "int8"), ("openvino", "fp32"), ("openvino", "int8")}


def padding(backend: str, precision: str) -> int | None:
    """The multiple :func:`pad_channels` pads to on ``backend`` in ``precision``, or ``None``
    where padding was not measured to win."""
    return SIMD_FP32 if (backend, precision) in _PADDING_WINS else None


class SplitRoot(nn.Module):
    """A :class:`DlaRoot` whose conv over ``cat(xs)`` is one conv per input, summed."""

    def __init__(self, root: nn.Module, splits: list[int]) -> None:
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


def is_root(m: nn.Module) -> bool:
    """A :class:`DlaRoot`, or a generated class's own copy of it (same name and attributes)."""
    return isinstance(m, DlaRoot) or (
        type(m).__name__ == "DlaRoot" and all(hasattr(m, a) for a in ("conv", "bn", "residual"))
    )


def root_inputs(model: nn.Module, example: torch.Tensor) -> tuple[dict[str, list[int]], Any]:
    """The channels of each ``DlaRoot``'s inputs (module path -> list), read from one forward
    pass on ``example``; and the model's output."""
    splits: dict[str, list[int]] = {}
    hooks = []
    for name, m in model.named_modules():
        if is_root(m):

            def record(mod: nn.Module, args: tuple, name: str = name) -> None:
                splits[name] = [int(t.shape[1]) for t in args[0]]

            hooks.append(m.register_forward_pre_hook(record))
    try:
        with torch.no_grad():
            out = model(example)
    finally:
        for h in hooks:
            h.remove()
    return splits, out


def split_roots(model: nn.Module, example: torch.Tensor) -> int:
    """Replace every ``DlaRoot`` of ``model`` (in place) by a :class:`SplitRoot`, its inputs'
    channels read from one forward pass on ``example``; returns how many were replaced."""
    if not any(is_root(m) for m in model.modules()) or example.numel() == 0:
        return 0
    splits, _ = root_inputs(model, example)
    for name, channels in splits.items():
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, SplitRoot(model.get_submodule(name), channels))  # type: ignore[arg-type]
    return len(splits)


def pad_channels(model: nn.Module, multiple: int = 8) -> nn.Module | None:
    """An eval-mode copy of a built DLA (interpreter or generated class, with BatchNorm) whose
    levels' channel counts are rounded up to ``multiple``, computing the same outputs; ``None``
    where nothing needs padding or the network cannot be padded exactly (a grouped block, a
    network that returns its feature maps, a model built from no spec).

    The copy's weights are the model's, zero-padded: a tensor's output channels keep their
    places at the front; an aggregation root's input channels are laid out per input (its
    concatenation interleaves the padding), read from one forward pass.
    """
    from ..backends.torch.interpret import build_module

    dag = getattr(model, "dag", None)
    spec = None if dag is None else dag.graph.get("spec")
    if spec is None or multiple < 2 or model.training:
        return None
    levels = [dict(lv) for lv in spec["levels"]]
    for lv in levels:
        lv["channels"] = math.ceil(lv["channels"] / multiple) * multiple
    if levels == spec["levels"]:
        return None
    try:
        padded = build_module({**spec, "levels": levels}).eval()
    except DlagraphError:  # a block whose padded width is not allowed (a split block's groups)
        return None
    side = 4 * dag.graph["total_stride"]
    probe = torch.randn(
        1, dag.graph["in_channels"], side, side, generator=torch.Generator().manual_seed(0)
    )
    old_in, want = root_inputs(model, probe)
    new_in, _ = root_inputs(padded, probe)
    state = model.state_dict()
    fresh = padded.state_dict()
    for key, new in fresh.items():
        old = state.get(key)
        if old is None or old.dim() != new.dim():
            return None
        if old.shape == new.shape:
            fresh[key] = old
            continue
        out = torch.ones_like(new) if key.endswith("running_var") else torch.zeros_like(new)
        owner = key.rsplit(".", 2)[0]
        dims = [slice(0, n) for n in old.shape]
        if owner in old_in and key.endswith(".conv.weight") and old.shape[1] != new.shape[1]:
            # a root's conv over cat(inputs): each input's channels at its own offset
            start = 0
            src = 0
            for a, b in zip(old_in[owner], new_in[owner], strict=True):
                part = [dims[0], slice(start, start + a), *dims[2:]]
                out[tuple(part)] = old[:, src : src + a].to(new.dtype)
                start, src = start + b, src + a
        else:
            out[tuple(dims)] = old
        fresh[key] = out
    padded.load_state_dict(fresh)
    with torch.no_grad():
        got = padded(probe)
    same = isinstance(got, torch.Tensor) and isinstance(want, torch.Tensor)
    # summed in another order, fp32 differs in its last bits: compared to the largest output
    if not same or got.shape != want.shape or (got - want).abs().max() > 1e-4 * want.abs().max():
        return None
    padded.channels_padded_to = multiple  # what optimize's report says
    return padded
