"""The dlagraph command line: build, codegen, draw, presets, schema.

User errors (bad specs, refused overwrites) print one ``error:`` line per problem on stderr and exit
with code 2, without a traceback (``--debug`` shows it). Nothing is written unless every output
could be produced.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from .errors import DlagraphError

__all__ = ["main"]


def _spec_paths(items: Sequence[str]) -> list[Path]:
    out: list[Path] = []
    for item in items:
        p = Path(item)
        out += sorted(p.glob("*.yaml")) + sorted(p.glob("*.yml")) if p.is_dir() else [p]
    return out


def _graph_json(g: object) -> str:
    import networkx as nx

    from . import __version__
    from .io import MARKER

    data = nx.node_link_data(g, edges="edges")  # type: ignore[arg-type]
    data["graph"] = {"generator": f"{MARKER} {__version__}", **data["graph"]}
    return json.dumps(data, indent=1) + "\n"


def cmd_build(args: argparse.Namespace) -> int:
    from .analysis import default_input_size, summarize, total_stride
    from .compile import compile_spec
    from .io import write_outputs
    from .load import load_spec

    spec = load_spec(args.spec)
    g = compile_spec(spec)
    size = tuple(args.input_size) if args.input_size else default_input_size(g)
    s = summarize(g, size)
    out = Path(args.output or Path(DEFAULT_OUTPUT) / spec.name)
    files: dict[Path, str | bytes] = {out / f"{spec.name}.graph.json": _graph_json(g)}
    notes: list[str] = []
    for extra in _BUILD_EXTRAS:
        files.update(extra(spec, g, out, args, notes))
    write_outputs(files, force=args.force)
    title = spec.name + (f" ({spec.paper_name})" if spec.paper_name else "")
    ref = f", equals {spec.reference}" if spec.reference else ""
    print(f"{title}: layout {spec.layout}{ref}")
    print(f"parameters: {s.params:,}")
    why = ""
    if not args.input_size and size != (224, 224):
        why = f" (the smallest input from 224 that the total stride {total_stride(g)} divides)"
    print(f"MACs at {size[0]}x{size[1]}: {s.macs:,} ({s.macs / 1e9:.2f} G){why}")
    print(f"aggregation nodes: {s.aggregation_nodes}")
    if s.unused:
        print(
            f"unused nodes ({s.unused_params:,} params; in the reference module tree, never read):"
            f" {', '.join(s.unused)}"
        )
    print()
    print(s.table())
    print()
    if args.print_graph:
        _print_graph(g)
    for p in files:
        print(f"wrote {p}")
    for note in notes:
        print(note)
    return 0


def _print_graph(g: object) -> None:
    """One row per DAG node (torch.fx ``print_tabular`` style)."""
    from .graph import node_table

    rows = [("node", "op", "inputs (port order)", "channels", "stride", "from")]
    rows += [
        (r["name"], r["op"], ", ".join(r["inputs"]), r["channels"], str(r["stride"]), r["source"])
        for r in node_table(g)
    ]  # type: ignore[arg-type]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    print()


DEFAULT_OUTPUT = "dlagraph-out"  # not build/: `pip wheel .` and setuptools write there

# Later stages (code generation, diagrams) add their outputs to `dlagraph build` here.
_BUILD_EXTRAS: list = []


def cmd_presets(args: argparse.Namespace) -> int:
    from .analysis import summarize
    from .load import load_spec

    folder = Path(args.dir)
    if not folder.is_dir():
        raise DlagraphError(f"{folder}: no such folder of specs")
    rows = [("spec", "paper name", "reference", "params")]
    for p in _spec_paths([args.dir]):
        spec = load_spec(p)
        rows.append(
            (p.name, spec.paper_name or "-", spec.reference or "-", f"{summarize(spec).params:,}")
        )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print(
            "  ".join(
                c.rjust(w) if i == 3 else c.ljust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            ).rstrip()
        )
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from .schema import json_schema

    print(json.dumps(json_schema(), indent=2))
    return 0


def _common() -> argparse.ArgumentParser:
    """Options every subcommand also takes after its name (``dlagraph build x.yaml --debug``)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show error tracebacks"
    )
    return p


def parser() -> argparse.ArgumentParser:
    from . import __version__

    ap = argparse.ArgumentParser(
        prog="dlagraph",
        description="A declarative graph compiler for Deep Layer Aggregation networks: "
        "YAML spec -> DAG -> PyTorch module, generated source and diagrams.",
    )
    ap.add_argument("--version", action="version", version=f"dlagraph {__version__}")
    ap.add_argument("--debug", action="store_true", help="show error tracebacks")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = [_common()]
    b = sub.add_parser(
        "build",
        parents=common,
        help="validate, compile and summarise a spec; write its outputs",
        description="Validate and compile a spec, print its parameters, MACs and per-level "
        "table, and write the graph, the generated source and the diagram.",
    )
    b.add_argument("spec", help="a spec file (YAML)")
    b.add_argument("-o", "--output", help=f"output folder (default: {DEFAULT_OUTPUT}/<name>/)")
    b.add_argument(
        "--input-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="input height and width for MACs and shapes (default: 224x224, or the smallest "
        "larger size the network's total stride divides)",
    )
    b.add_argument("--force", action="store_true", help="overwrite files dlagraph did not write")
    b.add_argument("--print-graph", action="store_true", help="print one row per DAG node")
    b.add_argument(
        "--fold-bn",
        action="store_true",
        help="generated source gets fold_bn(): BatchNorm folded into convs, channels_last",
    )
    b.add_argument("--no-diagram", action="store_true", help="write no .dot or .svg")
    from .draw_cli import add_timeout_option

    add_timeout_option(b)
    b.set_defaults(func=cmd_build)
    p = sub.add_parser(
        "presets", parents=common, help="list the specs of a folder with their parameter counts"
    )
    p.add_argument("dir", nargs="?", default="specs", help="a folder of specs (default: specs)")
    p.set_defaults(func=cmd_presets)
    s = sub.add_parser(
        "schema", parents=common, help="print the spec's JSON Schema (for editor completion)"
    )
    s.set_defaults(func=cmd_schema)
    for register in _SUBCOMMANDS:
        register(sub, common)
    return ap


_SUBCOMMANDS: list = []


def main(argv: Sequence[str] | None = None) -> int:
    _load_plugins()
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except DlagraphError as e:
        if args.debug:
            raise
        for line in str(e).splitlines():
            print(f"error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _load_plugins() -> None:
    """Import the modules that add subcommands and build outputs (they register themselves)."""
    import importlib

    for mod in ("dlagraph.codegen.cli", "dlagraph.draw_cli"):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise


if __name__ == "__main__":  # `python -m dlagraph.cli`: plugins register on the imported module
    from dlagraph.cli import main as _main

    sys.exit(_main())
