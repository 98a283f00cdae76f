from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parent.parent
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
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))  # --hypothesis-profile wins


@pytest.fixture(autouse=True)
def _run_in_root(monkeypatch: pytest.MonkeyPatch) -> None:
    # specs and docs use paths relative to the repository root, as the README does
    monkeypatch.chdir(ROOT)


def spec_ids() -> list[str]:
    return [p.stem for p in SPEC_PATHS]
