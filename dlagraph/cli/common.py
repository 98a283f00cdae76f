"""What the subcommands share: spec arguments, the default output folder, timeouts."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from ..backends.render import DIAGRAM_TIMEOUT

__all__ = ["DEFAULT_OUTPUT", "spec_paths", "add_timeout_option"]

DEFAULT_OUTPUT = "dlagraph-out"  # not build/: `pip wheel .` and setuptools write there


def spec_paths(items: Sequence[str]) -> list[Path]:
    """Spec files, with folders expanded to their ``*.yaml`` / ``*.yml`` files."""
    out: list[Path] = []
    for item in items:
        p = Path(item)
        out += sorted(p.glob("*.yaml")) + sorted(p.glob("*.yml")) if p.is_dir() else [p]
    return out


def add_timeout_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--diagram-timeout",
        type=float,
        default=DIAGRAM_TIMEOUT,
        metavar="S",
        help=f"seconds Graphviz may take to render (default {DIAGRAM_TIMEOUT:g})",
    )
