"""What the subcommands share: spec arguments, the default output folder, timeouts."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Sequence
from pathlib import Path

from ..base.progress import Steps as Steps
from ..base.progress import steps_on_a_terminal as steps_on_a_terminal
from ..views.render import DIAGRAM_TIMEOUT

__all__ = ["DEFAULT_OUTPUT", "spec_paths", "add_timeout_option", "count", "positive", "seconds"]

DEFAULT_OUTPUT = "dlagraph-out"  # not build/: `pip wheel .` and setuptools write there


def spec_paths(items: Sequence[str]) -> list[Path]:
    """Spec files, with folders expanded to their ``*.yaml`` / ``*.yml`` files."""
    out: list[Path] = []
    for item in items:
        p = Path(item)
        out += sorted(p.glob("*.yaml")) + sorted(p.glob("*.yml")) if p.is_dir() else [p]
    return out


def count(text: str) -> int:
    """An argparse type: a whole number from 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number (got {text!r})") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more (got {value})")
    return value


def seed(text: str) -> int:
    """An argparse type: a random seed, 0 to 2**32 - 1 (what numpy takes)."""
    value = count(text)
    if value >= 2**32:
        raise argparse.ArgumentTypeError(f"must be below 2**32 = 4,294,967,296 (got {value:,})")
    return value


def positive(text: str) -> int:
    """An argparse type: a whole number from 1 to a million (a batch, a number of trials)."""
    value = count(text)
    if not 1 <= value <= 10**6:
        raise argparse.ArgumentTypeError(f"must be 1 to 1,000,000 (got {value})")
    return value


def budget(text: str) -> float:
    """An argparse type: a drop of top-1, a fraction from 0 to 1 (``0.005``: half a point)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"give a number such as 0.005 (got {text[:40]!r})"
        ) from None
    if not (math.isfinite(value) and 0 <= value <= 1):
        raise argparse.ArgumentTypeError(
            f"must be a fraction from 0 to 1, 0.01 for one point of top-1 (got {text[:40]!r})"
        )
    return value + 0.0  # (-0 becomes 0)


def image_count(text: str) -> int:
    """An argparse type: a number of images, 1 to 100,000."""
    value = count(text)
    if not 1 <= value <= 100_000:
        raise argparse.ArgumentTypeError(f"must be 1 to 100,000 (got {value})")
    return value


def cpu_threads(text: str) -> int:
    """An argparse type: threads, 1 to this machine's CPUs (more only oversubscribes them)."""
    value = count(text)
    most = os.cpu_count() or 1
    if not 1 <= value <= most:
        raise argparse.ArgumentTypeError(f"must be 1 to {most}, this machine's CPUs (got {value})")
    return value


def seconds(text: str) -> float:
    """An argparse type: a time limit in seconds above 0; ``inf`` means no limit."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds (got {text!r})") from None
    if not value > 0:  # NaN, 0 and negatives
        raise argparse.ArgumentTypeError(
            f"must be more than 0 seconds, or inf for no limit (got {text!r})"
        )
    return value


def add_timeout_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--diagram-timeout",
        type=seconds,
        default=DIAGRAM_TIMEOUT,
        metavar="S",
        help=f"seconds Graphviz may take to render (default {DIAGRAM_TIMEOUT:g}; inf: no limit)",
    )
