"""``dlagraph infer``: a checkpoint's spec.

It needs torch to read checkpoints; it is imported when they run, so the other commands stay
torch-free.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .._version import __version__
from ..base.errors import clip, one_line
from ..base.io import MARKER, write_outputs
from ..ir.analysis import default_input_size, summarize
from ..ir.compile import compile_spec
from ..spec import spec_to_yaml
from ..spec.overrides import parse_sets

__all__ = ["add_arguments", "run"]


def run(args: argparse.Namespace) -> int:
    from ..inspect.infer import infer_checkpoint

    inf = infer_checkpoint(args.checkpoint, parse_sets(args.set or []), name=args.name)
    spec = inf.spec
    g = compile_spec(spec)
    size = default_input_size(g)
    s = summarize(g, size)
    where = clip(one_line(Path(args.checkpoint).name), 120)
    how = f"the spec {where} carries" if inf.carried else f"inferred from {where}"
    text = (
        f"# {MARKER} {__version__}: {how}; every tensor's name and shape checked\n"
        + spec_to_yaml(spec)
    )
    if inf.carried:
        print(f"{args.checkpoint}: carries its spec, every tensor's name and shape matching it")
    print(
        f"{args.checkpoint}: a {spec.block.type}-block DLA, layout {spec.layout}, head "
        f"{spec.head.type}; parameters {s.params:,}, MACs at {size[0]}x{size[1]} "
        f"{s.macs / 1e9:.2f} G"
    )
    if inf.assumptions:
        print("assumed (the weights cannot show these; --set FIELD=VALUE to change):")
        for a in inf.assumptions:
            print(f"  {a}")
    print()
    print(s.table())
    print()
    if args.output:
        write_outputs({Path(args.output): text}, force=args.force)
        print(f"wrote {args.output}")
    else:
        print(text, end="")
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a .pth / .pt / .safetensors file of a DLA")
    p.add_argument("-o", "--output", help="write the spec here (YAML); default: print it")
    p.add_argument(
        "--set",
        action="append",
        metavar="FIELD=VALUE",
        help="set a field the weights cannot show, e.g. aggregation.residual=true (repeatable)",
    )
    p.add_argument(
        "--name",
        help="the spec's name (default: the name of the spec the checkpoint carries, else from the "
        "file name)",
    )
    p.add_argument("--force", action="store_true", help="overwrite a file dlagraph did not write")
