"""Every code block of the README and of docs/ runs, and shows what it prints.

The conventions (docs/development.md, "Documentation"): a ``console`` block is shell commands
(``$ ...``), each followed by the output it must print (``…`` alone on a line stands for any lines,
inside a line for any text; a command whose output shows ``error:`` lines must exit with 2, any
other with 0). A ``python`` block runs, and a ``pycon`` block runs as a doctest, in one namespace
per page. A ``yaml`` block is a spec (or a part of one, checked on top of ``dla36``). An HTML
comment right before a block can say ``<!-- doc: file NAME -->`` (the block is that file of the
page's workspace), ``<!-- doc: slow -->`` (it runs in the full test run only) or
``<!-- doc: not run: REASON -->`` (it installs something: never run by tests). Each page runs in
a workspace of its own, a temporary folder where ``specs``, ``examples`` and ``benchmarks`` are the
repository's (read-only use: nothing a page does writes into the checkout).
"""

from __future__ import annotations

import doctest
import os
import re
import subprocess
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(?P<info>[\w-]*)[^\n]*\n(?P<body>.*?)^```[ \t]*$", re.M | re.S)
DIRECTIVE = re.compile(r"<!--\s*doc:\s*(?P<what>.*?)\s*-->\s*$")
LINKED = ("specs", "examples", "benchmarks")  # what a page's workspace sees of the repository
ERROR = re.compile(r"^(?:[\w .-]+: )?error: ")  # dlagraph's, or argparse's `dlagraph x: error:`
# the only reasons not to run a block: it installs, builds in the checkout, or is this test suite
NOT_RUN_OK = re.compile(r"^(installs |builds in the checkout |it runs this test suite)")


@dataclass
class Block:
    page: Path
    line: int
    lang: str
    body: str
    directive: str  # "", "slow", "file NAME", "not run: ..."

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    text = page.read_text()
    out = []
    for m in FENCE.finditer(text):
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        d = DIRECTIVE.search(before)
        out.append(Block(page, text.count("\n", 0, m.start()) + 1, m.group("info"),
                         m.group("body"), d.group("what") if d else ""))  # fmt: skip
    return out


def expected_pattern(lines: list[str]) -> re.Pattern[str]:
    """The shown output as a pattern: ``…`` alone matches any lines, inside a line any text."""
    parts = []
    for line in lines:
        if line.strip() == "…":
            parts.append(r"(?:[^\n]*\n)*?")
        else:
            parts.append(".*?".join(map(re.escape, line.rstrip().split("…"))) + r"[ \t]*\n")
    return re.compile("".join(parts), re.S)


def run_console(block: Block, cwd: Path, env: dict[str, str]) -> None:
    commands: list[tuple[str, list[str]]] = []
    for line in block.body.splitlines():
        if line.startswith("$ "):
            commands.append((line[2:], []))
        elif commands:
            commands[-1][1].append(line)
        elif line.strip():
            raise AssertionError(f"{block.where}: output before any `$ ` command: {line!r}")
    assert commands, f"{block.where}: a console block without `$ ` commands"
    for cmd, shown in commands:
        r = subprocess.run(["bash", "-c", cmd], cwd=cwd, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=900)  # fmt: skip
        out = "\n".join(line.rstrip() for line in r.stdout.splitlines()) + "\n"
        want = 2 if any(ERROR.match(line) for line in shown) else 0
        assert r.returncode == want, f"{block.where}: `{cmd}` exited {r.returncode}:\n{out[-3000:]}"
        if shown:
            assert expected_pattern(shown).fullmatch(out), (
                f"{block.where}: `{cmd}` printed\n{out[-4000:]}\nwhich the page shows as\n"
                + "\n".join(shown)
            )


def run_yaml(block: Block) -> None:
    import dlagraph

    data = yaml.safe_load(block.body)
    assert isinstance(data, dict), f"{block.where}: not a mapping"
    if "name" in data and "levels" in data:
        dlagraph.load_spec(data)
        return
    fields = set(dlagraph.Spec.model_fields)
    assert set(data) - {k for k in data if k.startswith("x-")} <= fields, block.where
    base = dlagraph.load_spec("dla36").to_dict()
    dlagraph.load_spec({**base, **{k: v for k, v in data.items() if k in fields}})


def run_page(page: Path, workspace: Path, slow: bool) -> int:
    """Run the page's blocks in order (the slow ones too when ``slow``); return how many ran."""
    for name in LINKED:
        (workspace / name).symlink_to(ROOT / name)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(ROOT), "COLUMNS": "100"}  # fmt: skip
    # the page's Python is a real module with a file, so that `inspect` finds the source of a
    # class it defines (a registered block is copied into generated code)
    module = types.ModuleType(f"_doc_page_{page.stem.replace('-', '_')}")
    module.__file__ = str(workspace / f"{module.__name__}.py")
    sys.modules[module.__name__] = module
    namespace: dict[str, Any] = module.__dict__
    source = Path(module.__file__)
    ran = 0
    old, path = Path.cwd(), list(sys.path)
    os.chdir(workspace)
    try:
        for block in blocks(page):
            d = block.directive
            if d.startswith("not run"):
                continue
            if d.startswith("file "):
                (workspace / d[5:].strip()).write_text(block.body)
                continue
            if d == "slow" and not slow:
                continue  # the full run's: `slow` runs a page's every block, in order
            ran += 1
            if block.lang == "console":
                run_console(block, workspace, env)
            elif block.lang == "python":
                with source.open("a") as f:
                    f.write(block.body + "\n")
                exec(compile(block.body, str(source), "exec"), namespace)  # noqa: S102
            elif block.lang == "pycon":
                test = doctest.DocTestParser().get_doctest(block.body, namespace, block.where,
                                                           str(page), block.line)  # fmt: skip
                runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS
                                               | doctest.NORMALIZE_WHITESPACE)  # fmt: skip
                report: list[str] = []
                runner.run(test, out=report.append, clear_globs=False)
                namespace.update(test.globs)  # (a DocTest works on a copy): the page goes on
                assert runner.failures == 0, f"{block.where}: the doctest fails:\n{''.join(report)}"
            elif block.lang == "yaml":
                run_yaml(block)
            else:
                ran -= 1
    finally:  # the page leaves the test process as it found it
        os.chdir(old)
        sys.path[:] = path
        for name, mod in list(sys.modules.items()):
            if str(getattr(mod, "__file__", None) or "").startswith(str(workspace)):
                del sys.modules[name]
    return ran


# pages whose blocks take over 10 s together (timm checkpoints of three networks; fit's searches):
# the full run only, so the quick run stays quick
LONG_PAGES = {"checkpoints.md", "fit.md"}


@pytest.mark.parametrize(
    "page",
    [pytest.param(p, marks=[pytest.mark.slow] * (p.name in LONG_PAGES)) for p in PAGES],
    ids=lambda p: p.name,
)
def test_every_block_of_the_page_runs_and_prints_what_it_shows(page: Path, tmp_path: Path) -> None:
    run_page(page, tmp_path, slow=False)


@pytest.mark.slow  # example trainings and benchmarks the pages show
@pytest.mark.parametrize(
    "page", [p for p in PAGES if any(b.directive == "slow" for b in blocks(p))],
    ids=lambda p: p.name,
)  # fmt: skip
def test_the_slow_blocks_of_the_page_run_too(page: Path, tmp_path: Path) -> None:
    assert run_page(page, tmp_path, slow=True) > 0


def test_every_block_is_code_that_runs_or_says_why_not() -> None:
    """No block escapes the runs above: each is console, python, pycon or yaml (or ``text``
    holding no command), and one that is not run says so and why (installs only)."""
    for page in PAGES:
        for b in blocks(page):
            assert b.lang in ("console", "python", "pycon", "yaml", "text", "diff"), (
                f"{b.where}: a ```{b.lang} block; use console, python, pycon or yaml"
            )
            if b.lang == "text":
                assert not re.search(r"^\$ ", b.body, re.M), f"{b.where}: commands in a text block"
            if b.directive.startswith("not run"):
                reason = b.directive.removeprefix("not run").lstrip(": ")
                assert NOT_RUN_OK.match(reason), f"{b.where}: not run because {reason!r}"


def test_the_readme_is_a_front_page() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 220, f"README.md has {len(lines)} lines; the guide belongs in docs/"
    first_screen = "\n".join(lines[:40])
    assert 'pip install -e ".[dev]"' in first_screen and "python -m pytest" in first_screen
    for link in re.findall(r"\]\((docs/[^)#]+)", "\n".join(lines)):
        assert (ROOT / link).exists(), link
