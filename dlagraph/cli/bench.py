"""``dlagraph bench``: CPU inference throughput of a spec in fp32, bf16 and int8, against timm.

It needs torch (and torchao for int8), imported when it runs, so the other commands stay
torch-free.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from typing import Any

from ..base.errors import DlagraphError
from ..base.system import native_bf16
from ..deploy.registry import PRECISIONS, get_runtime, registered_runtimes
from ..ir.analysis import summarize
from ..ir.compile import compile_spec
from ..ir.memory import check_fits
from ..spec import load_spec
from .common import Steps, cpu_threads

__all__ = ["add_arguments", "run"]


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 1 <= value <= 4096:
        raise argparse.ArgumentTypeError(f"must be between 1 and 4096 (got {value})")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="a spec file or a preset name (dla36, centernet_dla34, ...)")
    p.add_argument(
        "--precision",
        nargs="+",
        choices=PRECISIONS,
        metavar="P",
        help="fp32, bf16 and/or int8 (default: fp32, bf16 where the CPU has native bf16, and "
        "int8 with --calibrate)",
    )
    p.add_argument("--batch", type=_positive, default=8, help="images per batch (default 8)")
    p.add_argument(
        "--size",
        type=_positive,
        nargs="+",
        metavar="S",
        help="image side or H W (default: the spec's input_size, else 224)",
    )
    p.add_argument(
        "--threads", type=cpu_threads, help="CPU threads of every runtime (default: each one's own)"
    )
    p.add_argument("--runs", type=_positive, default=7, help="timed batches per model (median)")
    p.add_argument(
        "--calibrate",
        action="store_true",
        help="calibrate int8 on random inputs (timings are real; accuracy is not measured)",
    )
    p.add_argument("--no-timm-best", action="store_true", help="skip timm's bf16 autocast row")
    p.add_argument(
        "--backend",
        nargs="+",
        choices=registered_runtimes(),
        metavar="B",
        help=f"{', '.join(registered_runtimes())} (default: each one installed)",
    )


def _size(spec: Any, sides: list[int] | None) -> tuple[int, int]:
    """--size as (H, W): one side, H W, or (none given) the spec's input_size, else 224."""
    if sides is None:
        return tuple(spec.input_size) if spec.input_size else (224, 224)  # type: ignore[return-value]
    if len(sides) > 2:
        raise DlagraphError(f"--size takes one side or H W, not {len(sides)} numbers")
    return sides[0], sides[-1]


def _check_memory(spec: Any, batch: int, size: tuple[int, int], models: int) -> None:
    """Refuse, before torch allocates anything, a batch and size this machine cannot hold."""
    g = compile_spec(spec)
    s = summarize(g, size)  # a size the network cannot take: one clean error
    check_fits(g, s, batch, models=models)


def run(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)
    # bf16 by default only where the CPU computes in it: elsewhere it is emulated, and slower
    default = ["fp32", "bf16"] if native_bf16() else ["fp32"]
    precisions = args.precision or default + (["int8"] if args.calibrate else [])
    backends = args.backend or [b for b in registered_runtimes() if get_runtime(b).available()]
    for b in backends:
        rt = get_runtime(b)
        if not rt.available():
            raise DlagraphError(f"--backend {b}: needs {', '.join(rt.packages)}: {rt.extra}")
    if "int8" in precisions and "torch" in backends and importlib.util.find_spec("torchao") is None:
        raise DlagraphError(
            "int8 needs torchao, which is not installed: pip install 'dlagraph[deploy]' (or "
            "leave out int8: --precision fp32 bf16)"
        )
    size = _size(spec, args.size)
    _check_memory(spec, args.batch, size, 2 + len(precisions) * len(backends))
    if "int8" in precisions and not args.calibrate:
        raise DlagraphError(
            "--precision int8 needs calibration data: add --calibrate to calibrate on random "
            "inputs (fine for timing), or call dlagraph.optimize(model, 'int8', calibration=...) "
            "with real images"
        )
    import torch

    from ..deploy.bench import bench_spec, cpu_description, table

    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    print(
        f"{spec.name}: batch {args.batch}, {size[0]}x{size[1]}, "
        f"{torch.get_num_threads()} thread{'s' * (torch.get_num_threads() > 1)}; {cpu_description()}",
        flush=True,
    )
    if args.calibrate:
        print("int8 is calibrated on 4 batches of random inputs: timings only", flush=True)
    rows, baseline = bench_spec(
        spec,
        precisions,
        batch=args.batch,
        size=size,
        runs=args.runs,
        calibration_batches=4,
        timm_best=not args.no_timm_best,
        progress=Steps(),
        backends=backends,
        threads=args.threads,
    )
    print()
    print("\n".join(table(rows, baseline)))
    print(
        f"\n(each row in a process of its own, one at a time: the median of 3 rounds' medians "
        f"of {args.runs} batches, and the rounds' range; {time.perf_counter() - start:.0f} s in all)"
    )
    return 0
