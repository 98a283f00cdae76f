"""``dlagraph draw`` and the diagram outputs of ``dlagraph build`` (``<name>.dot``, ``<name>.svg``)."""

from __future__ import annotations

import argparse
import struct
import zlib
from pathlib import Path
from typing import Any

import graphviz

from . import __version__, cli
from .diagram import draw
from .errors import DlagraphError
from .io import MARKER, write_outputs

INSTALL_HINT = (
    "Graphviz's `dot` is not installed, so only the .dot file was written; install it "
    "with `apt-get install graphviz` (Debian/Ubuntu), `brew install graphviz` (macOS) "
    "or `conda install graphviz`, then run `dot -Tsvg FILE.dot -o FILE.svg`"
)
FORMATS = ("svg", "png", "pdf", "dot")


def _mark(data: bytes, fmt: str) -> bytes:
    """Stamp binary renderings with dlagraph's marker (so a rerun may replace them)."""
    text = f"{MARKER} {__version__}".encode()
    if fmt == "png":  # a tEXt chunk right after IHDR
        body = b"Software\x00" + text
        chunk = (
            struct.pack(">I", len(body))
            + b"tEXt"
            + body
            + struct.pack(">I", zlib.crc32(b"tEXt" + body))
        )
        return data[:33] + chunk + data[33:]
    if fmt == "pdf":  # a comment after %%EOF, which readers ignore
        return data + b"\n%" + text + b"\n"
    return data


def render(dot: graphviz.Digraph, fmt: str) -> bytes | None:
    """The diagram in ``fmt``, or None when Graphviz's ``dot`` is not installed."""
    if fmt == "dot":
        return dot.source.encode()
    try:
        return _mark(dot.pipe(format=fmt), fmt)
    except graphviz.ExecutableNotFound:
        return None
    except graphviz.CalledProcessError as e:
        raise DlagraphError(f"Graphviz failed to render {fmt}: {e.stderr!r}") from None


def _options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "collapse_depth": args.collapse_depth,
        "detail": args.detail,
        "rankdir": args.rankdir,
        "paper_order": args.paper_order,
        "labels": args.labels,
        "ir": args.ir,
        "legend": not args.no_legend,
    }


def cmd_draw(args: argparse.Namespace) -> int:
    out = Path(args.output)
    fmt = out.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise DlagraphError(
            f"{out}: unknown diagram format {fmt!r}; use one of "
            f"{', '.join('.' + f for f in FORMATS)}"
        )
    dot = draw(args.spec, **_options(args))
    data = render(dot, fmt)
    if data is None:
        dot_path = out.with_suffix(".dot")
        write_outputs({dot_path: dot.source}, force=args.force)
        print(f"wrote {dot_path}")
        raise DlagraphError(f"{out}: not written: {INSTALL_HINT}")
    write_outputs({out: data}, force=args.force)
    print(f"wrote {out}")
    return 0


def _add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--collapse-depth",
        type=int,
        default=None,
        metavar="N",
        help="draw subtrees nested deeper than N as one node with counts",
    )
    p.add_argument("--detail", choices=("blocks", "layers"), default="blocks")
    p.add_argument("--rankdir", choices=("TB", "LR"), default="TB")
    p.add_argument(
        "--paper-order",
        action="store_true",
        help="number aggregation inputs in eq. 2 order instead of the concat order",
    )
    p.add_argument("--labels", choices=("none", "channels", "shapes"), default="channels")
    p.add_argument("--ir", action="store_true", help="show node ids and spec paths")
    p.add_argument("--no-legend", action="store_true")


def _register(sub: Any) -> None:
    d = sub.add_parser("draw", help="draw the aggregation tree (svg, png, pdf or dot)")
    d.add_argument("spec")
    d.add_argument("-o", "--output", required=True, help="FILE.svg, .png, .pdf or .dot")
    d.add_argument("--force", action="store_true", help="overwrite files dlagraph did not write")
    _add_options(d)
    d.set_defaults(func=cmd_draw)


def _build_diagram(
    spec: Any, g: Any, out: Path, args: argparse.Namespace, notes: list[str]
) -> dict[Path, str | bytes]:
    dot = draw(g)
    files: dict[Path, str | bytes] = {out / f"{spec.name}.dot": dot.source}
    svg = render(dot, "svg")
    if svg is None:
        notes.append(f"note: no {spec.name}.svg: {INSTALL_HINT}")
    else:
        files[out / f"{spec.name}.svg"] = svg
    return files


cli._SUBCOMMANDS.append(_register)
cli._BUILD_EXTRAS.append(_build_diagram)
