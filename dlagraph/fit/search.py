"""The search: an optuna study over :mod:`.space`, each candidate costed statically (exact
parameters, MACs and activation memory, no torch), the budget as optuna constraints, and the
Pareto front of capacity (parameters, the more the better within the budget) against MACs and
activation memory. The study lives in a journal file (or any optuna storage URL), so an
interrupted ``fit`` resumes and several workers can share one study."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import numbers
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..base.errors import DlagraphError, InputSizeError, SpecError, clip
from ..ir.analysis import summarize
from ..ir.compile import compile_spec
from ..ir.memory import activation_memory
from ..spec import Spec, load_spec
from .evaluate import Evaluation, Evaluator, Stopped, evaluator_name
from .space import Budget, Space, candidate
from .storage import fail_dead_workers, not_a_study, open_storage, shown_storage, worker_id

__all__ = ["fit", "FitResult", "Member", "costs", "smallest", "pareto"]

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
    """One design: its trial, its spec (scaled, ready for ``dlagraph build``) and its costs;
    ``accuracy`` with an evaluator, ``latency`` (seconds per batch) once measured."""

    trial: int
    spec: dict[str, Any]
    params: int
    macs: int
    memory: int
    choices: dict[str, Any]
    accuracy: float | None = None
    latency: float | None = None
    feasible: bool = True

    def objectives(self) -> tuple[float, ...]:
        """Larger is better in each: parameters (capacity, up to the budget), -MACs, -memory;
        with a score, the score and -parameters (fewer for the same score is better)."""
        if self.accuracy is None:
            return (self.params, -self.macs, -self.memory)
        return (self.accuracy, -self.params, -self.macs, -self.memory)


@dataclass
class FitResult:
    front: list[Member]  # the Pareto front of the feasible designs, by parameters
    trials: int  # trials finished in the study (complete and pruned)
    feasible: int
    designs: list[Member] = field(default_factory=list)  # every costed design, in trial order
    storage: str = ""
    base: Member | None = None  # the base spec, as trial -1
    evaluated: str | None = None  # the evaluator's name, if accuracy is an objective
    measured: str | None = None  # how latency was measured, if it was

    @property
    def points(self) -> list[tuple[int, int, int, bool]]:
        """Every design's parameters, MACs, memory and whether it is within the budget."""
        return [(m.params, m.macs, m.memory, m.feasible) for m in self.designs]


def costs(data: Spec | dict[str, Any], budget: Budget) -> tuple[Spec, int, int, int]:
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


