"""The examples run and reach their stated results (on real or generated data, on the CPU)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from .conftest import ROOT

torch = pytest.importorskip("torch")


def example(name: str) -> ModuleType:
    path = ROOT / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_example_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def test_shapes_dataset_is_deterministic_and_labelled() -> None:
    seg = example("train_segmentation")
    x1, y1 = seg.make_shapes(8, seed=3)
    x2, y2 = seg.make_shapes(8, seed=3)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert x1.shape == (8, 3, 64, 64) and set(y1.unique().tolist()) <= {0, 1, 2, 3}


@pytest.mark.slow
def test_segmentation_example_reaches_08_mean_iou(tmp_path: Path) -> None:
    seg = example("train_segmentation")
    assert seg.main(["--threads", "2"]) >= 0.8
