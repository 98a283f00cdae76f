"""``dlagraph fit``: search for DLAs within a budget and write the Pareto front."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from ..errors import SpecError
from ..io import write_outputs
from ..spec import load_spec
from ..spec.overrides import apply_overrides, parse_sets
from .common import DEFAULT_OUTPUT, count, positive

__all__ = ["add_arguments", "run", "amount", "memory_size"]

_SI = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
_BYTES = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def amount(text: str) -> int:
    """An argparse type: a count above 0 with an optional K/M/G suffix (``1.5M``, ``600e6``)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([KMGT]?)\s*", text, re.I)
    value = float(m[1]) * _SI[m[2].upper()] if m else 0.0
    if not 1 <= value <= 1e15:
        raise argparse.ArgumentTypeError(
            f"give a number from 1 with K, M or G, e.g. 1.5M (got {text!r})"
        )
    return int(value)


def memory_size(text: str) -> int:
    """An argparse type: bytes, with B, KB/MB/GB (10^3) or KiB/MiB/GiB (2^10) (``300MB``)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMG]?I?B)\s*", text, re.I)
    value = float(m[1]) * _BYTES[m[2].upper()] if m else 0.0
    if not 1 <= value <= 2**60:
        raise argparse.ArgumentTypeError(f"give a size like 300MB or 1.5GiB (got {text!r})")
    return int(value)


def _bar(done: int, total: int, best: int | None, left: float) -> None:
    most = f", most parameters within the budget {best:,}" if best is not None else ""
    line = f"\rtrial {done}/{total}{most}, {left:.0f} s left"
    print(line.ljust(100)[:100], end="", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from ..fit import Budget, fit, load_space
    from ..fit.report import front_files, table

    if args.max_params is None and args.max_macs is None and args.max_memory is None:
        raise SpecError("give a budget: --max-params, --max-macs and/or --max-memory")
    base = load_spec(args.base)
    if args.set:
        base = load_spec(apply_overrides(base.to_dict(), parse_sets(args.set)))
    if len(args.size) > 2:
        raise SpecError(f"--size takes one side or H W, not {len(args.size)} numbers")
    size = (args.size[0], args.size[-1])
    budget = Budget(
        params=args.max_params,
        macs=args.max_macs,
        memory=args.max_memory,
        batch=args.batch,
        size=size,
    )
    out = Path(args.output or Path(DEFAULT_OUTPUT) / "fit" / base.name)
    study = args.study or out / "study.log"
    result = fit(
        base,
        budget,
        study,
        load_space(args.space),
        args.trials,
        args.seed,
        progress=_bar if sys.stderr.isatty() else None,
    )
    if sys.stderr.isatty():
        print(file=sys.stderr)
    if not result.front:
        raise SpecError(
            f"no design within the budget after {result.trials} trials; raise --trials or the budget"
        )
    files = front_files(result, base, budget, out, plot=not args.no_plot)
    write_outputs(files, force=args.force)
    print(
        f"{base.name}: {result.trials} trials, {result.feasible} within the budget, "
        f"{len(result.front)} on the Pareto front; study {result.storage}\n"
    )
    print(table(result, base, budget))
    print()
    for p in files:
        print(f"wrote {p}")
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("base", help="the base spec: a preset name or a spec file")
    p.add_argument("--max-params", type=amount, metavar="N", help="e.g. 1.5M")
    p.add_argument("--max-macs", type=amount, metavar="N", help="MACs at --size, e.g. 0.6G")
    p.add_argument(
        "--max-memory",
        type=memory_size,
        metavar="BYTES",
        help="inference activation memory at --batch, e.g. 300MB",
    )
    p.add_argument(
        "--size",
        type=positive,
        nargs="+",
        default=[224],
        metavar="S",
        help="input side (or H W) for MACs and memory (default 224)",
    )
    p.add_argument(
        "--batch",
        type=positive,
        default=1,
        metavar="N",
        help="batch of the memory budget (default 1)",
    )
    p.add_argument(
        "--trials",
        type=positive,
        default=300,
        metavar="N",
        help="trials the study should hold (a rerun continues to N; default 300)",
    )
    p.add_argument(
        "--study",
        metavar="PATH_OR_URL",
        help="an optuna journal file or a database URL that several workers share "
        "(default: DIR/study.log)",
    )
    p.add_argument("--seed", type=count, default=0, help="sampler seed (default 0)")
    p.add_argument("--space", metavar="FILE", help="a YAML search space (docs/fit.md)")
    p.add_argument(
        "--set",
        action="append",
        metavar="FIELD=VALUE",
        help="change the base spec first, as for build (repeatable)",
    )
    p.add_argument(
        "-o",
        "--output",
        metavar="DIR",
        help=f"output folder (default: {DEFAULT_OUTPUT}/fit/<base>/)",
    )
    p.add_argument("--no-plot", action="store_true", help="write no front.png / front.svg")
    p.add_argument("--force", action="store_true", help="overwrite files dlagraph did not write")
