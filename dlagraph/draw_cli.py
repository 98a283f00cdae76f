"""``dlagraph draw`` and the diagram outputs of ``dlagraph build`` (``<name>.dot``, ``<name>.svg``)."""

from __future__ import annotations

import argparse
import shutil
import struct
import subprocess
import zlib
from pathlib import Path
from typing import Any

import graphviz

from . import __version__, cli
from .diagram import draw
from .errors import DlagraphError, clip
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


DIAGRAM_TIMEOUT = 60.0  # seconds Graphviz may take; the largest networks need about 3 minutes


def render(dot: graphviz.Digraph, fmt: str, timeout: float = DIAGRAM_TIMEOUT) -> bytes | None:
    """The diagram in ``fmt``, or None when Graphviz's ``dot`` is not installed.

    ``dot`` runs as a child process that never outlives this call: on a timeout, an error or an
    interruption (Ctrl-C, ``kill -INT``) it is killed and reaped before the exception propagates.

    Raises:
        DlagraphError: when Graphviz fails or takes longer than ``timeout`` seconds.
    """
    if fmt == "dot":
        return dot.source.encode()
    exe = shutil.which("dot")
    if exe is None:
        return None
    with subprocess.Popen(
        [exe, f"-T{fmt}"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as proc:  # leaving the block closes the pipes and reaps the child
        try:
            out, err = proc.communicate(dot.source.encode(), timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise DlagraphError(
                f"Graphviz took longer than {timeout:g} s to render the {fmt}; the .dot file is "
                f"complete (render it with `dot -T{fmt}`), or raise --diagram-timeout"
            ) from None
        except BaseException:  # Ctrl-C, kill -INT: `dot` must not be left running
            proc.kill()
            raise
    if proc.returncode != 0:
        raise DlagraphError(
            f"Graphviz failed to render {fmt}: {err.decode(errors='replace').strip()[:200]}"
        )
    return _mark(out, fmt)


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


def cmd_draw(args: argparse.Namespace) -> int:
    out = Path(args.output)
    fmt = out.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise DlagraphError(
            f"{out}: unknown diagram format {clip(repr(fmt))}; use one of "
            f"{', '.join('.' + f for f in FORMATS)}"
        )
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
    p.add_argument(
        "--detail",
        choices=("blocks", "layers"),
        default="blocks",
        help="one box per block, or each block's convs and BNs",
    )
    p.add_argument(
        "--rankdir", choices=("TB", "LR"), default="TB", help="top to bottom, or left to right"
    )
    p.add_argument(
        "--paper-order",
        action="store_true",
        help="number aggregation inputs in eq. 2 order instead of the concat order",
    )
    p.add_argument(
        "--labels",
        choices=("none", "channels", "shapes"),
        default="channels",
        help="edge labels: nothing, channels (default), or C x H x W shapes at --input-size",
    )
    p.add_argument(
        "--input-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="input size for --labels shapes (default: the smallest valid size from 224)",
    )
    p.add_argument("--ir", action="store_true", help="show node ids and spec paths")
    p.add_argument("--no-legend", action="store_true", help="leave out the legend")


def _register(sub: Any, common: list[Any]) -> None:
    d = sub.add_parser(
        "draw", parents=common, help="draw the aggregation tree (svg, png, pdf or dot)"
    )
    d.add_argument("spec", help="a spec file (YAML)")
    d.add_argument("-o", "--output", required=True, help="FILE.svg, .png, .pdf or .dot")
    d.add_argument("--force", action="store_true", help="overwrite files dlagraph did not write")
    add_timeout_option(d)
    _add_options(d)
    d.set_defaults(func=cmd_draw)


def add_timeout_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--diagram-timeout",
        type=float,
        default=DIAGRAM_TIMEOUT,
        metavar="S",
        help=f"seconds Graphviz may take to render (default {DIAGRAM_TIMEOUT:g})",
    )


def _build_diagram(
    spec: Any, g: Any, out: Path, args: argparse.Namespace, notes: list[str]
) -> dict[Path, str | bytes]:
    if args.no_diagram:
        return {}
    dot = draw(g)
    files: dict[Path, str | bytes] = {out / f"{spec.name}.dot": dot.source}
    try:
        svg = render(dot, "svg", args.diagram_timeout)
    except DlagraphError as e:
        notes.append(f"note: no {spec.name}.svg: {e}")
        return files
    if svg is None:
        notes.append(f"note: no {spec.name}.svg: {INSTALL_HINT}")
    else:
        files[out / f"{spec.name}.svg"] = svg
    return files


cli._SUBCOMMANDS.append(_register)
cli._BUILD_EXTRAS.append(_build_diagram)
