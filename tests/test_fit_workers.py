"""`dlagraph fit` with several workers on one study: a real PostgreSQL server (tests/postgres.py)
and a journal file; a worker SIGKILLed mid-evaluation loses nothing (its design is evaluated
again by a live worker, exactly once among the finished trials), workers starting together on a
fresh database create its schema once, and every storage mistake is one line."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import dlagraph
from dlagraph.base.errors import SpecError

optuna = pytest.importorskip("optuna")
sys.path.insert(0, str(Path(__file__).parent))
from postgres import new_database, server  # noqa: E402

from dlagraph.fit import Budget, fit  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY = Budget(params=300_000, size=(32, 32))
FAST = {"DLAGRAPH_FIT_HEARTBEAT": "1", "DLAGRAPH_FIT_GRACE": "2", "DLAGRAPH_FIT_LOCK_GRACE": "3"}

# a stand-in evaluator: slow enough to be killed in, and it says while it runs
SCORER = """
import os, time
from pathlib import Path

def slow(spec, evaluation):
    busy = Path(os.environ["DLAGRAPH_TEST_MARKS"]) / f"busy-{os.getpid()}"
    busy.write_text(spec.name)
    for _ in range(12):
        time.sleep(0.1)
        evaluation.check()
    busy.unlink()  # last: a kill that finds the file lands mid-evaluation
    return spec.levels[-1].channels / 1000
