"""`dlagraph fit` with 1, 2 and 4 workers on one PostgreSQL study: wall time and duplicate
evaluations (the goal: none).

    python benchmarks/fit_workers.py [--trials 24] [--seconds 1.0]

A PostgreSQL cluster of its own is started in /tmp (tests/postgres.py: Debian's `postgresql`
package; as root it runs as the `postgres` user) and stopped at the end. The evaluator is a
stand-in that sleeps ``--seconds`` per design (what a training does to a worker's time, without
its CPU: the measurement is of the coordination, not of two cores shared by four trainings).
Every worker runs the same command; on many machines it is the same, with the server's URL.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

SCORER = """
import time

def sleepy(spec, evaluation):
    for _ in range(10):
        time.sleep(SECONDS / 10)
        evaluation.check()
    return spec.levels[-1].channels / 1000
"""


def run(workers: int, url: str, trials: int, folder: Path) -> tuple[float, int, int]:
    """(wall seconds, designs evaluated, duplicate evaluations) of ``workers`` processes."""
    import optuna

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = ["fit", "dla_tiny_digits", "--size", "32", "--max-params", "300K", "--trials",
            str(trials), "--evaluate", "python:scorer:sleepy", "--no-plot", "--study", url]  # fmt: skip
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "dlagraph", *args, "-o", str(folder / f"w{workers}_{i}")],
            cwd=folder,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for i in range(workers)
    ]
    for p in procs:
        _, err = p.communicate()
        if p.returncode:
            raise SystemExit(err[-2000:])
    wall = time.perf_counter() - start
    st = optuna.load_study(study_name="dlagraph-fit", storage=url)
    keys = [
        t.user_attrs["spec_key"]
        for t in st.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
        if t.user_attrs["design"]["score"] is not None
    ]
    return wall, len(keys), len(keys) - len(set(keys))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=24)
    ap.add_argument("--seconds", type=float, default=1.0)
    args = ap.parse_args()
    from postgres import new_database, server

    from dlagraph.base.system import cpu_description

    folder = Path(tempfile.mkdtemp(prefix="dlagraph_fit_workers_"))
    (folder / "scorer.py").write_text(SCORER.replace("SECONDS", repr(args.seconds)))
    lines = [
        f"### `dlagraph fit --evaluate` on one PostgreSQL study: {args.trials} trials, a stand-in "
        f"evaluator sleeping {args.seconds:g} s per design ({cpu_description()}, {os.cpu_count()} cores)",
        "",
        "| workers | wall time | designs evaluated | duplicate evaluations | speed-up |",
        "|---:|---:|---:|---:|---:|",
    ]
    with server() as cluster:
        base = None
        for n in (1, 2, 4):
            wall, evaluated, duplicates = run(n, new_database(cluster), args.trials, folder)
            base = base or wall
            lines.append(
                f"| {n} | {wall:.1f} s | {evaluated} | {duplicates} | {base / wall:.2f}x |"
            )
            print(lines[-1], file=sys.stderr, flush=True)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
