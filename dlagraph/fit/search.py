"""The search: an optuna study over :mod:`.space`, each candidate costed statically (exact
parameters, MACs and activation memory, no torch), the budget as optuna constraints, and the
Pareto front of capacity (parameters, the more the better within the budget) against MACs and
activation memory. The study lives in a journal file (or any optuna storage URL), so an
interrupted ``fit`` resumes and several workers can share one study."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DlagraphError, InputSizeError, SpecError, clip
from ..ir.analysis import summarize
from ..ir.compile import compile_spec
from ..ir.memory import activation_memory
from ..spec import Spec, load_spec
from .space import Budget, Space, candidate

__all__ = ["fit", "FitResult", "Member", "costs", "smallest"]

DIRECTIONS = ["maximize", "minimize", "minimize"]  # parameters, MACs, inference memory
STUDY = "dlagraph-fit"


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise DlagraphError(
            "dlagraph fit needs optuna and matplotlib: pip install 'dlagraph[fit]'"
        ) from None
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # its per-trial lines; ours are shorter
    return optuna


@dataclass(frozen=True)
class Member:
    """One design: its trial, its spec (scaled, ready for ``dlagraph build``) and its costs."""

    trial: int
    spec: dict[str, Any]
    params: int
    macs: int
    memory: int
    choices: dict[str, Any]


@dataclass
class FitResult:
    front: list[Member]  # the Pareto front of the feasible designs, by parameters
    trials: int  # trials finished in the study (complete and pruned)
    feasible: int
    points: list[tuple[int, int, int, bool]] = field(default_factory=list)  # every design's costs
    storage: str = ""
    base: tuple[int, int, int] = (0, 0, 0)  # the base spec's parameters, MACs and memory


def costs(data: dict[str, Any], budget: Budget) -> tuple[Spec, int, int, int]:
    """The spec of ``data`` and its exact parameters, MACs and inference activation bytes."""
    spec = load_spec(data)
    g = compile_spec(spec, lint=False)  # the front's designs are linted when written
    s = summarize(g, budget.size, paths=False)
    mem = activation_memory(g, budget.batch, budget.size, summary=s)
    return spec, s.params, s.macs, mem.inference_peak


def smallest(base: Spec, space: Space, budget: Budget) -> tuple[int, int, int]:
    """The least parameters, MACs and memory the space reaches (its smallest corner, per block)."""

    @dataclass
    class Corner:  # answers a trial's questions with the least of each range
        block: str

        def suggest_float(self, name: str, lo: float, hi: float, step: float) -> float:
            return lo

        def suggest_int(self, name: str, lo: int, hi: int) -> int:
            return lo

        def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
            return {"block": self.block, "cardinality": min(choices)}.get(name, min(choices))

    found = []
    for block in space.blocks:
        data = candidate(base, space, Corner(block))  # residual: min((False, True)) is False
        try:
            found.append(costs(data, budget)[1:])
        except (SpecError, InputSizeError):
            continue
    if not found:
        raise SpecError("space: no candidate of the search space is a valid spec")
    return tuple(min(f[i] for f in found) for i in range(3))  # type: ignore[return-value]


def _key(*parts: Any) -> str:
    text = json.dumps(
        [p.model_dump(mode="json") if hasattr(p, "model_dump") else p for p in parts],
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _storage(optuna: Any, study: str | Path) -> Any:
    text = str(study)
    if "://" in text:  # a database URL: optuna's RDB storage, shared by workers on many machines
        return text
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    Path(text).parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(text))  # a file workers on one machine share


def _violations(b: Budget, params: int, macs: int, memory: int) -> dict[str, float]:
    """How far over each limit a design is (<= 0: within it)."""
    limits = {"params": (b.params, params), "macs": (b.macs, macs), "memory": (b.memory, memory)}
    return {k: float(value - limit) for k, (limit, value) in limits.items() if limit is not None}


def fit(
    base: Spec | str | dict[str, Any],
    budget: Budget,
    study: str | Path,
    space: Space | None = None,
    trials: int = 200,
    seed: int = 0,
    progress: Callable[[int, int, int | None, float], None] | None = None,
) -> FitResult:
    """Search the space around ``base`` for designs within ``budget``; return the Pareto front.

    ``study`` is a journal file path or an optuna storage URL; a study that already holds trials
    for the same base, space and budget resumes until it holds ``trials`` finished trials.

    Raises:
        SpecError: the budget is below the smallest design of the space (one line, with it), or
            the study was made for another base spec, space or budget.
    """
    optuna = _optuna()
    base = load_spec(base)
    space = space or Space()
    summarize(base, budget.size)  # an input size the network cannot take: its own error first
    low = smallest(base, space, budget)
    names = ("parameters", "MACs", f"memory at batch {budget.batch}")
    over = [
        f"{n} {v:,} > {lim:,}"
        for n, v, lim in zip(names, low, (budget.params, budget.macs, budget.memory), strict=True)
        if lim is not None and v > lim
    ]
    if over:
        raise SpecError(
            f"nothing in the search space fits the budget: its smallest design has {', '.join(over)}"
        )
    key = _key(base.to_dict(), space, budget)
    shared = "://" in str(study) or Path(str(study)).exists()
    # workers sharing a study must not draw the same candidates
    sampler = optuna.samplers.NSGAIISampler(seed=seed + (os.getpid() if shared else 0))
    try:
        st = optuna.create_study(
            storage=_storage(optuna, study),
            study_name=STUDY,
            directions=DIRECTIONS,
            sampler=sampler,
            load_if_exists=True,
        )
    except (ValueError, KeyError, TypeError, OSError, ImportError) as e:  # a file of something
        # else (optuna's journal reader raises JSONDecodeError, a ValueError), a folder, a bad URL
        raise SpecError(
            f"{study}: not an optuna study dlagraph fit can open ({type(e).__name__}: "
            f"{clip(str(e).splitlines()[0] if str(e) else '', 80)})"
        ) from None
    made_for = st.user_attrs.get("key")
    if made_for is None:
        st.set_user_attr("key", key)
        st.set_user_attr("base", base.name)
    elif made_for != key:
        raise SpecError(
            f"{study}: this study was made for another base spec, search space or budget (base "
            f"{st.user_attrs.get('base')!r}); give another -o or --study"
        )
    State = optuna.trial.TrialState
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)

    def objective(trial: Any) -> tuple[int, int, int]:
        data = candidate(base, space, trial)
        try:
            spec, params, macs, memory = costs(data, budget)
        except (SpecError, InputSizeError) as e:
            raise optuna.TrialPruned(str(e).splitlines()[0]) from None
        spec_key = _key(spec.to_dict())
        trial.set_user_attr("spec_key", spec_key)
        # the same network again (another width rounds to the same channels)? Every worker's
        # trials, running ones too, are read: of two at once, the first number wins
        for t in st.get_trials(deepcopy=False, states=(State.COMPLETE, State.RUNNING)):
            if t.user_attrs.get("spec_key") == spec_key and t.number < trial.number:
                raise optuna.TrialPruned(f"the same network as trial {t.number}")
        trial.set_user_attr("spec", spec.to_dict())
        violation = _violations(budget, params, macs, memory)
        trial.set_user_attr("violation", list(violation.values()))
        for name, value in violation.items():  # optuna's samplers prefer the feasible
            trial.set_constraint(name, value)
        return params, macs, memory

    start, done0 = time.perf_counter(), len(st.get_trials(deepcopy=False, states=finished))
    best: list[int] = []  # the most parameters within the budget, in this process's trials

    def report(study_: Any, trial: Any) -> None:
        if progress is None:
            return
        if trial.values and all(v <= 0 for v in trial.user_attrs.get("violation", [1])):
            best[:] = [max([*best, int(trial.values[0])])]
        done = len(study_.get_trials(deepcopy=False, states=finished))
        rate = (done - done0) / max(time.perf_counter() - start, 1e-9)
        progress(done, trials, best[0] if best else None, (trials - done) / max(rate, 1e-9))

    remaining = trials - done0
    if remaining > 0:
        with _stop_between_trials(st):
            st.optimize(
                objective,
                n_trials=remaining,
                callbacks=[optuna.study.MaxTrialsCallback(trials, states=finished), report],
            )
    result = _result(optuna, st)
    result.storage = str(study)
    result.base = costs(base.to_dict(), budget)[1:]
    return result


@contextlib.contextmanager
def _stop_between_trials(st: Any) -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP end the search after the running trial (a few milliseconds),
    then act as they would have: a signal that lands inside optuna's storage write breaks its
    bookkeeping (optuna 5 then raises UnboundLocalError), and the study would keep a half-told
    trial. Signals the process ignores stay ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []

    def stop(signum: int, frame: Any) -> None:
        caught.append(signum)
        with contextlib.suppress(RuntimeError):  # outside a trial: the loop ends by itself
            st.stop()

    names = ("SIGINT", "SIGTERM", "SIGHUP")
    sigs = [getattr(signal, n) for n in names if hasattr(signal, n)]
    old = {s: signal.getsignal(s) for s in sigs if signal.getsignal(s) is not signal.SIG_IGN}
    for s in old:
        signal.signal(s, stop)
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    if caught:  # now the signal's own handler (the CLI's raises; the default ends the process)
        handler = old[caught[0]]
        if callable(handler):
            handler(caught[0], None)
        else:
            signal.raise_signal(caught[0])


def _result(optuna: Any, st: Any) -> FitResult:
    complete = st.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    finished = len(
        st.get_trials(
            deepcopy=False,
            states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED),
        )
    )
    ok = [t for t in complete if all(v <= 0 for v in t.user_attrs["violation"])]
    points = [
        (*map(int, t.values), all(v <= 0 for v in t.user_attrs["violation"])) for t in complete
    ]
    front = [
        Member(t.number, t.user_attrs["spec"], *map(int, t.values), dict(t.params))
        for t in _pareto(ok)
    ]
    front.sort(key=lambda m: (m.params, m.macs, m.memory, m.trial))
    return FitResult(front, finished, len(ok), points)  # type: ignore[arg-type]


def _pareto(trials: list[Any]) -> list[Any]:
    """The feasible trials no other dominates (more or equal parameters, less or equal MACs and
    memory, one strictly better); identical costs keep the first trial. (optuna's ``best_trials``
    does the same, but also for infeasible trials when none is feasible.)"""

    def dominates(a: Any, b: Any) -> bool:
        sa, sb = (
            (a.values[0], -a.values[1], -a.values[2]),
            (b.values[0], -b.values[1], -b.values[2]),
        )
        return all(x >= y for x, y in zip(sa, sb, strict=True)) and sa != sb

    out, costs_seen = [], set()
    for t in sorted(trials, key=lambda t: t.number):
        if any(dominates(o, t) for o in trials) or tuple(t.values) in costs_seen:
            continue
        costs_seen.add(tuple(t.values))
        out.append(t)
    return out