"""


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    with server() as folder:
        yield folder


def _worker(study: str, out: Path, trials: int, cwd: Path, marks: Path) -> subprocess.Popen:
    env = {**os.environ, **FAST, "PYTHONPATH": str(ROOT), "DLAGRAPH_TEST_MARKS": str(marks)}
    args = ["fit", "dla_tiny_digits", "--size", "32", "--max-params", "300K", "--trials",
            str(trials), "--evaluate", "python:scorer:slow", "--no-plot", "--study", study,
            "-o", str(out)]  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-m", "dlagraph", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _workers(
    study: str, tmp: Path, n: int, trials: int, reaped: list[subprocess.Popen]
) -> tuple[list[subprocess.Popen], Path]:
    """``n`` workers of one study with the slow stand-in evaluator, and the folder of its marks."""
    (tmp / "scorer.py").write_text(SCORER)
    marks = tmp / "marks"
    marks.mkdir()
    workers = [_worker(study, tmp / f"o{i}", trials, tmp, marks) for i in range(n)]
    reaped.extend(workers)
    return workers, marks


def _mid_evaluation(worker: subprocess.Popen, marks: Path) -> Path:
    """Wait until ``worker`` is evaluating; its busy mark (gone when the evaluation ends)."""
    busy = marks / f"busy-{worker.pid}"
    deadline = time.monotonic() + 120
    while not busy.exists():
        assert time.monotonic() < deadline and worker.poll() is None, worker.communicate()
        time.sleep(0.05)
    return busy


def _study(url: str) -> tuple:
    storage = url if "://" in url else optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(url)
    )  # fmt: skip
    names = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    return tuple(
        optuna.load_study(study_name=name, storage=storage) if name in names else None
        for name in ("dlagraph-fit", "dlagraph-fit-accuracy")
    )


def _front(trials: list) -> set[int]:
    """The Pareto front of the finished designs within the budget, computed here: fewer
    parameters, MACs and memory, a higher score."""
    pts = {}
    for t in trials:
        design = t.user_attrs["design"]
        if all(v <= 0 for v in design["violation"]):
            pts[t.number] = (-t.values[0], -t.values[1], -t.values[2], design["score"])

    def dominated(a: tuple) -> bool:
        return any(all(x >= y for x, y in zip(b, a, strict=True)) and b != a for b in pts.values())

    front, seen = set(), set()
    for n in sorted(pts):
        if not dominated(pts[n]) and pts[n] not in seen:
            seen.add(pts[n])
            front.add(n)
    return front


@pytest.mark.slow  # three worker processes evaluating for ~20 s
@pytest.mark.parametrize("kind", ["postgresql", "journal"])
def test_a_killed_worker_loses_nothing_and_nothing_is_done_twice(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest, reaped: list[subprocess.Popen]
) -> None:
    if kind == "postgresql":
        study = new_database(request.getfixturevalue("cluster"))
    else:
        study = "study.log"  # relative, as users give it
    trials = 14
    workers, marks = _workers(study, tmp_path, 3, trials, reaped)
    victim = workers[0]
    busy = _mid_evaluation(victim, marks)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert busy.exists()  # killed mid-evaluation
    for w in workers[1:]:
        out, err = w.communicate(timeout=300)
        assert w.returncode == 0, err[-2000:]
        assert "Warning" not in err, err[
            -2000:
        ]  # a retried trial's constraints: not a user's worry
    main, curves = _study(str(tmp_path / study) if kind == "journal" else study)
    State = optuna.trial.TrialState
    assert not curves.get_trials(states=(State.RUNNING,))
    lost = [t for t in main.trials if t.user_attrs.get("worker", "").endswith(f":{victim.pid}")
            and t.state == State.FAIL]  # fmt: skip
    table = [victim.pid] + [
        (t.number, t.state.name, t.user_attrs.get("worker"), t.user_attrs.get("spec_key", "")[:6],
         t.system_attrs.get("failed_trial"), t.datetime_start and t.datetime_start.time())
        for t in main.trials
    ]  # fmt: skip
    assert not main.get_trials(states=(State.RUNNING,)), table  # none stuck
    assert len(lost) == 1, table
    complete = main.get_trials(states=(State.COMPLETE,))
    evaluated = [t for t in complete if t.user_attrs["design"]["score"] is not None]
    keys = [t.user_attrs["spec_key"] for t in evaluated]
    assert len(keys) == len(set(keys)), table  # every design evaluated once among the finished
    assert lost[0].user_attrs["spec_key"] in keys, table  # the lost design, by a live worker
    finished = main.get_trials(states=(State.COMPLETE, State.PRUNED))
    assert len(finished) >= trials
    # the front the workers report (what fit returns from the study) equals the front of the
    # same finished designs, computed here as one worker would
    from dlagraph.fit.search import _result

    assert {m.trial for m in _result(optuna, main).front} == _front(complete)


@pytest.mark.slow  # two worker processes evaluating for ~15 s
def test_a_worker_paused_past_the_grace_period_goes_on(
    tmp_path: Path, cluster: str, reaped: list[subprocess.Popen]
) -> None:
    """Ctrl-Z (SIGSTOP) mid-evaluation for longer than the grace period: the other worker fails
    the paused trial (its heartbeat stopped) and queues its design; woken, the paused worker finds
    its trial failed under it and goes on with the next, without a traceback."""
    study = new_database(cluster)
    trials = 30  # the other worker still searching when the pause has lasted 2 s
    workers, marks = _workers(study, tmp_path, 2, trials, reaped)
    paused = workers[0]
    _mid_evaluation(paused, marks)
    deadline = time.monotonic() + 120
    paused.send_signal(signal.SIGSTOP)
    main, _ = _study(study)
    State = optuna.trial.TrialState
    mine = f":{paused.pid}"
    # paused until the other worker has failed its trial (grace 2 s)
    while not [t for t in main.get_trials(states=(State.FAIL,))
               if t.user_attrs.get("worker", "").endswith(mine)]:  # fmt: skip
        assert time.monotonic() < deadline and workers[1].poll() is None
        time.sleep(0.1)
    paused.send_signal(signal.SIGCONT)
    for w in workers:
        out, err = w.communicate(timeout=300)
        assert w.returncode == 0 and "Traceback" not in err and "Warning" not in err, err[-2000:]
    main, curves = _study(study)
    assert not main.get_trials(states=(State.RUNNING,))
    assert not curves.get_trials(states=(State.RUNNING,))
    complete = main.get_trials(states=(State.COMPLETE,))
    keys = [
        t.user_attrs["spec_key"] for t in complete if t.user_attrs["design"]["score"] is not None
    ]
    assert len(keys) == len(set(keys))
    assert len(main.get_trials(states=(State.COMPLETE, State.PRUNED))) >= trials


@pytest.mark.slow  # eight worker processes
def test_workers_starting_together_on_a_fresh_database_create_it_once(
    tmp_path: Path, cluster: str, reaped: list[subprocess.Popen]
) -> None:
    urls = {"sqlite": f"sqlite:///{tmp_path / 'fresh.db'}", "postgresql": new_database(cluster)}
    for kind, url in urls.items():
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        # a budget every design meets: the point is one database made once, and a tighter one
        # left a worker with no design within it, by the luck of the draw (exit 2, once in
        # about five full runs)
        args = ["fit", "dla_tiny_digits", "--size", "32", "--max-params", "100M", "--trials",
                "8", "--no-plot", "--study", url]  # fmt: skip
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "dlagraph", *args, "-o", str(tmp_path / f"{kind}{i}")],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            for i in range(4)
        ]
        reaped.extend(procs)
        for p in procs:
            out, err = p.communicate(timeout=300)
            assert p.returncode == 0 and "Traceback" not in err, (kind, err[-2000:])
        main, _ = _study(url) if kind == "postgresql" else (None, None)
        if main is not None:
            assert (
                len(
                    main.get_trials(
                        states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
                    )
                )
                >= 8
            )


def test_the_study_is_readable_with_optunas_own_api(tmp_path: Path, cluster: str) -> None:
    url = new_database(cluster)
    fit("dla_tiny_digits", TINY, url, trials=6)
    st = optuna.load_study(study_name="dlagraph-fit", storage=url)
    t = next(t for t in st.trials if t.state.name == "COMPLETE")
    design = t.user_attrs["design"]
    assert dlagraph.load_spec(design["spec"]).name.startswith("dla_tiny_digits")
    assert set(t.params) and t.user_attrs["spec_key"] and st.user_attrs["base"] == "dla_tiny_digits"


@pytest.mark.parametrize(
    ("study", "expected"),
    [
        ("sqlite:///{tmp}/text.db", "not an optuna study dlagraph fit can open (DatabaseError"),
        ("sqlite:///{tmp}/missing/x.db", "not an optuna study dlagraph fit can open (OperationalError"),
        ("nodialect://x/y", "not an optuna study dlagraph fit can open (NoSuchModuleError"),
        ("://", "not an optuna study dlagraph fit can open (ArgumentError"),
        ("{tmp}/fifo", "not a regular file (a FIFO or a device?)"),
        ("/dev/null", "not a regular file (a FIFO or a device?)"),
        ("{tmp}", "a folder; give a journal file path or a database URL"),
    ],
)  # fmt: skip
def test_every_storage_problem_is_one_line(study: str, expected: str, tmp_path: Path) -> None:
    (tmp_path / "text.db").write_text("not a database\n" * 100)
    os.mkfifo(tmp_path / "fifo")
    where = study.replace("{tmp}", str(tmp_path))
    with pytest.raises(SpecError) as e:
        fit("dla_tiny_digits", TINY, where, trials=2)
    assert expected in str(e.value) and "\n" not in str(e.value)
    if study not in ("://", "{tmp}/fifo"):
        return
    # and from the command line (two of them: a process each): exit 2, one line, no traceback
    r = subprocess.run(
        [sys.executable, "-m", "dlagraph", "fit", "dla_tiny_digits", "--size", "32",
         "--max-params", "300K", "--trials", "2", "--no-plot", "--study", where,
         "-o", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert r.returncode == 2 and "Traceback" not in r.stderr and expected in r.stderr


def test_a_foreign_study_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'other.db'}"
    other = optuna.create_study(study_name="dlagraph-fit", storage=url)
    other.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    with pytest.raises(
        SpecError, match="holds a study named 'dlagraph-fit' that dlagraph fit did not make"
    ):
        fit("dla_tiny_digits", TINY, url, trials=2)
    again = optuna.load_study(study_name="dlagraph-fit", storage=url)
    assert len(again.trials) == 3 and "key" not in again.user_attrs  # nothing written


@pytest.mark.parametrize("value", [math.inf, "big"])
def test_tampered_trials_are_one_line(value: object, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    fit("dla_tiny_digits", TINY, url, trials=4)
    st = optuna.load_study(study_name="dlagraph-fit", storage=url)
    t = next(t for t in st.trials if t.state.name == "COMPLETE")
    design = dict(t.user_attrs["design"])
    design["score"] = value
    import json
    import sqlite3

    with sqlite3.connect(tmp_path / "s.db") as db:  # as another program would change it
        db.execute(
            "UPDATE trial_user_attributes SET value_json = ? WHERE trial_id = ? AND key = 'design'",
            (json.dumps(design), t._trial_id),
        )
    with pytest.raises(SpecError, match=f"trial {t.number}: not a design dlagraph fit wrote"):
        fit("dla_tiny_digits", TINY, url, trials=4)


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, True])
def test_the_seed_is_bounded(seed: object, tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="seed: give a whole number from 0 to 2\\*\\*32 - 1"):
        fit("dla_tiny_digits", TINY, tmp_path / "s.log", trials=2, seed=seed)  # type: ignore[arg-type]


def test_a_large_seed_resumes(tmp_path: Path) -> None:
    """Workers add their process id to the seed: taken modulo 2**32, a seed near the top resumes."""
    path = tmp_path / "s.log"
    fit("dla_tiny_digits", TINY, path, trials=3, seed=2**32 - 1)
    assert fit("dla_tiny_digits", TINY, path, trials=5, seed=2**32 - 1).trials == 5


def test_a_killed_journal_worker_resumes_with_a_relative_path(
    tmp_path: Path, reaped: list[subprocess.Popen]
) -> None:
    """kill -9 mid-search, then the same command again with a relative -o: it resumes (the
    journal's lock no longer depends on the path's form; one the killed worker held is said and
    expires)."""
    env = {**os.environ, **FAST, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-m", "dlagraph", "fit", "dla_tiny_digits", "--size", "32",
            "--max-params", "300K", "--no-plot", "-o", "rel"]  # fmt: skip
    p = subprocess.Popen([*args, "--trials", "100000"], cwd=tmp_path, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    reaped.append(p)
    log = tmp_path / "rel" / "study.log"
    deadline = time.monotonic() + 60
    while not (log.exists() and log.stat().st_size > 20_000):
        assert time.monotonic() < deadline and p.poll() is None
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    done = len(_study(str(log))[0].trials)
    r = subprocess.run([*args, "--trials", str(done + 5)], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    if "lock exists" in r.stderr:  # the kill landed while the worker was writing
        assert "a killed worker left it (it expires after 3 s)" in r.stderr


def test_the_command_line_bounds_the_seed(capsys: pytest.CaptureFixture[str]) -> None:
    from dlagraph.cli import main

    args = ["fit", "dla_tiny_digits", "--max-params", "300K", "--seed", str(2**32)]
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2
    assert (
        "--seed: must be below 2**32 = 4,294,967,296 (got 4,294,967,296)" in capsys.readouterr().err
    )


def test_a_password_is_never_shown_and_file_urls_are_shown_as_given() -> None:
    from dlagraph.fit.storage import shown_storage

    assert "sekret" not in shown_storage("postgresql+psycopg2://u:sekret@h/db")
    shown = shown_storage("postgresql+psycopg2:///db?host=/tmp/s&user=u&password=sekret")
    assert "sekret" not in shown and "host=/tmp/s" in shown and "db" in shown
    assert shown_storage("sqlite:////tmp/a:b@c.db") == "sqlite:////tmp/a:b@c.db"


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda tmp: "sqlite://", "names no database file"),
        (lambda tmp: "sqlite:///:memory:", "names no database file"),
        (lambda tmp: _journal_with(tmp, '{"op_code": 99}\n'), "not an optuna study dlagraph fit can open"),
        (lambda tmp: _foreign(tmp, "dlagraph-fit", "maximize"), "holds a study named 'dlagraph-fit' that dlagraph fit did not make (0 trials"),
    ],
)  # fmt: skip
def test_more_storage_problems_are_one_line(make: object, expected: str, tmp_path: Path) -> None:
    where = make(tmp_path)  # type: ignore[operator]
    with pytest.raises(SpecError) as e:
        fit("dla_tiny_digits", TINY, where, trials=2)
    assert expected in str(e.value) and "\n" not in str(e.value)


def _journal_with(tmp: Path, line: str) -> str:
    path = tmp / "j.log"
    fit("dla_tiny_digits", TINY, path, trials=2)
    with path.open("a") as f:
        f.write(line)
    return str(path)


def _foreign(tmp: Path, name: str, direction: str) -> str:
    url = f"sqlite:///{tmp / 'f.db'}"
    optuna.create_study(study_name=name, storage=url, direction=direction)
    return url


def test_a_foreign_curve_study_is_refused(tmp_path: Path) -> None:
    url = _foreign(tmp_path, "dlagraph-fit-accuracy", "minimize")
    with pytest.raises(SpecError, match="'dlagraph-fit-accuracy' that dlagraph fit did not make"):
        fit("dla_tiny_digits", TINY, url, trials=2, evaluate=lambda spec, ev: 1.0)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"study": None}, "study: give a journal file path or a database URL (got NoneType)"),
        ({"study": 123}, "study: give a journal file path or a database URL (got int)"),
        ({"trials": 0}, "trials: give a whole number from 1 to 1,000,000 (got 0)"),
        ({"trials": 2.5}, "trials: give a whole number from 1 to 1,000,000 (got 2.5)"),
        ({"trials": None}, "trials: give a whole number from 1 to 1,000,000 (got None)"),
    ],
)
def test_fits_own_arguments_are_one_line(kwargs: dict, expected: str, tmp_path: Path) -> None:
    args = {"study": tmp_path / "s.log", "trials": 2, **kwargs}
    with pytest.raises(SpecError) as e:
        fit("dla_tiny_digits", TINY, **args)
    assert str(e.value) == expected


def test_a_tampered_spec_is_not_read_from_disk(tmp_path: Path) -> None:
    import json
    import sqlite3

    url = f"sqlite:///{tmp_path / 's.db'}"
    fit("dla_tiny_digits", TINY, url, trials=4)
    st = optuna.load_study(study_name="dlagraph-fit", storage=url)
    t = next(t for t in st.trials if t.state.name == "COMPLETE")
    design = {**t.user_attrs["design"], "spec": "dla36"}
    with sqlite3.connect(tmp_path / "s.db") as db:
        db.execute(
            "UPDATE trial_user_attributes SET value_json = ? WHERE trial_id = ? AND key = 'design'",
            (json.dumps(design), t._trial_id),
        )
    with pytest.raises(SpecError, match=f"trial {t.number}: not a design dlagraph fit wrote"):
        fit("dla_tiny_digits", TINY, url, trials=4)


def test_a_bare_postgresql_url_takes_the_installed_driver(cluster: str) -> None:
    url = new_database(cluster).replace("postgresql+psycopg2://", "postgresql://")
    assert fit("dla_tiny_digits", TINY, url, trials=3).trials == 3


def test_a_trial_whose_worker_died_before_writing_its_id_is_failed_after_the_grace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker killed between optuna's start of its trial and its first write (its id) left a
    RUNNING trial no pid names: failed and its design queued once it is older than the grace
    period, and not before (a live worker writes its id within milliseconds)."""
    import datetime

    from dlagraph.fit import storage

    hour_ago = datetime.datetime.now() - datetime.timedelta(hours=1)
    assert 3599 < storage._age(hour_ago) < 3700
    assert 3599 < storage._age(hour_ago.astimezone(datetime.timezone.utc)) < 3700
    st = optuna.create_study(storage=storage.open_storage(optuna, tmp_path / "s.log"))
    for _ in range(2):  # two trials started, neither with a worker's id
        st.enqueue_trial({"w": 1})
        trial = st.ask({"w": optuna.distributions.IntDistribution(0, 2)})
    first = st.trials[0].datetime_start
    # the journal stamps the start itself: the first one is taken as an hour old
    monkeypatch.setattr(storage, "_age", lambda start: 3600.0 if start == first else 0.0)
    assert storage.fail_dead_workers(optuna, st) == [0]
    assert [t.state.name for t in st.trials] == ["FAIL", "RUNNING", "WAITING"]
    assert st.trials[2].params == {"w": 1} and trial.number == 1


