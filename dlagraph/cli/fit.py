"""``dlagraph fit``: search for DLAs within a budget and write the Pareto front."""

from __future__ import annotations

import argparse
import re
import sys
from functools import partial
from pathlib import Path
from typing import Any

from ..base.errors import SpecError
from ..base.io import write_outputs
from ..spec import load_spec
from ..spec.overrides import apply_overrides, parse_sets
from .common import DEFAULT_OUTPUT, cpu_threads, positive, seed

__all__ = ["add_arguments", "run", "amount", "memory_size", "duration"]

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


def duration(text: str) -> float:
    """An argparse type: seconds, with ms, s or us (``20ms``, ``0.5s``)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(us|ms|s)\s*", text, re.I)
    value = float(m[1]) * {"us": 1e-6, "ms": 1e-3, "s": 1.0}[m[2].lower()] if m else 0.0
    if not 1e-6 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"give a time like 20ms or 0.5s (got {text!r})")
    return value


def _bar(done: int, total: int, best: float | None, left: float, scored: bool = False) -> None:
    most = ""
    if best is not None:
        most = f", best score {best:.4f}" if scored else f", most parameters in budget {best:,.0f}"
    line = f"\rtrial {done}/{total}{most}, {left:.0f} s left"
    print(line.ljust(100)[:100], end="", file=sys.stderr, flush=True)


def _evaluating(trial: int, step: int | None, score: float | None, total: int) -> None:
    """The bar's line while a design trains (an evaluation may take minutes)."""
    what = "training" if step is None else f"training, step {step}: score {score:.4f}"
    line = f"\rtrial {trial + 1}/{total}: evaluating a design within the budget ({what})"
    print(line.ljust(100)[:100], end="", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from ..fit import Budget, fit, load_space
    from ..fit.report import front_files, table

    if args.max_params is None and args.max_macs is None and args.max_memory is None:
        raise SpecError("give a budget: --max-params, --max-macs and/or --max-memory")
    base = load_spec(args.base)
    if args.set:
        base = load_spec(apply_overrides(base.to_dict(), parse_sets(args.set)))
    evaluate = None
    if args.epochs is not None and args.evaluate != "digits":
        raise SpecError("--epochs is for --evaluate digits")
    if args.evaluate:
        from ..fit.evaluators import digits_spec, resolve_evaluator

        evaluate = resolve_evaluator(args.evaluate, args.epochs or 8)
        if args.evaluate == "digits":  # the data's channels and classes
            base = digits_spec(base)
    own = list(base.input_size) if base.input_size else None  # the spec's own size
    sides = args.size or (own if own and args.evaluate != "digits" else None)
    sides = sides or [32 if args.evaluate == "digits" else 224]
    if len(sides) > 2:
        raise SpecError(f"--size takes one side or H W, not {len(sides)} numbers")
    size = (sides[0], sides[-1])
    timing = _timing(args, size)
    budget = Budget(
        params=args.max_params,
        macs=args.max_macs,
        memory=args.max_memory,
        batch=args.batch,
        size=size,
    )
    out = Path(args.output or Path(DEFAULT_OUTPUT) / "fit" / base.name)
    study = args.study or out / "study.log"
    tty = sys.stderr.isatty()
    try:
        result = fit(
            base,
            budget,
            study,
            load_space(args.space),
            args.trials,
            args.seed,
            progress=partial(_bar, scored=evaluate is not None) if tty else None,
            evaluate=evaluate,
            evaluating=partial(_evaluating, total=args.trials) if tty else None,
        )
    finally:  # the progress line ends, also when Ctrl-C or SIGTERM ends the search
        if tty:
            print(file=sys.stderr, flush=True)
    if result.front and timing is not None:
        try:
            result = _measure(result, timing, out, args.max_latency)
        except BaseException:
            if tty:  # a "preparing design" line left open
                print(file=sys.stderr, flush=True)
            raise
    if not result.front:
        what = "the budget" + (" and --max-latency" if args.max_latency else "")
        raise SpecError(
            f"no design within {what} after {result.trials} trials; raise --trials or the budget"
        )
    files = front_files(result, base, budget, out, plot=not args.no_plot)
    # an earlier run's designs that are no longer on the front go, in the same write (only
    # files dlagraph wrote: write_outputs checks each carries its marker)
    folder = out / "front"
    # only files named as fit names its designs (a user's own copy, marker and all, stays)
    design = re.compile(rf"{re.escape(base.name)}_t\d+\.yaml")
    stale = (
        sorted(p for p in folder.glob("*.yaml") if design.fullmatch(p.name))
        if folder.is_dir() and not folder.is_symlink()
        else []
    )
    write_outputs(files, force=args.force, remove=stale)
    print(
        f"{base.name}: {result.trials} trial{'s' * (result.trials != 1)}, "
        f"{result.feasible} within the budget, "
        f"{len(result.front)} on the Pareto front; study {result.storage}\n"
    )
    print(table(result, base, budget))
    print()
    for p in files:
        print(f"wrote {p}")
    return 0


def _timing(args: argparse.Namespace, size: tuple[int, int]) -> dict[str, Any] | None:
    """The latency measurement's settings, or None without --measure / --max-latency."""
    if not (args.measure or args.max_latency):
        for flag, value in (("--precision", args.precision), ("--threads", args.threads)):
            if value is not None:
                raise SpecError(f"{flag} is for --measure or --max-latency")
        return None
    return {
        "precision": args.precision or "fp32",
        "batch": args.batch,
        "size": size,
        "threads": args.threads,
        "compile": not args.eager,
    }


def _measure(result: Any, timing: dict[str, Any], out: Path, limit: float | None) -> Any:
    import torch

    from ..base.system import cpu_description
    from ..fit.latency import CACHE, measure_front
    from ..fit.measure import measure_latency
    from ..ir.analysis import summarize
    from ..ir.compile import compile_spec
    from ..ir.memory import check_fits

    h, w = timing["size"]
    for m in result.front:  # the largest design decides; each is built and timed in turn
        g = compile_spec(m.spec)
        check_fits(g, summarize(g, (h, w)), timing["batch"], models=2)
    threads = timing["threads"] or torch.get_num_threads()
    setting = (
        f"{timing['precision']}{'' if timing['compile'] else ' eager'}, batch {timing['batch']}, "
        f"{h}x{w}, {threads} thread{'s' * (threads > 1)}"
    )

    tty = sys.stderr.isatty()  # progress on a terminal only, as the search's bar

    def say(done: int, total: int) -> None:
        if tty:
            print(f"measuring latency ({setting}): {total - done} design(s)", file=sys.stderr)

    def preparing(i: int, n: int) -> None:
        if tty:
            step = f"  preparing design {i + 1}/{n}" if i < n else f"  timing {n} design(s)"
            print(f"\r{step}".ljust(60), end="" if i < n else "\n", file=sys.stderr, flush=True)

    return measure_front(
        result,
        lambda specs: measure_latency(specs, **{**timing, "threads": threads}, progress=preparing),
        setting,
        out / CACHE,
        limit,
        progress=say,
        identity=f"{cpu_description()}; torch {torch.__version__}",
    )


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
        metavar="S",
        help="input side (or H W) for MACs, memory and latency (default: the base spec's "
        "input_size, else 224; 32 with --evaluate digits)",
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
    p.add_argument("--seed", type=seed, default=0, help="sampler seed, 0 to 2**32-1 (default 0)")
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
    p.add_argument(
        "--max-latency",
        type=duration,
        metavar="T",
        help="measured latency per batch, e.g. 20ms (implies --measure)",
    )
    p.add_argument(
        "--measure",
        action="store_true",
        help="measure the front's latency (optimize + the bench harness; cached in DIR)",
    )
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16", "int8"),
        help="precision of the latency measurement (default fp32)",
    )
    p.add_argument(
        "--threads",
        type=cpu_threads,
        metavar="N",
        help="threads of the latency measurement (default: torch's)",
    )
    p.add_argument(
        "--eager", action="store_true", help="measure latency without torch.compile (faster)"
    )
    p.add_argument(
        "--evaluate",
        metavar="HOW",
        help="accuracy as an objective: digits, or python:module:function (docs/fit.md)",
    )
    p.add_argument(
        "--epochs", type=positive, metavar="N", help="training epochs of --evaluate digits (8)"
    )
    p.add_argument("--no-plot", action="store_true", help="write no front.png / front.svg")
    p.add_argument("--force", action="store_true", help="overwrite files dlagraph did not write")
