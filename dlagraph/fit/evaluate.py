"""Accuracy as one more objective of ``dlagraph fit``: an evaluator scores a candidate spec (a
short training, a user's own function) and reports its learning curve step by step, so that
optuna's pruner stops weak candidates early.

optuna's pruners work on single-objective studies only (``Trial.should_prune`` raises for a
multi-objective one), so each evaluation is also a trial of a companion study
(``dlagraph-fit-accuracy``, in the same storage) whose pruner, a ``PercentilePruner``, compares
the curve with the other candidates' at the same step. A pruned candidate is pruned in the search
too. Nothing here needs torch: the digits evaluator lives in :mod:`dlagraph.fit.evaluators`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["Evaluation", "Evaluator", "Stopped", "evaluator_name"]


class Stopped(Exception):  # noqa: N818 (not an error: the search was asked to stop)
    """Raised inside an evaluation when Ctrl-C/SIGTERM/SIGHUP asked the search to stop."""


class Evaluation:
    """What an evaluator gets besides the spec: the input size and seed, and :meth:`report`."""

    def __init__(
        self,
        size: tuple[int, int],
        seed: int,
        report: Callable[[float, int], bool],
        stopping: Callable[[], bool],
    ) -> None:
        self.size = size
        self.seed = seed
        self._report = report
        self._stopping = stopping

    def report(self, score: float, step: int) -> None:
        """The score after ``step`` (0, 1, ...; larger is better). Raises optuna's
        ``TrialPruned`` when the pruner stops this candidate, :class:`Stopped` when the search
        is stopping: let both propagate."""
        self.check()
        if self._report(float(score), step):
            import optuna

            raise optuna.TrialPruned(
                f"score {score:.4f} at step {step}: below the pruner's percentile"
            )

    def check(self) -> None:
        """Raises :class:`Stopped` if the search was asked to stop (call it now and then in a
        long evaluation: Ctrl-C then ends it within a step)."""
        if self._stopping():
            raise Stopped


class Evaluator(Protocol):
    """``evaluator(spec, evaluation) -> score``: larger is better (e.g. held-out accuracy)."""

    def __call__(self, spec: Any, evaluation: Evaluation) -> float: ...


def evaluator_name(evaluate: Evaluator) -> str:
    """A stable name (the study remembers it): the evaluator's ``name``, else its import path."""
    name = getattr(evaluate, "name", None)
    if isinstance(name, str) and name:
        return name
    return f"{getattr(evaluate, '__module__', '?')}:{getattr(evaluate, '__qualname__', '?')}"
