from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parent.parent

# Torch threads per test process: the cores shared among pytest-xdist's workers. Each worker
# running torch with every core (OpenMP spin-waits on cores another worker holds) made the example
# trainings 3-4x slower than alone. Processes the tests start inherit it through OMP_NUM_THREADS.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
THREADS = max(1, (os.cpu_count() or 1) // WORKERS)
os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))
SPECS = ROOT / "specs"
SPEC_PATHS = sorted(SPECS.glob("*.yaml"))

# A bounded, derandomized default keeps CI fast and reproducible; `--hypothesis-profile=thorough`
# explores much more.
settings.register_profile(
    "default",
    max_examples=25,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough", max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
# the quick run (-m "not slow") tries fewer: it is for iterating, the full run (CI's) tries 25
settings.register_profile(
    "quick", max_examples=10, derandomize=True, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)  # fmt: skip
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))  # --hypothesis-profile wins


def pytest_configure(config: pytest.Config) -> None:
    chosen = os.environ.get("HYPOTHESIS_PROFILE") or config.getoption("hypothesis_profile", None)
    if not chosen and (config.option.markexpr or "").replace(" ", "") == "notslow":
        settings.load_profile("quick")
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(THREADS)


def pytest_report_header() -> list[str]:
    """The machine, first: int8 rounding and bf16 support differ from CPU to CPU, so a failure
    must name the CPU it happened on."""
    from dlagraph.base.system import cpu_description, native_bf16

    bf16 = "native" if native_bf16() else "emulated (bf16 tests skip or expect a warning)"
    return [f"cpu: {cpu_description()}; {os.cpu_count()} cores; bf16 {bf16}"]


@pytest.fixture(autouse=True)
def _run_in_root(monkeypatch: pytest.MonkeyPatch) -> None:
    # specs and docs use paths relative to the repository root, as the README does
    monkeypatch.chdir(ROOT)


def spec_ids() -> list[str]:
    return [p.stem for p in SPEC_PATHS]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow tests first, the longest (the example trainings) leading: pytest-xdist hands tests
    out in this order, so the long ones start at once and the short ones fill in around them,
    instead of one long test starting last and running on alone."""

    def rank(item: pytest.Item) -> int:
        if item.get_closest_marker("slow") is None:
            return 3
        if "test_detection_example" in item.nodeid:  # about a third of the full run's CPU time
            return 0
        return 1 if "test_examples.py" in item.nodeid else 2

    items.sort(key=rank)  # stable: the order within each group is the collection's


@pytest.fixture
def reaped() -> Iterator[list[subprocess.Popen]]:
    """The processes a test starts: killed if still running and their pipes closed, however the
    test ends (a worker left behind would run on into later tests)."""
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait()
        for pipe in (p.stdout, p.stderr):
            if pipe is not None:
                pipe.close()
