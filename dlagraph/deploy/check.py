"""The one comparison every deployment check makes (``export``'s artifact check, ``auto``'s
candidates and its cached choice): a build's outputs against the model's, relative to the largest
reference value, where anything not finite fails instead of passing (NaN compares False with
every limit, so ``max(0.0, nan)`` and ``nan > limit`` would let it through)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.utils._pytree import tree_flatten

from ..base.errors import DeployError

__all__ = ["Comparison", "compare", "MAX_ERROR"]

# the most an exported artifact may differ from the model, relative to its largest output: far
# above what each precision measured (fp32 ~1e-6, bf16 ~1e-2, int8 ~0.02-0.05), far below a
# wrong artifact
MAX_ERROR = {"fp32": 1e-2, "bf16": 0.2, "int8": 0.5}


class Comparison:
    """``error``: the largest difference relative to each reference output's largest value
    (``inf`` where the build's output is not finite); ``agreement``: the share of images whose
    top-1 class is the same in the first output (meaningful for a classifier)."""

    def __init__(self, error: float, ref: list[torch.Tensor], got: list[torch.Tensor]) -> None:
        self.error, self.ref, self.got = error, ref, got

    def agreeing(self) -> int:
        return int((self.ref[0].argmax(1) == self.got[0].argmax(1)).sum())


def compare(ref_out: Any, out: Any, what: str = "the check images") -> Comparison:
    """``out`` against the reference ``ref_out`` (same structure).

    Raises:
        DeployError: the reference itself is not finite (the model's weights: a NaN, a
            BatchNorm variance below zero, values past float32's range), or the structures
            differ.
    """
    # a runtime may answer in numpy arrays: compared as tensors
    ref = [torch.as_tensor(t).detach().float() for t in tree_flatten(ref_out)[0]]
    got = [torch.as_tensor(t).detach().float() for t in tree_flatten(out)[0]]
    if len(ref) != len(got) or any(a.shape != b.shape for a, b in zip(ref, got, strict=False)):
        raise DeployError(
            f"outputs {[tuple(t.shape) for t in got]} are not the model's "
            f"{[tuple(t.shape) for t in ref]}"
        )
    if not all(torch.isfinite(a).all() for a in ref):
        raise DeployError(
            f"the model's own outputs are not finite (NaN or infinite) on {what}: check its "
            "weights (a NaN, a BatchNorm running_var below 0, values past float32's range)"
        )
    if not all(torch.isfinite(b).all() for b in got):
        return Comparison(math.inf, ref, got)
    errors = [
        ((a - b).abs().max() / a.abs().max().clamp_min(1e-12)).item()
        for a, b in zip(ref, got, strict=True)
    ]
    return Comparison(max(errors, default=0.0), ref, got)
