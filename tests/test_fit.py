"""dlagraph fit: the front is exact and non-dominated, deterministic, resumable after Ctrl-C,
shared by workers without duplicates, and bad input gets one line each."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import dlagraph
from dlagraph.cli import main
from dlagraph.fit import Budget, fit, load_space

from .test_cli import run

optuna = pytest.importorskip("optuna")
pytest.importorskip("matplotlib")

BUDGET = Budget(params=1_310_000)  # DLA-48-B-s's 1.31M parameters (paper Table 3), 224x224


def tiny(*args: str, budget: str = "300K") -> list[str]:
    """``dlagraph fit`` of the digits network at 32x32 (fast), with ``args``."""
    return ["fit", "dla_tiny_digits", "--size", "32", "--max-params", budget, *args]


def study(path: Path) -> optuna.Study:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return optuna.load_study(
        study_name="dlagraph-fit", storage=JournalStorage(JournalFileBackend(str(path)))
    )


def test_the_front_is_within_budget_exact_and_non_dominated(tmp_path: Path) -> None:
    result = fit("dla48_b_s", BUDGET, tmp_path / "s.log", trials=60)
    assert result.trials == 60 and result.front
    for m in result.front:
        s = dlagraph.summarize(m.spec)  # costs recomputed from the written spec
        assert (s.params, s.macs) == (m.params, m.macs) and m.params <= BUDGET.params
        assert dlagraph.activation_memory(m.spec).inference_peak == m.memory
    for a in result.front:  # no member is dominated by another feasible design
        for p, mac, mem, ok in result.points:
            if ok and (p, mac, mem) != (a.params, a.macs, a.memory):
                assert not (p >= a.params and mac <= a.macs and mem <= a.memory)
    with torch.device("meta"):  # and the parameter count is torch's
        model = dlagraph.build_module(result.front[-1].spec)
    assert sum(p.numel() for p in model.parameters()) == result.front[-1].params


@pytest.mark.slow  # two searches and their plots: about 10 s
def test_the_same_seed_gives_the_same_bytes(tmp_path: Path) -> None:
    outs = []
    for d in ("a", "b"):
        r = run(*tiny("--trials", "20", "-o", str(tmp_path / d)))
        assert r.returncode == 0, r.stderr
        outs.append(
            {
                p.relative_to(tmp_path / d): p.read_bytes()
                for p in (tmp_path / d).rglob("*")
                if p.is_file() and p.name != "study.log"
            }
        )
    assert outs[0] == outs[1] and Path("front.svg") in outs[0] and Path("front.md") in outs[0]
    yaml_files = [p for p in outs[0] if p.suffix == ".yaml"]
    built = run(
        "build", str(tmp_path / "a" / yaml_files[0]), "--no-diagram", "-o", str(tmp_path / "built")
    )
    assert built.returncode == 0, built.stderr


@pytest.mark.slow  # a search interrupted, then resumed: about 10 s
def test_interrupted_fit_resumes_where_it_stopped(
    tmp_path: Path, reaped: list[subprocess.Popen]
) -> None:
    args = [
        sys.executable,
        "-m",
        "dlagraph",
        *tiny("--trials", "100000", "--no-plot", "-o", str(tmp_path)),
    ]
    proc = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    reaped.append(proc)
    log = tmp_path / "study.log"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not log.exists() or log.stat().st_size < 8_000):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err
    done = len(study(log).get_trials(states=(optuna.trial.TrialState.COMPLETE,)))
    assert done > 0
    again = run(*tiny("--trials", str(done + 10), "--no-plot", "-o", str(tmp_path)))
    assert again.returncode == 0, again.stderr
    finished = study(log).get_trials(
        states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    )
    assert done + 10 <= len(finished) <= done + 11  # the interrupted trial is not counted


@pytest.mark.slow  # two worker processes: about 10 s
def test_two_workers_share_one_study_without_duplicates(
    tmp_path: Path, reaped: list[subprocess.Popen]
) -> None:
    log = tmp_path / "shared.log"
    args = tiny("--trials", "30", "--no-plot", "--study", str(log))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "dlagraph", *args, "-o", str(tmp_path / w)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for w in ("a", "b")
    ]
    reaped.extend(workers)
    for w in workers:
        _, err = w.communicate(timeout=120)
        assert w.returncode == 0, err
    trials = study(log).get_trials()
    finished = [t for t in trials if t.state.is_finished()]
    assert 30 <= len(finished) <= 31  # the last two may finish together
    assert len({t.number for t in trials}) == len(trials)
    keys = [t.user_attrs["spec_key"] for t in finished if t.state.name == "COMPLETE"]
    assert len(keys) == len(set(keys))  # no network evaluated twice


def test_bad_input_is_one_line_each(tmp_path: Path) -> None:
    r = run("fit", "dla36", "--max-params", "10K", "-o", str(tmp_path / "x"))
    assert r.returncode == 2 and not (tmp_path / "x").exists()
    assert r.stderr.startswith("error: nothing in the search space fits the budget: its smallest")
    assert len(r.stderr.strip().splitlines()) == 1
    space = tmp_path / "space.yaml"
    for text, want in (
        ("widht: [0.5, 1]\n", ["space.widht: unknown key"]),
        (
            "width: [2, 1]\ndepth: [0, 3]\nblocks: [nope]\n",
            [
                "space.width: give [min, max]",
                "space.depth: give [min, max]",
                "space.blocks: 'nope'",
            ],
        ),
    ):
        space.write_text(text)
        r = run(
            "fit", "dla36", "--max-params", "1M", "--space", str(space), "-o", str(tmp_path / "y")
        )
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and "Traceback" not in r.stderr and len(lines) == len(want)
        assert all(w in line for w, line in zip(want, lines, strict=True)), lines
    for bad in (["--max-params", "lots"], ["--max-memory", "3 apples"], ["--trials", "0"], []):
        r = run("fit", "dla36", *bad, "-o", str(tmp_path / "z"))
        last = r.stderr.strip().splitlines()[-1]  # argparse's usage, then one line of error
        assert r.returncode == 2 and last.startswith(("dlagraph fit: error:", "error:")), r.stderr
        assert "Traceback" not in r.stderr and not (tmp_path / "z").exists()
    first = run(*tiny("--trials", "20", "--no-plot", "-o", str(tmp_path / "s")))
    assert first.returncode == 0, first.stderr
    other = run(*tiny("--trials", "20", "--no-plot", "-o", str(tmp_path / "s"), budget="250K"))
    assert (
        other.returncode == 2
        and "made for another base spec, search space, budget or" in other.stderr
    )


def test_the_space_is_a_model_with_defaults() -> None:
    assert load_space(None) == load_space({})
    assert load_space({"width": [0.5, 0.5], "blocks": ["basic"]}).blocks == ("basic",)


def test_without_the_fit_extra_the_error_names_it(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['optuna'] = None\n"  # as if it were not installed
        "from dlagraph.cli import main\n"
        "sys.exit(main(['fit', 'dla36', '--max-params', '1M', '-o', sys.argv[1]]))\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "o")], capture_output=True, text=True
    )
    assert r.returncode == 2 and not (tmp_path / "o").exists()
    assert r.stderr.strip() == (
        "error: dlagraph fit needs optuna and matplotlib: pip install 'dlagraph[fit]'"
    )


def test_hostile_sizes_studies_and_space_files_are_one_line_each(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.log"
    garbage.write_text("not a journal\n")
    fifo = tmp_path / "space.fifo"
    os.mkfifo(fifo)
    huge = tmp_path / "huge.yaml"
    huge.write_text("width: [0.5, 1]\n" + "#" * 2_000_000)
    cases = [
        (tiny("--size", "33", "-o", str(tmp_path / "a")), "input size 33x33"),
        (
            tiny("--size", "32", "32", "32", "-o", str(tmp_path / "a")),
            "--size takes one side or H W",
        ),
        (tiny("--study", str(garbage), "-o", str(tmp_path / "a")), "not an optuna study"),
        (
            tiny("--study", str(tmp_path), "-o", str(tmp_path / "a")),
            "a folder; give a journal file path or a database URL",
        ),
        (tiny("--space", str(fifo), "-o", str(tmp_path / "a")), "not a regular file"),
        (tiny("--space", str(huge), "-o", str(tmp_path / "a")), "bytes"),
        (tiny("--space", str(tmp_path), "-o", str(tmp_path / "a")), "folder"),
    ]
    for args, want in cases:
        r = subprocess.run(
            [sys.executable, "-m", "dlagraph", *args], capture_output=True, text=True, timeout=60
        )
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and want in lines[0], (args, r.stderr)
        assert not (tmp_path / "a").exists()


@pytest.mark.parametrize(
    "space, want",
    [
        ({"width_step": 1e-300}, "space.width_step: must be at least 0.001"),
        ({"width_step": 0.3}, "space.width: 0.25 to 1.5 is not a whole number of width_step 0.3 "
                              "steps; give [0.25, 1.45]"),
    ],
)  # fmt: skip
def test_width_steps_are_checked_in_dlagraphs_words(space: dict, want: str) -> None:
    with pytest.raises(dlagraph.SpecError) as e:
        load_space(space)
    assert len(str(e.value).splitlines()) == 1 and want in str(e.value), str(e.value)
    assert load_space({"width": [0.5, 0.5], "width_step": 0.3}).width == (0.5, 0.5)  # no range


@pytest.mark.slow  # whole CLI processes or int8 conversions: over the quick run's share
def test_a_rerun_removes_the_designs_no_longer_on_its_front(tmp_path: Path) -> None:
    out = tmp_path / "o"
    first = run(
        *tiny("--trials", "30", "--no-plot", "--study", str(tmp_path / "a.log"), "-o", str(out))
    )
    assert first.returncode == 0, first.stderr
    stale = out / "front" / "dla_tiny_digits_t9999.yaml"  # as an earlier run would have left it
    stale.write_text((next((out / "front").glob("*.yaml"))).read_text())
    mine = out / "front" / "notes.yaml"  # the user's own file is never removed
    mine.write_text("mine: true\n")
    again = run(
        *tiny("--trials", "30", "--no-plot", "--study", str(tmp_path / "b.log"), "-o", str(out))
    )
    assert again.returncode == 0, again.stderr
    assert not stale.exists() and mine.read_text() == "mine: true\n"
    written = {p.name for p in (out / "front").glob("*.yaml")} - {"notes.yaml"}
    assert written == {
        line.split("/")[-1] for line in again.stdout.split() if line.endswith(".yaml")
    }


def test_a_stray_module_in_the_current_folder_does_not_shadow_an_evaluators_imports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dlagraph.fit.evaluators import resolve_evaluator

    (tmp_path / "json.py").write_text("raise RuntimeError('the stray json.py ran')\n")
    (tmp_path / "my_eval.py").write_text(
        "import json\n\ndef score(spec, evaluation):\n    return 1.0\n"
    )
    (tmp_path / "needs_dep.py").write_text("import not_installed_dep\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "json", raising=False)
    path = list(sys.path)
    assert resolve_evaluator("python:my_eval:score")(None, None) == 1.0
    assert sys.path == path  # the folder was on the path for that import only
    with pytest.raises(dlagraph.DlagraphError) as e:
        resolve_evaluator("python:needs_dep:score")
    assert "it imports 'not_installed_dep', which does not import" in str(e.value)


@pytest.mark.slow  # whole CLI processes or int8 conversions: over the quick run's share
def test_a_rerun_keeps_a_users_copy_of_a_design(tmp_path: Path) -> None:
    out = tmp_path / "o"
    first = run(
        *tiny("--trials", "20", "--no-plot", "--study", str(tmp_path / "a.log"), "-o", str(out))
    )
    assert first.returncode == 0, first.stderr
    mine = out / "front" / "my_tuned.yaml"  # a copy, marker and all, under the user's own name
    mine.write_text(next((out / "front").glob("*.yaml")).read_text())
    again = run(
        *tiny("--trials", "20", "--no-plot", "--study", str(tmp_path / "b.log"), "-o", str(out))
    )
    assert again.returncode == 0, again.stderr
    assert mine.is_file()


def test_the_spec_s_own_input_size_is_the_search_s(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --size, a base with an ``input_size`` is searched at it (the digits network at
    32x32, not 224x224), and every design written says the size it was costed at; with --size,
    the designs carry that size."""
    args = ["fit", "dla_tiny_digits", "--max-params", "300K", "--trials", "8", "--no-plot"]
    assert main([*args, "-o", str(tmp_path / "a")]) == 0
    front = sorted((tmp_path / "a" / "front").glob("*.yaml"))
    assert front and "at 32x32" in (tmp_path / "a" / "front.md").read_text()
    for p in front:
        spec = dlagraph.load_spec(p)
        assert spec.input_size == (32, 32) and "at 32x32" in p.read_text().splitlines()[0]
    assert main([*args, "--size", "64", "-o", str(tmp_path / "b")]) == 0
    for p in (tmp_path / "b" / "front").glob("*.yaml"):
        assert dlagraph.load_spec(p).input_size == (64, 64)
    capsys.readouterr()
