"""``dlagraph infer`` (a checkpoint's spec) and ``dlagraph diff`` (two networks compared).

Both need torch to read checkpoints; it is imported when they run, so the other commands stay
torch-free.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .._version import __version__
from ..errors import DlagraphError, clip, one_line
from ..io import MARKER, write_outputs
from ..ir.analysis import default_input_size, summarize
from ..ir.compile import compile_spec
from ..spec import spec_to_yaml
from ..spec.overrides import parse_sets
from .common import add_timeout_option, count

__all__ = ["add_infer_arguments", "run_infer", "add_diff_arguments", "run_diff"]


def run_infer(args: argparse.Namespace) -> int:
    from ..tools.infer import infer_checkpoint

    inf = infer_checkpoint(args.checkpoint, parse_sets(args.set or []), name=args.name)
    spec = inf.spec
    g = compile_spec(spec)
    size = default_input_size(g)
    s = summarize(g, size)
    text = (
        f"# {MARKER} {__version__}: inferred from {clip(one_line(Path(args.checkpoint).name), 120)}; "
        "every tensor's "
        f"name and shape checked\n" + spec_to_yaml(spec)
    )
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


def add_infer_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a .pth / .pt / .safetensors file of a DLA")
    p.add_argument("-o", "--output", help="write the spec here (YAML); default: print it")
    p.add_argument(
        "--set",
        action="append",
        metavar="FIELD=VALUE",
        help="set a field the weights cannot show, e.g. aggregation.residual=true (repeatable)",
    )
    p.add_argument("--name", help="the spec's name (default: from the file name)")
    p.add_argument("--force", action="store_true", help="overwrite a file dlagraph did not write")


def run_diff(args: argparse.Namespace) -> int:
    from ..tools.diff import diff_marks, diff_text, load_side

    if args.format == "html":
        if args.output is None:
            raise DlagraphError("--format html: give the page's file, -o NAME.html")
        out = Path(args.output)
        if out.suffix.lower() != ".html":
            raise DlagraphError(f"{out}: --format html writes a .html file; give -o NAME.html")
    elif args.output is not None:
        raise DlagraphError("-o: the text report goes to stdout; -o is for --format html")
    a, b = load_side(args.a, args.name), load_side(args.b, args.name)
    if args.format == "text":
        print(diff_text(a, b, examples=args.examples))
        return 0
    from ..tools.html import html_view

    page = html_view(b.spec, shapes=b.shapes, diff=diff_marks(a, b), timeout=args.diagram_timeout)
    write_outputs({out: page}, force=args.force)
    print(f"wrote {out}")
    return 0


def add_diff_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", help="a preset name, a spec file or a checkpoint")
    p.add_argument("b", help="a preset name, a spec file or a checkpoint")
    p.add_argument(
        "--examples",
        type=count,
        default=3,
        metavar="N",
        help="tensors shown per module (default 3)",
    )
    p.add_argument(
        "--name", help="the spec name of a checkpoint side (default: from its file name)"
    )
    p.add_argument(
        "--format",
        choices=("text", "html"),
        default="text",
        help="text: the report on stdout (default); html: B's interactive view with what "
        "differs from A marked, written to -o",
    )
    p.add_argument("-o", "--output", metavar="FILE.html", help="the page of --format html")
    p.add_argument("--force", action="store_true", help="overwrite a file dlagraph did not write")
    add_timeout_option(p)
