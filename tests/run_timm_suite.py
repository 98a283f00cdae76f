"""Run timm's own model tests (``tests/test_models.py`` of the installed timm's sdist) against
dlagraph's presets, registered as ``dlagraph_<preset>``.

    python tests/run_timm_suite.py [--keep DIR] [pytest options]

It downloads the sdist of the installed timm version from the package index (``pip download
--no-binary :all: --no-deps``), takes its ``tests/`` folder, adds a conftest that calls
``dlagraph.register_timm_models()`` before collection, and runs ``test_models.py -k dlagraph_``
against the installed timm. Exit code: pytest's. Skips of tests that need pretrained weights are
timm's own (``test_model_inference`` lists only timm's test models).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

CONFTEST = '''"""Registers dlagraph's presets with timm before timm's tests are collected."""
import dlagraph

dlagraph.register_timm_models()
'''


def fetch_tests(dest: Path) -> Path:
    """The ``tests/`` folder of the installed timm version's sdist, under ``dest``."""
    import timm

    version = timm.__version__
    suite = dest / "suite"
    if (suite / "tests" / "test_models.py").exists():  # unpacked before (--keep)
        return suite
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-binary", ":all:", "--no-deps",
         f"timm=={version}", "-d", str(dest)],
        check=True,
    )  # fmt: skip
    sdist = next(dest.glob(f"timm-{version}.tar.gz"))
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(f"timm-{version}/tests/")]
        tar.extractall(dest, members=members, filter="data")
    suite.mkdir()
    (dest / f"timm-{version}" / "tests").rename(suite / "tests")
    (suite / "conftest.py").write_text(CONFTEST)
    (suite / "pytest.ini").write_text(
        "[pytest]\nmarkers =\n    base\n    forward\n    backward\n    cfg\n    cfg_nonstd\n"
        "    torchscript\n    features\n    fxforward\n    fxbackward\n"
    )
    return suite


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keep", help="download and unpack here (kept) instead of a temp folder")
    ap.add_argument(
        "--models",
        default="dlagraph_",
        help="pytest -k expression over the registered models (default: all of dlagraph's)",
    )
    args, rest = ap.parse_known_args(argv)
    with tempfile.TemporaryDirectory(prefix="timm_suite_") as tmp:
        dest = Path(args.keep or tmp)
        dest.mkdir(parents=True, exist_ok=True)
        suite = fetch_tests(dest)
        cmd = [sys.executable, "-m", "pytest", str(suite / "tests" / "test_models.py"),
               "-k", args.models, "-q", "-p", "no:cacheprovider", "--rootdir", str(suite),
               "-c", str(suite / "pytest.ini"), *rest]  # fmt: skip
        return subprocess.run(cmd, cwd=suite).returncode


if __name__ == "__main__":
    sys.exit(main())