def cache_key(*parts: Any) -> str:
    text = json.dumps(
        [p.model_dump(mode="json") if hasattr(p, "model_dump") else p for p in parts],
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


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
    progress: Callable[[int, int, float | None, float], None] | None = None,
    evaluate: Evaluator | None = None,
    evaluating: Callable[[int, int | None, float | None], None] | None = None,
) -> FitResult:
    """Search the space around ``base`` for designs within ``budget``; return the Pareto front.

    ``study`` is a journal file path or an optuna storage URL; a study that already holds trials
    for the same base, space, budget and evaluator resumes until it holds ``trials`` finished
    trials. ``evaluate`` (see :mod:`.evaluate`) adds its score, e.g. accuracy, as an objective:
    each design within the budget is evaluated (those over it are not), and optuna's pruner
    stops weak evaluations early. ``progress(done, total, best, seconds_left)`` is called after
    each trial (``best``: the most parameters, or the best score, within the budget).
    ``evaluating(trial, step, score)`` is called as an evaluation starts (``step`` None) and at
    each score the evaluator reports (an epoch's accuracy): an evaluation may take minutes.

    Raises:
        SpecError: the budget is below the smallest design of the space (one line, with it), or
            the study was made for another base spec, space, budget or evaluator.
    """
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**32:
        raise SpecError(f"seed: give a whole number from 0 to 2**32 - 1 (got {seed!r})")
    seed = int(seed)
    if (
        isinstance(trials, bool)
        or not isinstance(trials, numbers.Integral)
        or not 1 <= trials <= 10**6
    ):
        raise SpecError(f"trials: give a whole number from 1 to 1,000,000 (got {trials!r})")
    if not isinstance(study, str | os.PathLike) or not str(study).strip():
        raise SpecError(
            f"study: give a journal file path or a database URL (got {type(study).__name__})"
        )
    optuna = _optuna()
    base = load_spec(base)
    space = space or Space()
    summarize(base, budget.size)  # an input size the network cannot take: its own error first
    _check_reachable(base, space, budget)
    scored = evaluator_name(evaluate) if evaluate is not None else None
    key = cache_key(base.to_dict(), space, budget, scored)
    shared = "://" in str(study) or Path(str(study)).exists()
    storage = open_storage(optuna, study)
    # workers sharing a study must not draw the same candidates (numpy takes seeds below 2**32)
    sampler = optuna.samplers.NSGAIISampler(seed=(seed + (os.getpid() if shared else 0)) % 2**32)
    # with a score, parameters are a cost like the others (the score measures capacity)
    directions = ["minimize", *DIRECTIONS[1:], "maximize"] if scored else DIRECTIONS
    _refuse_foreign(optuna, study, storage, directions, scored is not None)
    st = _open(optuna, study, storage, STUDY, directions, sampler)
    made_for = st.user_attrs.get("key")
    if made_for is None:
        st.set_user_attr("key", key)
        st.set_user_attr("base", base.name)
    elif made_for != key:
        raise SpecError(
            f"{shown_storage(study)}: this study was made for another base spec, search space, budget or "
            f"evaluator (base {st.user_attrs.get('base')!r}); give another -o or --study"
        )
    curves = None
    if evaluate is not None:  # the learning curves, for the pruner (see .evaluate)
        pruner = optuna.pruners.PercentilePruner(25.0, n_startup_trials=5, n_warmup_steps=3)
        curves = _open(optuna, study, storage, STUDY + "-accuracy", ["maximize"], None, pruner)
    sized = base.input_size is not None or tuple(budget.size) != (224, 224)
    State = optuna.trial.TrialState
    finished = (State.COMPLETE, State.PRUNED)
    stopping: list[int] = []  # the signals caught (see _stop_between_trials)

    def is_stopping() -> bool:
        return bool(stopping)

    def score(spec: Spec, number: int) -> float:
        assert evaluate is not None and curves is not None
        with warnings.catch_warnings():  # a curve lives and fails with its trial (below)
            warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
            curve = curves.ask()
        curve.set_user_attr("trial", number)  # whose curve: failed with its trial (below)
        if evaluating:
            evaluating(number, None, None)

        def report(value: float, step: int) -> bool:
            curve.report(value, step)
            if evaluating:
                evaluating(number, step, value)
            return bool(curve.should_prune())

        try:
            value = _evaluate(evaluate, spec, Evaluation(budget.size, seed, report, is_stopping))
        except optuna.TrialPruned:
            curves.tell(curve, state=State.PRUNED, skip_if_finished=True)
            raise
        except BaseException:  # stopped, or the evaluator failed: the trial fails
            curves.tell(curve, state=State.FAIL, skip_if_finished=True)
            raise
        curves.tell(curve, value, skip_if_finished=True)
        return value

    current: list[int] = []  # the trial this worker runs (see run)
    raised: list[BaseException] = []  # what its objective raised (its own failure)

    def objective(trial: Any) -> tuple[float, ...]:
        current[:], raised[:] = [trial._trial_id], []
        try:
            return design(trial)
        except optuna.TrialPruned:
            raise
        except Stopped as e:  # Ctrl-C mid-evaluation: the trial fails, its design runs again
            st.enqueue_trial(
                trial.params, user_attrs={"spec_key": trial.user_attrs.get("spec_key")}
            )
            raised.append(e)
            raise
        except BaseException as e:
            raised.append(e)
            raise

    def failed_under_us(error: BaseException) -> bool:
        """This worker's trial was failed by another worker (this one was paused past the grace
        period, or its heartbeat starved, and taken for dead; its design was queued again):
        optuna's tell then refuses the trial, raising its own error instead of the objective's."""
        if not current or (raised and raised[0] is error):
            return False
        return bool(st._storage.get_trial(current[0]).state == State.FAIL)

    def design(trial: Any) -> tuple[float, ...]:
        trial.set_user_attr("worker", worker_id())  # for fail_dead_workers
        fail_dead_workers(optuna, st)  # a journal's killed worker: its design queued again
        if curves is not None:
            _fail_orphan_curves(optuna, st, curves)
        try:
            data = candidate(base, space, trial)
            if sized:  # each design says the size it was searched (and is costed) at
                data["input_size"] = list(budget.size)
            spec = load_spec(data)
        except SpecError as e:
            raise optuna.TrialPruned(str(e).splitlines()[0]) from None
        spec_key = cache_key(spec.to_dict())
        trial.set_user_attr("spec_key", spec_key)
        # the same network again (another width rounds to the same channels)? Every worker's
        # trials, running ones too, are read: of two at once, the first number wins. Checked
        # before costing: late in a search about half the candidates are repeats
        for t in st.get_trials(deepcopy=False, states=(State.COMPLETE, State.RUNNING)):
            if t.user_attrs.get("spec_key") == spec_key and t.number < trial.number:
                raise optuna.TrialPruned(f"the same network as trial {t.number}")
        try:
            _, params, macs, memory = costs(spec, budget)
        except (SpecError, InputSizeError) as e:
            raise optuna.TrialPruned(str(e).splitlines()[0]) from None
        violation = _violations(budget, params, macs, memory)
        feasible = all(v <= 0 for v in violation.values())
        # only designs within the budget are evaluated: the sampler ranks any feasible design
        # above every infeasible one, so their score would not be used
        accuracy = score(spec, trial.number) if evaluate is not None and feasible else None
        # one write for all (the journal storage syncs each write to disk)
        design = {"spec": spec.to_dict(), "violation": [*violation.values()], "score": accuracy}
        trial.set_user_attr("design", design)
        with warnings.catch_warnings():  # a dead worker's retried trial has them already
            warnings.filterwarnings("ignore", "The constraint value is ignored", UserWarning)
            for name, value in violation.items():  # optuna's samplers prefer the feasible
                trial.set_constraint(name, value)
        return (params, macs, memory) + (() if evaluate is None else (accuracy or 0.0,))

    start, done0 = time.perf_counter(), len(st.get_trials(deepcopy=False, states=finished))
    best: list[float] = []  # the best feasible design of this process: parameters, or score

    def report(study_: Any, trial: Any) -> None:
        if progress is None:
            return
        if trial.values and _feasible(trial):
            best[:] = [max([*best, trial.values[-1] if scored else trial.values[0]])]
        done = len(study_.get_trials(deepcopy=False, states=finished))
        rate = (done - done0) / max(time.perf_counter() - start, 1e-9)
        progress(done, trials, best[0] if best else None, (trials - done) / max(rate, 1e-9))

    def run(n_trials: int, callbacks: list[Any]) -> bool:
        """Run up to ``n_trials``; True when stopped short because this worker's trial was failed
        under it (the process was paused past the grace period and taken for dead: its design
        is queued again), so the search goes on."""
        current.clear()
        try:
            st.optimize(objective, n_trials=max(n_trials, 0), callbacks=callbacks)
        except Exception as e:
            if not failed_under_us(e):
                raise
            return True
        return False

    with _stop_between_trials(st, stopping):
        if trials - done0 > 0:
            full = optuna.study.MaxTrialsCallback(trials, states=finished)
            while run(trials - len(st.get_trials(deepcopy=False, states=finished)), [full, report]):
                if stopping:
                    break
        # the study is full: a dead worker's last trial is failed and its design queued now (no
        # trial starts that would do it), and a design queued again is evaluated too, not left
        # waiting (one at a time: another worker may take it first). A rerun does the same.
        _fail_the_dead(optuna, st, curves)
        while not stopping and _waiting(optuna, st):
            run(1, [report])
            _fail_the_dead(optuna, st, curves)
    result = _result(optuna, st)
    result.storage = shown_storage(study)
    result.evaluated = scored
    _, *base_costs = costs(base, budget)
    base_score = None
    if evaluate is not None:  # once per study: a rerun reads it back
        base_score = st.user_attrs.get("base_score")
        if base_score is None:
            with _stop_between_trials(st, stopping):
                never = Evaluation(budget.size, seed, lambda v, s: False, is_stopping)
                base_score = _evaluate(evaluate, base, never)
            st.set_user_attr("base_score", base_score)
    result.base = Member(-1, base.to_dict(), *base_costs, {}, base_score)  # type: ignore[misc]
    return result