def test_a_dead_workers_last_trial_is_run_again_though_the_study_is_full(tmp_path: Path) -> None:
    """The study is full when a worker dies in its last trial: no trial starts that would fail
    it, so the live worker (or a rerun) fails it at the end and evaluates its design."""
    from dlagraph.fit.storage import open_storage, worker_id

    path = tmp_path / "s.log"
    fit("dla_tiny_digits", TINY, path, trials=3)
    st = optuna.load_study(study_name="dlagraph-fit", storage=open_storage(optuna, path))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    trial = st.ask()  # a worker's trial, started and never finished
    trial.set_user_attr("worker", worker_id().rpartition(":")[0] + f":{dead.pid}")
    assert fit("dla_tiny_digits", TINY, path, trials=3).trials >= 3
    trials = optuna.load_study(study_name="dlagraph-fit", storage=open_storage(optuna, path)).trials
    assert trials[trial.number].state.name == "FAIL"
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == trial.number]
    assert len(retried) == 1 and retried[0].state.name in ("COMPLETE", "PRUNED")
    assert not [t for t in trials if t.state.name in ("RUNNING", "WAITING")]


def test_a_zombie_is_dead() -> None:
    """A killed worker its launcher has not reaped yet still answers signal 0."""
    from dlagraph.fit.storage import _alive

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while Path(f"/proc/{p.pid}/stat").read_bytes().rpartition(b")")[2].split()[0] != b"Z":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert not _alive(p.pid) and _alive(os.getpid())
    p.wait()


