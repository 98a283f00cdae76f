"""Evaluators for ``dlagraph fit --evaluate``: ``digits`` (a short training on scikit-learn's
bundled digits, scored by held-out accuracy) or ``python:module:function`` (a user's own).
See :mod:`dlagraph.fit.evaluate` for the interface and the pruning."""

from __future__ import annotations

import importlib
import math
import os
import re
from typing import Any

import torch
from torch.nn import functional as F

from ..base.errors import DlagraphError, SpecError, clip, one_line
from ..deploy.prepare import seeded
from ..ir.compile import compile_spec
from ..spec import Spec, load_spec

__all__ = ["DigitsAccuracy", "resolve_evaluator"]


class DigitsAccuracy:
    """Accuracy on held-out digits after ``epochs`` of training from scratch.

    scikit-learn's digits (1,797 8x8 images, shipped inside the package: nothing is downloaded)
    are split as ``examples/train_classifier.py`` splits them (80/20, seed 0); the search trains
    on 80% of that training split and scores on the other 20% (the validation split), so the
    example's test split stays unseen by the search. Images are upscaled to the evaluation's input
    size; the recipe is the example's: SGD with momentum 0.9, weight decay 1e-4, batch 64, a
    cosine schedule from ``lr``. The spec must be a classifier with one input channel and ten
    classes (``dlagraph fit --evaluate digits`` sets them).
    """

    def __init__(self, epochs: int = 8, lr: float = 0.05, batch_size: int = 64) -> None:
        if not 1 <= epochs <= 1000:
            raise DlagraphError(f"epochs: give 1 to 1000 (got {epochs})")
        self.epochs, self.lr, self.batch_size = epochs, lr, batch_size
        self.name = f"digits accuracy ({epochs} epoch{'s' * (epochs != 1)})"

    def __call__(self, spec: Spec, evaluation: Any) -> float:
        from ..backends.torch.interpret import build_module

        g = compile_spec(spec).graph
        if not g["classifier"]:
            raise SpecError("evaluate digits: the spec needs a classifier head")
        if g["in_channels"] != 1 or g["num_classes"] != 10:
            raise SpecError("evaluate digits: give in_channels: 1 and head.num_classes: 10")
        (xt, yt), (xv, yv) = _digits(evaluation.size)
        with seeded(evaluation.seed):  # the caller's random stream is left as it was
            return self._train(build_module(spec), xt, yt, xv, yv, evaluation)

    def _train(
        self,
        model: torch.nn.Module,
        xt: torch.Tensor,
        yt: torch.Tensor,
        xv: torch.Tensor,
        yv: torch.Tensor,
        evaluation: Any,
    ) -> float:
        steps = self.epochs * math.ceil(len(xt) / self.batch_size)
        opt = torch.optim.SGD(model.parameters(), lr=self.lr, momentum=0.9, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps))
        )
        gen = torch.Generator().manual_seed(evaluation.seed)
        accuracy = 0.0
        for epoch in range(self.epochs):
            model.train()
            for idx in torch.randperm(len(xt), generator=gen).split(self.batch_size):
                evaluation.check()  # Ctrl-C ends the evaluation within a step
                loss = F.cross_entropy(model(xt[idx]), yt[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
            model.eval()
            with torch.inference_mode():
                accuracy = (model(xv).argmax(1) == yv).float().mean().item()
            evaluation.report(accuracy, epoch)
        return accuracy


def _digits(
    size: tuple[int, int],
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DlagraphError(
            "--evaluate digits needs scikit-learn: pip install 'dlagraph[fit]'"
        ) from None
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    x = (x - 0.5) / 0.5
    y = torch.tensor(d.target, dtype=torch.long)
    # the example's split (its test images are never seen here), then 80/20 of its training part
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    train = perm[: int(0.8 * len(x))]
    cut = int(0.8 * len(train))
    return (x[train[:cut]], y[train[:cut]]), (x[train[cut:]], y[train[cut:]])


def resolve_evaluator(text: str, epochs: int = 8) -> Any:
    """The evaluator ``text`` names: ``digits``, or ``python:module:function`` (importable from
    the current folder too), a callable ``function(spec, evaluation) -> float``.

    Raises:
        DlagraphError: an unknown name, a module that does not import, or no such callable.
    """
    if text == "digits":
        return DigitsAccuracy(epochs)
    m = re.fullmatch(r"python:([A-Za-z_][\w.]*):([A-Za-z_]\w*)", text)
    if not m:
        raise DlagraphError(
            f"--evaluate: give digits or python:module:function (got {clip(text, 80)!r})"
        )
    import sys

    # the current folder is searched for that import only, and last: a stray file there (a
    # matplotlib.py) must not shadow what the user's module imports
    added = "" not in sys.path and os.getcwd() not in sys.path
    if added:
        sys.path.append("")
    try:
        module = importlib.import_module(m[1])
    except Exception as e:  # a user's module: any error in it is one line here
        missing = getattr(e, "name", None)
        if (
            isinstance(e, ImportError)
            and missing
            and missing != m[1]
            and not m[1].startswith(f"{missing}.")
        ):
            raise DlagraphError(
                f"--evaluate: cannot import {m[1]!r}: it imports {missing!r}, which does not "
                f"import ({type(e).__name__}: {clip(one_line(str(e)), 80)})"
            ) from None
        raise DlagraphError(
            f"--evaluate: cannot import {m[1]!r} ({type(e).__name__}: {clip(one_line(str(e)), 80)})"
        ) from None
    finally:
        if added and "" in sys.path:
            sys.path.remove("")
    fn = getattr(module, m[2], None)
    if not callable(fn):
        raise DlagraphError(f"--evaluate: {m[1]} has no function {m[2]!r}")
    return fn


def digits_spec(spec: Spec) -> Spec:
    """``spec`` with one input channel and ten classes, for the digits evaluator."""
    data = spec.to_dict()
    data["in_channels"] = 1
    if isinstance(data.get("head"), dict):
        data["head"]["num_classes"] = 10
    return load_spec(data)
