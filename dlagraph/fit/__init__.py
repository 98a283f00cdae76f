"""``dlagraph fit``: design a DLA for a budget. The search space around a base spec
(:mod:`.space`), the study that searches it with optuna and its Pareto front (:mod:`.search`),
and the front's files: YAML specs, a table and a plot (:mod:`.report`). optuna and matplotlib
are the ``fit`` extra; nothing here needs torch."""

from .search import FitResult, fit
from .space import Budget, Space, load_space

__all__ = ["fit", "FitResult", "Space", "Budget", "load_space"]
