"""Rendering DOT source with Graphviz's ``dot``, bounded in time and never leaving it behind."""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib

import graphviz

from .._version import __version__
from ..errors import DlagraphError
from ..io import MARKER

__all__ = ["render", "FORMATS", "INSTALL_HINT", "DIAGRAM_TIMEOUT"]

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
