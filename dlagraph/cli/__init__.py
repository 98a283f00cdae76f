"""The dlagraph command line: build, codegen, draw, presets, infer, diff, bench, export, fit,
schema; one module per subcommand.

User errors (bad specs, refused overwrites) print one ``error:`` line per problem on stderr and exit
with code 2, without a traceback (``--debug`` shows it). Nothing is written unless every output
could be produced. The subcommands are a static table, :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from .._version import __version__
from ..base.errors import DlagraphError, DlagraphWarning, clip, one_line, safe_repr
from . import bench, build, codegen, diff, draw, export, fit, infer, presets, schema

__all__ = ["main", "parser", "COMMANDS"]

# name -> (help, description, add_arguments, run)
COMMANDS: dict[str, tuple[str, str, Callable[..., None], Callable[..., int]]] = {
    "build": (
        "validate, compile and summarise a spec; write its outputs",
        "Validate and compile a spec, print its parameters, MACs and per-level table, and write "
        "the graph, the generated source, the diagram (.dot, .svg) and the interactive view "
        "(.html).",
        build.add_arguments,
        build.run,
    ),
    "codegen": (
        "write the standalone PyTorch source of specs",
        "Write one standalone .py file per spec; it imports only torch.",
        codegen.add_arguments,
        codegen.run,
    ),
    "draw": (
        "draw the aggregation tree (svg, png, pdf or dot)",
        "Draw the aggregation tree of a spec in the style of the paper's figures.",
        draw.add_arguments,
        draw.run,
    ),
    "presets": (
        "list the packaged presets (or a folder's specs) with their parameter counts",
        "List the presets that ship with dlagraph (or the specs of a folder) with their paper "
        "names, references and parameter counts. A preset's name works wherever a spec file "
        "does; a path wins when both exist.",
        presets.add_arguments,
        presets.run,
    ),
    "infer": (
        "recover the spec of a DLA checkpoint",
        "Read a checkpoint's tensor names and shapes, and write the spec that reproduces every one "
        "of them (layout, levels, block type, aggregation kernel, head). Fields the weights cannot "
        "show are listed as assumptions; --set changes them.",
        infer.add_arguments,
        infer.run,
    ),
    "diff": (
        "compare two networks: specs, presets or checkpoints",
        "Compare two networks level by level (channels, depth, blocks, parameters, MACs) and "
        "tensor by tensor (the same, renamed, reshaped, only in one).",
        diff.add_arguments,
        diff.run,
    ),
    "bench": (
        "CPU inference speed in fp32, bf16 and int8, against timm",
        "Time a spec's CPU inference after dlagraph.optimize in each precision, against timm's "
        "fp32 eager model of the same architecture (or dlagraph's own fp32 eager model), with "
        "compile and calibration times.",
        bench.add_arguments,
        bench.run,
    ),
    "export": (
        "export to ONNX, OpenVINO, torch.export or TorchScript, checked in its runtime",
        "Export a spec, preset or checkpoint in fp32, bf16 or int8 with each format's own "
        "toolchain, run the artifact in its runtime against the PyTorch model (max error, top-1 "
        "agreement) and write it with a metadata file. OpenVINO and ONNX Runtime are the deploy "
        "extra.",
        export.add_arguments,
        export.run,
    ),
    "fit": (
        "search for DLAs within a budget: a Pareto front of exact costs",
        "Search the space around a base spec (width, HDA depth per level, block type, residual "
        "roots) for designs within a parameter, MAC and memory budget, with optuna; write the "
        "Pareto front as YAML specs, a table and a plot. Needs the fit extra.",
        fit.add_arguments,
        fit.run,
    ),
    "schema": (
        "print the spec's JSON Schema (for editor completion)",
        "Print the JSON Schema of a spec file, for editors and validators.",
        schema.add_arguments,
        schema.run,
    ),
}


def _common() -> argparse.ArgumentParser:
    """Options every subcommand also takes after its name (``dlagraph build x.yaml --debug``)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show error tracebacks"
    )
    return p


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="dlagraph",
        description="A declarative graph compiler for Deep Layer Aggregation networks: "
        "YAML spec -> DAG -> PyTorch module, generated source and diagrams.",
    )
    ap.add_argument("--version", action="version", version=f"dlagraph {__version__}")
    ap.add_argument("--debug", action="store_true", help="show error tracebacks")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = [_common()]
    for name, (help_, description, add_arguments, run) in COMMANDS.items():
        p = sub.add_parser(name, parents=common, help=help_, description=description)
        add_arguments(p)
        p.set_defaults(func=run)
    return ap


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where the program is, as SIGINT raises KeyboardInterrupt: every
    cleanup that runs for Ctrl-C (rolling back a write, killing Graphviz) runs for them too."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise(signum: int, frame: object) -> None:
    raise Interrupted(signum)