def _evaluate(evaluate: Evaluator, spec: Spec, evaluation: Evaluation) -> float:
    """The evaluator's score; its own failures are one line (``DlagraphError``)."""
    import optuna

    try:
        score = float(evaluate(spec, evaluation))
    except (optuna.TrialPruned, Stopped, DlagraphError):
        raise
    except Exception as e:  # a user's function: whatever it raises is reported in one line
        raise DlagraphError(
            f"evaluate: {evaluator_name(evaluate)} raised {type(e).__name__}: "
            f"{clip(str(e).splitlines()[0] if str(e) else '', 120)}"
        ) from e
    if not math.isfinite(score):
        raise DlagraphError(f"evaluate: {evaluator_name(evaluate)} returned {score} (not finite)")
    return score


def _check_reachable(base: Spec, space: Space, budget: Budget) -> None:
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


def _open(
    optuna: Any,
    where: str | Path,
    storage: Any,
    name: str,
    directions: list[str],
    sampler: Any,
    pruner: Any = None,
) -> Any:
    try:
        return optuna.create_study(
            storage=storage,
            study_name=name,
            directions=directions,
            sampler=sampler,
            pruner=pruner,
            load_if_exists=True,
        )
    except (
        ValueError,
        KeyError,
        TypeError,
        OSError,
        ImportError,
        AssertionError,
    ) as e:  # a file of something
        # else (optuna's journal reader raises JSONDecodeError, a ValueError), a folder, a bad URL
        raise not_a_study(where, e) from None


