"""The benchmark script runs in its CI form and prints ratios (timings are not asserted)."""

from __future__ import annotations

import re
from types import ModuleType

import pytest

from .conftest import ROOT
from .helpers import import_file

torch = pytest.importorskip("torch")


def bench_module() -> ModuleType:
    return import_file(ROOT / "benchmarks" / "bench.py", "_bench")


# the quick benchmark itself runs from docs/benchmarks.md, whose shown output checks its tables


@pytest.mark.slow  # trains or benchmarks: see the README's test commands
def test_accelerator_path_runs_on_cpu() -> None:
    """The GPU tables' code, run on the CPU with tiny sizes, so it is exercised in CI."""
    lines = bench_module().bench_gpu(["dla36"], 1, torch.device("cpu"), (2, 2), 32, (False,))
    assert [line.split(" | ")[1] for line in lines[4:]] == [
        "infer",
        "infer, generated + fold_bn",
        "train",
    ]


@pytest.mark.slow  # benchmarks: see the README's test commands
def test_centernet_benchmark_runs_on_cpu() -> None:
    lines = bench_module().bench_centernet(torch.device("cpu"), 1, 1, size=64)
    assert [line.split(" | ")[0] for line in lines[4:7]] == ["| reference", "| interp", "| gen"]
    assert re.search(r"deform_conv2d`: \d+%", lines[-1])
