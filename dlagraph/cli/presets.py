"""``dlagraph presets``: the packaged presets (or a folder's specs) with their parameter counts."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..base.errors import DlagraphError
from ..ir.analysis import summarize
from ..spec import load_spec, presets
from .common import spec_paths

__all__ = ["add_arguments", "run"]


def run(args: argparse.Namespace) -> int:
    if args.dir is None:  # the presets that ship with dlagraph, usable by name anywhere
        items = list(presets().items())
        print(f"presets (give a name to build, draw or codegen; files in {_folder(items)}):")
    else:
        folder = Path(args.dir)
        if not folder.is_dir():
            raise DlagraphError(f"{folder}: no such folder of specs")
        items = [(p.name, p) for p in spec_paths([args.dir])]
    # timm's name is a name of its own here: `dlagraph build dla34` builds the preset dla36
    rows = [
        ("preset" if args.dir is None else "spec", "timm name", "paper name", "reference", "params")
    ]
    bad: list[str] = []
    for name, p in items:
        try:
            spec = load_spec(p)
        except DlagraphError as e:  # a bad file of a folder: one line, and the others still listed
            problems = str(e).splitlines()
            more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
            bad.append(f"{problems[0]}{more}")
            continue
        ref = spec.reference or "-"
        timm = ref.split(":", 1)[1] if ref.startswith("timm:") else "-"
        rows.append((name, timm, spec.paper_name or "-", ref, f"{summarize(spec).params:,}"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        print(
            "  ".join(
                c.rjust(w) if i == 4 else c.ljust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            ).rstrip()
        )
    for line in bad:
        print(f"error: {line}", file=sys.stderr)
    return 2 if bad else 0


def _folder(items: list[tuple[str, Path]]) -> str:
    return str(items[0][1].parent) if items else "-"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "dir",
        nargs="?",
        default=None,
        help="a folder of specs to list instead of the packaged presets",
    )
