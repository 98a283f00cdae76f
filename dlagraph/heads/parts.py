"""Pieces several heads build from: the 1x1-conv classifier and IDA upsampling (eq. 1 across
resolutions: I(x1, …, xn) = I(N(x1, x2), x3, …, xn), the deeper inputs projected and upsampled to
the shallowest's resolution by learned, bilinear-initialised transposed convs)."""

from __future__ import annotations

from typing import Any

from .registry import HeadBuilder

__all__ = ["fc", "proj_up", "ida_node", "output"]


def fc(b: HeadBuilder, node: str, x: str, classes: int, src: str, **kw: Any) -> str:
    """A 1x1-conv classifier; its width is the generated class's ``num_classes`` unless unused."""
    sequential, unused = (kw.pop(k, False) for k in ("sequential", "unused"))
    rec = {"in_channels": b.channels(x), "out_channels": classes, "sequential": sequential}
    syms = None if unused else {"out_channels": "num_classes"}
    return b.add(node, "classifier", [x], rec, symbols=syms, unused=unused, spec_path=src)


def proj_up(
    b: HeadBuilder, path: str, idx: int, x: str, out_dim: int, factor: int, src: str
) -> str:
    """IDAUp's per-input step: a 1x1 conv-BN-ReLU projection when the width differs, then a
    learned depthwise transposed conv, initialised as bilinear upsampling, when ``factor > 1``."""
    meta = {"spec_path": src, "eq": "eq1"}
    if b.channels(x) != out_dim:
        rec = {
            "in_channels": b.channels(x),
            "out_channels": out_dim,
            "kernel_size": 1,
            "convs": 1,
            "stride": 1,
        }
        x = b.add(f"{path}.proj_{idx}", "conv", [x], rec, role="P", **meta)
    if factor > 1:
        rec = {"channels": out_dim, "factor": factor, "trainable": True}
        x = b.add(f"{path}.up_{idx}", "upsample", [x], rec, role="U", **meta)
    return x


def ida_node(b: HeadBuilder, node: str, a: str, c: str, op: str, src: str, **extra: Any) -> str:
    """An IDA aggregation node N(x, layer) (eq. 1): [running x, new layer] -> 3x3 conv."""
    cin, cout = b.channels(a) + b.channels(c), b.channels(a)
    rec = {"in_channels": cin, "out_channels": cout, "kernel_size": 3, **extra}
    n = b.add(node, op, [a, c], rec, eq="eq1", role="N", arg_roles=["I", "I"], spec_path=src)
    b.paper_order(n, [0, 1])
    return n


def output(
    b: HeadBuilder, ins: list[str], kind: str, src: str, names: list[str] | None = None
) -> str:
    """The network's output node: one tensor, or a list, tuple or dict of them."""
    return b.add("output", "output", ins, {"kind": kind, "names": names or []}, spec_path=src)
