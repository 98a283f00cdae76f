"""``dlagraph codegen`` and the ``<name>.py`` output of ``dlagraph build``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .. import cli
from ..io import write_outputs
from ..load import load_spec
from . import generate_source


def cmd_codegen(args: argparse.Namespace) -> int:
    specs = cli._spec_paths(args.specs)
    if not specs:
        raise cli.DlagraphError("no spec files given (or none in the folders given)")
    files: dict[Path, str | bytes] = {}
    origin: dict[Path, Path] = {}
    for p in specs:  # everything is generated before anything is written
        spec = load_spec(p)
        target = Path(args.output) / f"{spec.name}.py"
        if target in origin:
            raise cli.DlagraphError(
                f"{origin[target]} and {p} both have name {spec.name!r} and would both write "
                f"{target}; give one of them another name"
            )
        origin[target] = p
        files[target] = generate_source(p, fold_bn=args.fold_bn)
    write_outputs(files, force=args.force)
    for p in files:
        print(f"wrote {p}")
    return 0


def _register(sub: Any, common: list[Any]) -> None:
    c = sub.add_parser(
        "codegen", parents=common, help="write the standalone PyTorch source of specs"
    )
    c.add_argument("specs", nargs="+", help="spec files, or folders of them")
    c.add_argument("-o", "--output", required=True, help="output folder")
    c.add_argument("--force", action="store_true", help="overwrite files dlagraph did not write")
    c.add_argument(
        "--fold-bn",
        action="store_true",
        help="add fold_bn(): BatchNorm folded into convs, channels_last (inference)",
    )
    c.set_defaults(func=cmd_codegen)


def _build_source(
    spec: Any, g: Any, out: Path, args: argparse.Namespace, notes: list[str]
) -> dict[Path, str | bytes]:
    return {out / f"{spec.name}.py": generate_source(args.spec, fold_bn=args.fold_bn)}


cli._SUBCOMMANDS.append(_register)
cli._BUILD_EXTRAS.append(_build_source)
