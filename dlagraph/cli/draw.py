"""``dlagraph draw``: the aggregation-tree diagram of a spec (svg, png, pdf or dot), or its
interactive view (html)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..base.errors import DlagraphError, clip
from ..base.io import write_outputs
from ..views.diagram import draw
from ..views.render import FORMATS, install_hint, render
from .common import add_timeout_option

__all__ = ["add_arguments", "run"]


def _options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "collapse_depth": args.collapse_depth,
        "detail": args.detail,
        "rankdir": args.rankdir,
        "paper_order": args.paper_order,
        "labels": args.labels,
        "ir": args.ir,
        "legend": not args.no_legend,
        "input_size": tuple(args.input_size) if args.input_size else None,
    }


VIEW_FORMATS = (*FORMATS, "html")


def output_format(out: Path, fmt: str | None) -> str:
    """The format of ``-o FILE`` (its suffix), checked against ``--format`` when given."""
    suffix = out.suffix.lstrip(".").lower()
    if fmt is not None and suffix != fmt:
        raise DlagraphError(
            f"{out}: --format {fmt} writes a .{fmt} file; give -o NAME.{fmt} (or leave --format "
            "out: the suffix says it)"
        )
    if suffix not in VIEW_FORMATS:
        raise DlagraphError(
            f"{out}: unknown diagram format {clip(repr(suffix))}; use one of "
            f"{', '.join('.' + f for f in VIEW_FORMATS)}"
        )
    return suffix


def run(args: argparse.Namespace) -> int:
    out = Path(args.output)
    fmt = output_format(out, args.format)
    if fmt == "html":
        from ..views.html import html_view

        options = _options(args)
        if options.pop("collapse_depth") is not None:
            raise DlagraphError(
                "--collapse-depth: the html view folds levels and subtrees in the page (click "
                "them); leave it out"
            )
        size = options.pop("input_size")
        page = html_view(args.spec, input_size=size, timeout=args.diagram_timeout, **options)
        write_outputs({out: page}, force=args.force)
        print(f"wrote {out}")
        return 0
    dot = draw(args.spec, **_options(args))
    try:
        data = render(dot, fmt, args.diagram_timeout)
    except DlagraphError:
        if fmt != "dot":  # the DOT source is complete: keep it, then report
            write_outputs({out.with_suffix(".dot"): dot.source}, force=args.force)
            print(f"wrote {out.with_suffix('.dot')}")
        raise
    if data is None:
        dot_path = out.with_suffix(".dot")
        write_outputs({dot_path: dot.source}, force=args.force)
        print(f"wrote {dot_path}")
        raise DlagraphError(f"{out}: not written: {install_hint(fmt)}")
    write_outputs({out: data}, force=args.force)
    print(f"wrote {out}")
    return 0


def add_arguments(d: argparse.ArgumentParser) -> None:
    d.add_argument("spec", help="a spec file (YAML) or a preset name")
    d.add_argument(
        "-o", "--output", required=True, help="FILE.svg, .png, .pdf, .dot, or .html (interactive)"
    )
    d.add_argument(
        "--format",
        choices=VIEW_FORMATS,
        help="the output's format (default: -o's suffix); html: the interactive view, one file",
    )
    d.add_argument("--force", action="store_true", help="overwrite files dlagraph did not write")
    add_timeout_option(d)
    d.add_argument(
        "--collapse-depth",
        type=int,
        default=None,
        metavar="N",
        help="draw subtrees nested deeper than N as one node with counts",
    )
    d.add_argument(
        "--detail",
        choices=("blocks", "layers"),
        default="blocks",
        help="one box per block, or each block's convs and BNs",
    )
    d.add_argument(
        "--rankdir", choices=("TB", "LR"), default="TB", help="top to bottom, or left to right"
    )
    d.add_argument(
        "--paper-order",
        action="store_true",
        help="number aggregation inputs in eq. 2 order instead of the concat order",
    )
    d.add_argument(
        "--labels",
        choices=("none", "channels", "shapes"),
        default="channels",
        help="edge labels: nothing, channels (default), or C x H x W shapes at --input-size",
    )
    d.add_argument(
        "--input-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="input size for --labels shapes and the html view's shapes and MACs (default: the "
        "spec's input_size, else the smallest valid size from 224)",
    )
    d.add_argument("--ir", action="store_true", help="show node ids and spec paths")
    d.add_argument("--no-legend", action="store_true", help="leave out the legend")