def _refuse_foreign(
    optuna: Any, where: str | Path, storage: Any, directions: list[str], curves: bool
) -> None:
    """Studies of our names that another program made: refused before anything is written to
    them. ``STUDY`` with trials and no key of ours, or with other directions; the learning
    curves' study with another direction."""
    try:
        found = {s.study_name: s for s in optuna.get_all_study_summaries(storage)}
    except Exception as e:  # a storage that cannot list its studies
        raise not_a_study(where, e) from None

    def named(summary: Any) -> list[str]:
        return [d.name.lower() for d in summary.directions]

    main = found.get(STUDY)
    # no trials yet and our directions: a worker starting beside this one may not have written
    # its key yet (or a study of the same shape, harmless to take)
    if main is not None and "key" not in main.user_attrs:
        if main.n_trials or named(main) != directions:
            raise SpecError(
                f"{shown_storage(where)}: holds a study named {STUDY!r} that dlagraph fit did not "
                f"make ({main.n_trials} trials, no design key); give another -o or --study"
            )
    other = found.get(STUDY + "-accuracy")
    if curves and other is not None and named(other) != ["maximize"]:
        raise SpecError(
            f"{shown_storage(where)}: holds a study named {STUDY + '-accuracy'!r} that dlagraph "
            "fit did not make (it minimizes); give another -o or --study"
        )


def _fail_orphan_curves(optuna: Any, st: Any, curves: Any) -> None:
    """Learning curves still running whose trial failed (its worker died): failed too, so the
    pruner and the study show no evaluation running forever."""
    State = optuna.trial.TrialState
    dead = {t.number for t in st.get_trials(deepcopy=False, states=(State.FAIL,))}
    for c in curves.get_trials(deepcopy=False, states=(State.RUNNING,)):
        if c.user_attrs.get("trial") in dead:
            with contextlib.suppress(Exception):  # another worker failed it first
                curves._storage.set_trial_state_values(c._trial_id, State.FAIL)