_STOPS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))


def _accept_interrupts() -> dict[int, Any]:
    """Make SIGTERM and SIGHUP stop the command as SIGINT does, and unblock all three; returns
    the handlers replaced. A process inherits its parent's signal mask, and some parents leave
    them blocked (a Python program with torch.compile's worker threads spawned children with every
    signal blocked): Ctrl-C or ``kill`` would then never reach us. A signal inherited as ignored
    (``nohup`` ignores SIGHUP) stays ignored. Handlers can be set in the main thread only."""
    replaced: dict[int, Any] = {}
    if threading.current_thread() is not threading.main_thread():
        return replaced
    for sig in _STOPS[1:]:
        if signal.getsignal(sig) is signal.SIG_DFL:
            replaced[sig] = signal.signal(sig, _raise)
    if hasattr(signal, "pthread_sigmask"):  # POSIX
        signal.pthread_sigmask(signal.SIG_UNBLOCK, set(_STOPS))
    return replaced


PLUGINS = "dlagraph.plugins"  # the entry-point group (and DLAGRAPH_PLUGINS, comma-separated)


def load_plugins() -> None:
    """Import the modules that register a user's blocks, heads, runtimes or formats, so that the
    command line offers them: the ``dlagraph.plugins`` entry points of installed packages and the
    modules named in ``DLAGRAPH_PLUGINS`` (comma-separated); ``DLAGRAPH_NO_PLUGINS=1`` skips them.
    What a plugin prints goes to stderr (stdout is the command's).

    Raises:
        DlagraphError: naming the plugin that does not import, and why.
    """
    import contextlib
    import importlib
    from importlib.metadata import entry_points

    if os.environ.get("DLAGRAPH_NO_PLUGINS") == "1":
        return
    hint = " (DLAGRAPH_NO_PLUGINS=1 runs without plugins)"
    names = [m.strip() for m in os.environ.get("DLAGRAPH_PLUGINS", "").split(",") if m.strip()]
    loads: list[tuple[str, Callable[[], Any]]] = [
        (f"DLAGRAPH_PLUGINS: cannot import {safe_repr(n, 80)}", partial(importlib.import_module, n))
        for n in names
    ]
    loads += [
        (f"plugin {safe_repr(ep.name, 80)} ({safe_repr(ep.value, 80)}) does not import", ep.load)
        for ep in entry_points(group=PLUGINS)
    ]
    for what, load in loads:
        try:
            with contextlib.redirect_stdout(sys.stderr):
                load()
        except KeyboardInterrupt:
            raise
        except BaseException as e:  # a user's module: an error, even sys.exit, is one line here
            raise DlagraphError(f"{what} ({type(e).__name__}: {_said(e)}){hint}") from None


def _said(e: BaseException) -> str:
    try:
        return clip(one_line(str(e)), 120)
    except Exception:  # an exception whose str() raises
        return "?"


def main(argv: Sequence[str] | None = None) -> int:
    replaced = _accept_interrupts()
    try:
        try:
            load_plugins()
        except DlagraphError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return _run(parser().parse_args(argv))
    except KeyboardInterrupt:  # before the command ran (plugins, parsing): no traceback
        return 130
    finally:  # main() called from Python (tests, notebooks) leaves the handlers as they were
        for sig, handler in replaced.items():
            signal.signal(sig, handler)


def _note(message: Warning | str, category: type[Warning], *rest: object, **kw: object) -> None:
    """dlagraph's own warnings as one ``note:`` line (others as Python shows them)."""
    if issubclass(category, DlagraphWarning):
        print(f"note: {clip(str(message), 300)}", file=sys.stderr)
    else:
        _SHOW(message, category, *rest, **kw)  # type: ignore[arg-type]


_SHOW = warnings.showwarning


def _run(args: argparse.Namespace) -> int:
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _note
            warnings.simplefilter("default", DlagraphWarning)  # a note, each once, never an error
            return int(args.func(args))
    except DlagraphError as e:
        if args.debug:
            raise
        for line in str(e).splitlines():
            print(f"error: {line}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `dlagraph build x | head`: the reader left; no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as e:  # the environment refused (a path too long, no permission, a full disk)
        if args.debug:
            raise
        where = f"{clip(one_line(str(e.filename)), 160)}: " if e.filename is not None else ""
        print(f"error: {where}{e.strerror or clip(str(e), 200)}", file=sys.stderr)
        return 2
    except Interrupted as e:  # SIGTERM, SIGHUP: the shell's convention, 128 + the signal
        print(f"interrupted ({e})", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
