"""``dlagraph codegen``: the standalone PyTorch source of specs."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..backends.codegen import generate_source
from ..base.errors import DlagraphError
from ..base.io import write_outputs
from ..ir.compile import compile_spec
from ..spec import load_spec
from .common import spec_paths

__all__ = ["add_arguments", "run"]


def run(args: argparse.Namespace) -> int:
    specs = spec_paths(args.specs)
    if not specs:
        raise DlagraphError("no spec files given (or none in the folders given)")
    files: dict[Path, str | bytes] = {}
    origin: dict[Path, Path] = {}
    for p in specs:  # everything is generated before anything is written
        spec = load_spec(p)
        target = Path(args.output) / f"{spec.name}.py"
        if target in origin:
            raise DlagraphError(
                f"{origin[target]} and {p} both have name {spec.name!r} and would both write "
                f"{target}; give one of them another name"
            )
        origin[target] = p
        files[target] = generate_source(
            compile_spec(spec), source_path=str(p.as_posix()), fold_bn=args.fold_bn
        )
    write_outputs(files, force=args.force)
    for p in files:
        print(f"wrote {p}")
    return 0


def add_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument("specs", nargs="+", help="spec files, folders of them, or preset names")
    c.add_argument("-o", "--output", required=True, help="output folder")
    c.add_argument("--force", action="store_true", help="overwrite files dlagraph did not write")
    c.add_argument(
        "--fold-bn",
        action="store_true",
        help="add fold_bn(): BatchNorm folded into convs, channels_last (inference)",
    )