@contextlib.contextmanager
def _stop_between_trials(st: Any, caught: list[int]) -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP end the search after the running trial (a few milliseconds;
    an evaluation stops at its next step), then act as they would have: a signal that lands
    inside optuna's storage write breaks its bookkeeping (optuna 5 then raises
    UnboundLocalError), and the study would keep a half-told trial. Signals the process ignores
    stay ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

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
    except Stopped:  # an evaluation ended early: its trial is failed, to be run again
        if not caught:
            raise
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    if caught:  # now the signal's own handler (the CLI's raises; the default ends the process)
        handler = old[caught[0]]
        if callable(handler):
            handler(caught[0], None)
        else:
            signal.raise_signal(caught[0])


def _fail_the_dead(optuna: Any, st: Any, curves: Any) -> None:
    """Fail the trials of dead workers and queue their designs: this host's (by pid), and on a
    database any host's whose heartbeat stopped longer than the grace period ago."""
    fail_dead_workers(optuna, st)
    with warnings.catch_warnings():  # optuna calls its heartbeat API experimental
        warnings.simplefilter("ignore")
        optuna.storages.fail_stale_trials(st)
    if curves is not None:
        _fail_orphan_curves(optuna, st, curves)


def _waiting(optuna: Any, st: Any) -> bool:
    return bool(st.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)))


def _feasible(trial: Any) -> bool:
    design = trial.user_attrs.get("design")
    return design is not None and all(v <= 0 for v in design["violation"])


def _result(optuna: Any, st: Any) -> FitResult:
    State = optuna.trial.TrialState
    complete = st.get_trials(deepcopy=False, states=(State.COMPLETE,))
    finished = len(st.get_trials(deepcopy=False, states=(State.COMPLETE, State.PRUNED)))
    designs = [_member(t) for t in sorted(complete, key=lambda t: t.number)]
    ok = [m for m in designs if m.feasible]
    return FitResult(pareto(ok), finished, len(ok), designs)


def _member(t: Any) -> Member:
    """A finished trial as a member; a trial whose values or design were tampered with (not
    numbers, not finite, no design) is one line naming it."""
    try:
        design = t.user_attrs["design"]
        values = [float(v) for v in t.values[:3]]
        if not all(math.isfinite(v) and 0 <= v < 2**63 for v in values) or not isinstance(
            design, dict
        ):
            raise ValueError(f"values {t.values[:3]}")
        if not isinstance(design["spec"], dict):  # a name or path would be read from disk
            raise ValueError(f"spec {clip(repr(design['spec']), 40)}")
        score = design.get("score")
        if score is not None and not (isinstance(score, int | float) and math.isfinite(score)):
            raise ValueError(f"score {score!r}")
        return Member(
            t.number,
            design["spec"],
            *map(int, values),  # type: ignore[arg-type]
            dict(t.params),
            score,
            feasible=_feasible(t),
        )
    except (KeyError, TypeError, ValueError, OverflowError, AttributeError) as e:
        raise SpecError(
            f"trial {t.number}: not a design dlagraph fit wrote ({clip(str(e), 80)}); the study "
            "was changed by another program"
        ) from None


def pareto(members: list[Member]) -> list[Member]:
    """The members no other dominates (at least as good in every objective of
    :meth:`Member.objectives`, better in one), by parameters; of identical costs the first
    trial stays. (optuna's ``best_trials`` does the same, but also for infeasible trials when
    none is feasible.)"""

    def dominates(a: Member, b: Member) -> bool:
        sa, sb = a.objectives(), b.objectives()
        return all(x >= y for x, y in zip(sa, sb, strict=True)) and sa != sb

    out, seen = [], set()
    for m in sorted(members, key=lambda m: m.trial):
        if any(dominates(o, m) for o in members) or m.objectives() in seen:
            continue
        seen.add(m.objectives())
        out.append(m)
    return sorted(out, key=lambda m: (m.params, m.macs, m.memory, m.trial))
