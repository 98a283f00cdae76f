"""``dlagraph diff``: two networks (specs, presets or checkpoints) compared; torch is imported
when it runs, to read checkpoints."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..base.errors import DlagraphError
from ..base.io import write_outputs
from .common import add_timeout_option, count

__all__ = ["add_arguments", "run"]


def run(args: argparse.Namespace) -> int:
    from ..inspect.diff import common_size, diff_marks, diff_text, load_side

    if args.format is None:  # from -o's suffix, as `draw` does: a page for .html
        html_out = args.output is not None and Path(args.output).suffix.lower() == ".html"
        args.format = "html" if html_out else "text"
    if args.format == "html":
        if args.output is None:
            raise DlagraphError("--format html: give the page's file, -o NAME.html")
        out = Path(args.output)
        if out.suffix.lower() != ".html":
            raise DlagraphError(f"{out}: --format html writes a .html file; give -o NAME.html")
    elif args.output is not None:
        raise DlagraphError("-o: the text report goes to stdout; -o is for --format html")
    a, b = load_side(args.a, args.name), load_side(args.b, args.name)
    size = common_size(a.spec, b.spec, tuple(args.input_size) if args.input_size else None)
    if args.format == "text":
        print(diff_text(a, b, examples=args.examples, size=size))
        return 0
    from ..views.html import html_view

    marks = diff_marks(a, b, size)
    page = html_view(
        b.spec, input_size=size, shapes=b.shapes, diff=marks, timeout=args.diagram_timeout
    )
    write_outputs({out: page}, force=args.force)
    print(f"wrote {out}")
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
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
        help="text: the report on stdout (default); html: B's interactive view with what "
        "differs from A marked, written to -o (the default when -o ends in .html)",
    )
    p.add_argument(
        "--input-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="the input both networks' MACs are computed at (default: A's input_size or "
        "smallest from 224, where B takes it)",
    )
    p.add_argument("-o", "--output", metavar="FILE.html", help="the page of --format html")
    p.add_argument("--force", action="store_true", help="overwrite a file dlagraph did not write")
    add_timeout_option(p)