def test_a_lock_broken_while_paused_is_not_taken_from_its_new_holder(tmp_path: Path) -> None:
    """A worker paused past the lock's grace period: another broke its lock and holds one of its
    own. Woken, the first releases nothing of the other's and does not fail."""
    from dlagraph.fit.storage import _owned_lock_class

    journal = tmp_path / "s.log"
    journal.write_text("")
    link = tmp_path / "s.log.lock"
    mine = _owned_lock_class()(str(journal), grace_period=3)
    mine.acquire()
    link.unlink()  # broken by another worker, who then takes it
    os.symlink(journal, link)
    theirs = os.lstat(link)
    mine.release()
    assert link.is_symlink() and os.lstat(link).st_ino == theirs.st_ino
    link.unlink()
    mine.acquire()
    link.unlink()  # broken, and nobody holds it now
    mine.release()
    mine.acquire()  # and a lock of its own is released as before
    mine.release()
    assert not link.is_symlink()


def test_a_lock_left_pointing_nowhere_is_removed_with_a_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A study folder moved after a kill: its lock points to the old path. optuna would spin on
    it forever (it never expires a link it cannot stat)."""
    path = tmp_path / "s.log"
    fit("dla_tiny_digits", TINY, path, trials=2)
    os.symlink(tmp_path / "gone" / "s.log", tmp_path / "s.log.lock")
    capsys.readouterr()
    assert fit("dla_tiny_digits", TINY, path, trials=3).trials == 3
    err = capsys.readouterr().err
    assert "a lock left by a killed worker of a moved study, removed" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("value", ["\u00b2", "99999999999999999999", "0", "-5", "1.5", "abc"])
def test_a_test_knob_out_of_range_keeps_the_default(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dlagraph.fit.storage import _seconds

    monkeypatch.setenv("DLAGRAPH_FIT_GRACE", value)
    assert _seconds("DLAGRAPH_FIT_GRACE", 60) == 60


def test_a_trial_failed_between_its_answer_and_its_tell_is_left_and_the_search_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another worker fails this worker's trial in the moment between the objective's answer
    and optuna's tell (this one was paused, or its heartbeat starved): optuna's tell refuses it;
    the search goes on with the next trial, without a traceback."""
    import optuna.study._optimize as optimize_module

    real = optimize_module._tell_with_warning
    failed: list[int] = []

    def tell(study: Any, trial: Any, **kw: Any) -> Any:
        if not failed and kw.get("state") is None:  # an answer: failed by "another worker" first
            study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
            failed.append(trial.number)
        return real(study=study, trial=trial, **kw)

    monkeypatch.setattr(optimize_module, "_tell_with_warning", tell)
    result = fit("dla_tiny_digits", TINY, tmp_path / "s.log", trials=4)
    assert failed and result.trials >= 4


