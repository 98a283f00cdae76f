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

import networkx as nx
import torch
from torch import nn

from ..base.errors import DlagraphError
from ..ir.plans import concat_convs, padded_spec
from ..nn.modules import DlaRoot

__all__ = ["SplitRoot", "dag_of", "pad_channels", "split_roots"]


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


def dag_of(model: nn.Module) -> nx.DiGraph | None:
    """The DAG a built DLA came from: an interpreted module carries it; a generated class's is
    compiled from the spec its tensors show (:func:`dlagraph.infer_spec`); ``None`` for a
    network neither fits."""
    dag = getattr(model, "dag", None)
    if dag is not None:
        return dag
    from ..inspect.infer import infer_spec
    from ..ir.compile import compile_spec

    try:
        return compile_spec(infer_spec(model.state_dict()))
    except DlagraphError:
        return None


def split_roots(model: nn.Module, g: nx.DiGraph | None = None) -> int:
    """Replace every ``DlaRoot`` of ``model`` (in place) by a :class:`SplitRoot`, its inputs'
    channels read from the DAG (``g``, else :func:`dag_of`); returns how many were replaced."""
    g = g if g is not None else dag_of(model)
    if g is None:
        return 0
    n = 0
    for c in concat_convs(g):
        if not c.splittable:
            continue
        parent_name, _, attr = c.module.rpartition(".")
        try:
            parent = model.get_submodule(parent_name) if parent_name else model
        except AttributeError:
            return n  # not the module tree the DAG describes: leave the rest as it is
        root = getattr(parent, attr, None)
        if root is None or not is_root(root) or root.conv.in_channels != sum(c.splits):
            return n  # not the module tree the DAG describes: leave the rest as it is
        setattr(parent, attr, SplitRoot(root, list(c.splits)))
        n += 1
    return n


def pad_channels(model: nn.Module, multiple: int = 8) -> nn.Module | None:
    """An eval-mode copy of a built DLA (from :func:`dlagraph.build_module`, with BatchNorm)
    whose levels' channel counts are rounded up to ``multiple``, computing the same outputs;
    ``None`` where nothing needs padding or the network cannot be padded exactly (a grouped
    block, a network that returns its feature maps, a model built from no spec).

    The copy's weights are the model's, zero-padded: a tensor's output channels keep their
    places at the front; a conv over a concatenation (an aggregation root, an IDA node) has its
    input channels laid out per input, as the DAG states them (:func:`.concat_convs`).
    """
    from ..backends.torch.interpret import build_module
    from ..ir.compile import compile_spec

    dag = getattr(model, "dag", None)
    spec = None if dag is None or model.training else padded_spec(dag, multiple)
    if spec is None:
        return None
    try:
        g = compile_spec(spec)
        padded = build_module(g).eval()
    except DlagraphError:  # a block whose padded width is not allowed (a split block's groups)
        return None
    old_in = {c.weight: c.splits for c in concat_convs(dag)}
    new_in = {c.weight: c.splits for c in concat_convs(g)}
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
        dims = [slice(0, n) for n in old.shape]
        if key in old_in and old.shape[1] != new.shape[1]:
            # a conv over cat(inputs): each input's channels at its own offset
            start = src = 0
            for a, b in zip(old_in[key], new_in[key], strict=True):
                part = [dims[0], slice(start, start + a), *dims[2:]]
                out[tuple(part)] = old[:, src : src + a].to(new.dtype)
                start, src = start + b, src + a
        else:
            out[tuple(dims)] = old
        fresh[key] = out
    padded.load_state_dict(fresh)
    # the plan is exact by construction; a probe checks it before the copy is used (a block
    # whose padded channels do not stay zero, a head that returns the padded maps)
    side = 4 * dag.graph["total_stride"]
    probe = torch.randn(
        1, dag.graph["in_channels"], side, side, generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        want, got = model(probe), padded(probe)
    same = isinstance(got, torch.Tensor) and isinstance(want, torch.Tensor)
    # summed in another order, fp32 differs in its last bits: compared to the largest output
    if not same or got.shape != want.shape or (got - want).abs().max() > 1e-4 * want.abs().max():
        return None
    padded.channels_padded_to = multiple  # what optimize's report says
    return padded
