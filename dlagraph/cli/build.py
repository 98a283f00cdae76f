"""``dlagraph build``: validate, compile, summarise, write every output.

The spec is compiled once and summarised once; every writer (the generated source, the diagram,
the interactive view, the report) reads that graph and that summary. Nothing here imports torch.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import networkx as nx

from .._version import __version__
from ..backends.codegen import generate_source
from ..base.errors import DlagraphError
from ..base.io import MARKER, write_outputs
from ..ir.analysis import Summary, default_input_size, summarize
from ..ir.compile import compile_spec
from ..ir.graph import node_table
from ..ir.memory import activation_memory
from ..spec import load_spec
from ..spec.overrides import apply_overrides, parse_sets
from ..views.diagram import draw
from ..views.html import html_view
from ..views.render import install_hint, render
from .common import DEFAULT_OUTPUT, add_timeout_option, positive

__all__ = ["add_arguments", "run"]


def _graph_json(g: nx.DiGraph) -> str:
    data = nx.node_link_data(g, edges="edges")
    data["graph"] = {"generator": f"{MARKER} {__version__}", **data["graph"]}
    return json.dumps(data, indent=1) + "\n"


def _diagram(
    g: nx.DiGraph, s: Summary, out: Path, args: argparse.Namespace, notes: list[str]
) -> dict:
    """The .dot, the .svg and the interactive .html view (where Graphviz can lay it out), from
    the one compiled graph and its one summary."""
    name = g.graph["name"]
    dot = draw(g, summary=s)
    files: dict[Path, str | bytes] = {out / f"{name}.dot": dot.source}
    try:
        svg = render(dot, "svg", args.diagram_timeout)
    except DlagraphError as e:
        notes.append(f"note: no {name}.svg: {e}")
        return files
    if svg is None:
        notes.append(f"note: no {name}.svg: {install_hint('svg')}")
        return files
    files[out / f"{name}.svg"] = svg
    try:  # the state_dict names from the IR: no torch
        files[out / f"{name}.html"] = html_view(g, summary=s)
    except DlagraphError as e:
        notes.append(f"note: no {name}.html: {e}")
    return files


def run(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)
    if args.set:  # applied to the spec's data, then validated (and scaled) as a whole
        spec = load_spec(apply_overrides(spec.to_dict(), parse_sets(args.set)))
    g = compile_spec(spec)
    size = tuple(args.input_size) if args.input_size else default_input_size(g)
    s = summarize(g, size)
    out = Path(args.output or Path(DEFAULT_OUTPUT) / spec.name)
    files: dict[Path, str | bytes] = {out / f"{spec.name}.graph.json": _graph_json(g)}
    files[out / f"{spec.name}.py"] = generate_source(
        g, source_path=str(args.spec), fold_bn=args.fold_bn, summary=s
    )
    notes: list[str] = []
    if not args.no_diagram:
        files.update(_diagram(g, s, out, args, notes))
    write_outputs(files, force=args.force)
    title = spec.name + (f" ({spec.paper_name})" if spec.paper_name else "")
    ref = f", equals {spec.reference}" if spec.reference else ""
    print(f"{title}: layout {spec.layout}{ref}")
    print(f"parameters: {s.params:,}")
    why = ""
    if not args.input_size and g.graph.get("input_size"):
        why = " (the spec's input_size)"
    elif not args.input_size and size != (224, 224):
        why = f" (the smallest input from 224 that the total stride {g.graph['total_stride']} divides)"
    # MACs in the unit that shows them: a 32x32 network's 10.6M is not "0.01 G"
    unit = f"{s.macs / 1e9:.2f} G" if s.macs >= 1e9 else f"{s.macs / 1e6:.2f} M"
    print(f"MACs at {size[0]}x{size[1]}: {s.macs:,} ({unit}){why}")
    print(f"aggregation nodes: {s.aggregation_nodes}")
    print(activation_memory(g, args.batch, size, summary=s).describe())
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


def _print_graph(g: nx.DiGraph) -> None:
    """One row per DAG node (torch.fx ``print_tabular`` style)."""
    rows = [("node", "op", "inputs (port order)", "channels", "reduction", "from")]
    rows += [
        (
            r["name"],
            r["op"],
            ", ".join(r["inputs"]),
            r["channels"],
            str(r["reduction"]),
            r["source"],
        )
        for r in node_table(g)
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    print()


def add_arguments(b: argparse.ArgumentParser) -> None:
    b.add_argument("spec", help="a spec file (YAML) or a preset name (see `dlagraph presets`)")
    b.add_argument("-o", "--output", help=f"output folder (default: {DEFAULT_OUTPUT}/<name>/)")
    b.add_argument(
        "--input-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="input height and width for MACs and shapes (default: the spec's input_size, else "
        "224x224 or the smallest larger size the network's total stride divides)",
    )
    b.add_argument(
        "--batch",
        type=positive,
        default=1,
        metavar="N",
        help="batch size of the activation-memory figures (default 1)",
    )
    b.add_argument(
        "--set",
        action="append",
        metavar="FIELD=VALUE",
        help="set a spec field by its dotted path, VALUE read as YAML: scale.width=0.5, "
        "levels.3.depth=2, aggregation.residual=true (repeatable)",
    )
    b.add_argument("--force", action="store_true", help="overwrite files dlagraph did not write")
    b.add_argument("--print-graph", action="store_true", help="print one row per DAG node")
    b.add_argument(
        "--fold-bn",
        action="store_true",
        help="generated source gets fold_bn(): BatchNorm folded into convs, channels_last",
    )
    b.add_argument("--no-diagram", action="store_true", help="write no .dot, .svg or .html")
    add_timeout_option(b)