def test_an_evaluation_stopped_by_a_signal_queues_its_design(tmp_path: Path) -> None:
    """Ctrl-C (here SIGHUP, whose handler this test owns) mid-evaluation: the trial fails and its
    design is queued, so the rerun evaluates it first."""
    caught: list[int] = []
    old = signal.signal(signal.SIGHUP, lambda signum, frame: caught.append(signum))

    def stopped(spec: Any, evaluation: Any) -> float:
        os.kill(os.getpid(), signal.SIGHUP)
        evaluation.check()  # raises: the search is stopping
        return 1.0

    try:
        roomy = Budget(params=10_000_000, size=(32, 32))  # every design is evaluated
        fit("dla_tiny_digits", roomy, tmp_path / "s.log", trials=3, evaluate=stopped)
    finally:
        signal.signal(signal.SIGHUP, old)
    assert caught and set(caught) == {signal.SIGHUP}  # its own handler, after the search stopped
    st = _study(str(tmp_path / "s.log"))[0]
    failed = [t.params for t in st.trials if t.state.name == "FAIL"]
    # a queued trial holds its parameters as optuna's fixed ones until it runs
    waiting = [t.system_attrs["fixed_params"] for t in st.trials if t.state.name == "WAITING"]
    assert len(failed) == 1 and waiting == failed
