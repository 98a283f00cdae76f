"""Static analysis of a compiled DLA: exact parameters, MACs and shapes, without torch.

Every number comes from the op definitions (:mod:`dlagraph.ir.ops`): shapes follow PyTorch's
formulas op by op (conv: floor((H + 2p - k) / s) + 1, 2x2 max pool: floor((H - 2) / 2) + 1), so an
input size the network cannot take is reported here, before a tensor exists, instead of as a size
mismatch deep inside ``forward`` (official code: any side that is not a multiple of 32). MACs count
the multiply-accumulates of every conv, transposed conv and classifier.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx

from ..base.errors import InputSizeError
from ..spec import Spec
from .compile import compile_spec
from .graph import feature_info, inputs, is_aggregation, is_block, op, topo_order, view
from .ops import NodeView

__all__ = [
    "summarize",
    "Summary",
    "NodeInfo",
    "LevelInfo",
    "default_input_size",
    "static_params",
    "aggregations_to_root",
    "default_cfg",
    "live_peak",
]


@dataclass(frozen=True)
class NodeInfo:
    name: str
    op: str
    out_channels: int
    shape: tuple[int, ...]  # output shape without the batch dimension
    params: int
    macs: int
    unused: bool = False


@dataclass(frozen=True)
class LevelInfo:
    module: str  # top-level module (base_layer, level0 … level5, fc)
    paper_level: str  # "Level 1" … or "head"
    spec_path: str
    channels: int
    depth: int | None
    blocks: int
    aggregations: int
    aggregations_to_root: int  # max over blocks of N on the *shortest* path to the level root
    params: int
    macs: int
    shape: tuple[int, ...]


@dataclass
class Summary:
    """Static facts about a network; ``params`` is the exact parameter count."""

    name: str
    paper_name: str | None
    layout: str
    input_size: tuple[int, int]
    params: int
    macs: int
    output_shape: tuple[int, ...] | list[tuple[int, ...]]
    nodes: list[NodeInfo]
    levels: list[LevelInfo]
    aggregation_nodes: int
    aggregations_to_output: dict[str, int]  # block -> N on its *longest* path to the output
    unused: list[str]
    unused_params: int
    feature_info: list[dict[str, Any]] = field(default_factory=list)

    def __getitem__(self, key: str) -> Any:  # mapping-style access: summary["params"]
        return getattr(self, key)

    def table(self) -> str:
        """The per-level table ``dlagraph build`` prints."""
        head = (
            "module",
            "paper",
            "channels",
            "depth",
            "blocks",
            "aggs",
            "params",
            "MACs",
            "output",
        )
        rows = [head] + [
            (
                lv.module,
                lv.paper_level,
                str(lv.channels),
                "" if lv.depth is None else str(lv.depth),
                str(lv.blocks) if lv.blocks else "",
                str(lv.aggregations) if lv.aggregations else "",
                f"{lv.params:,}",
                _si(lv.macs),
                "x".join(map(str, lv.shape)),
            )
            for lv in self.levels
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        out = []
        for j, r in enumerate(rows):
            cells = [
                c.rjust(w) if 2 <= i <= 7 else c.ljust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            ]
            out.append("  ".join(cells).rstrip())
            if j == 0:
                out.append("  ".join("-" * w for w in widths))
        return "\n".join(out)


def _si(n: int) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


def static_params(g: nx.DiGraph) -> int:
    """The exact parameter count of a compiled network, without shapes (no input size needed)."""
    return sum(op(g, n).params(NodeView(n, a["rec"])) for n, a in g.nodes(data=True))


def checked_size(size: Any) -> tuple[int, int]:
    """``(height, width)`` as two Python ints from 1 to MAX_INPUT_SIDE (numpy's ints too; not
    bools, floats or strings), else one line saying what was given."""
    import operator

    from ..base.errors import safe_repr
    from ..base.limits import MAX_INPUT_SIDE

    def bad() -> InputSizeError:
        return InputSizeError(
            f"input size: give (height, width), two whole numbers from 1 to {MAX_INPUT_SIDE:,} "
            f"(got {safe_repr(size)})"
        )

    if not isinstance(size, tuple | list) or len(size) != 2:
        raise bad()
    try:
        if any(isinstance(v, bool) for v in size):
            raise TypeError
        h, w = (operator.index(v) for v in size)
    except TypeError:
        raise bad() from None
    if not (1 <= h <= MAX_INPUT_SIDE and 1 <= w <= MAX_INPUT_SIDE):
        raise bad()
    return h, w


def default_input_size(g: nx.DiGraph, at_least: int = 224) -> tuple[int, int]:
    """The spec's own ``input_size`` where it gives one; else the smallest square input of at
    least ``at_least`` pixels the network takes (sides a multiple of the total stride): 224 for
    the paper's networks, 256 with a sixth tree level."""
    if g.graph.get("input_size"):
        return g.graph["input_size"]
    s = g.graph["total_stride"]
    side = -(-at_least // s) * s
    return side, side


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def default_cfg(g: nx.DiGraph) -> dict[str, Any]:
    """timm's ``pretrained_cfg`` of a network, as timm's dla configs give it (no weights URL): the
    spec's input size (default: the smallest square from 224), ImageNet statistics, crop 0.875,
    bilinear."""
    stride = g.graph["total_stride"]
    h, w = default_input_size(g)
    c = g.graph["in_channels"]
    return {
        "url": "",
        "num_classes": g.graph["num_classes"] or 0,
        "input_size": (c, h, w),
        "pool_size": (h // stride, w // stride),
        "crop_pct": 0.875,
        "interpolation": "bilinear",
        "mean": IMAGENET_MEAN if c == 3 else (0.5,) * c,
        "std": IMAGENET_STD if c == 3 else (0.5,) * c,
        "first_conv": "base_layer.0",
        "classifier": "fc",
    }


def summarize(
    spec: Spec | str | Path | dict[str, Any] | nx.DiGraph,
    input_size: tuple[int, int] | None = None,
    paths: bool = True,
) -> Summary:
    """Exact parameter count, MACs, per-node shapes and a per-level table, computed statically.

    ``input_size`` defaults to :func:`default_input_size` (224x224 for the paper's networks).
    ``paths=False`` skips the aggregation-path counts (``aggregations_to_output``, the levels'
    ``aggregations_to_root``, left empty and 0): a search costing thousands of designs needs
    only the counts and shapes.

    Raises:
        SpecError: for an invalid spec.
        InputSizeError: for an ``input_size`` the network cannot take.

    Example:
        >>> s = summarize("dla104_s")  # a preset name, or a spec file, mapping or compiled graph
        >>> f"{s.params:,}", s.input_size  # timm's dla102x has 26,309,272 parameters
        ('26,309,272', (224, 224))
    """
    g = spec if isinstance(spec, nx.DiGraph) else compile_spec(spec)
    stride = g.graph["total_stride"]
    h, w = default_input_size(g) if input_size is None else checked_size(input_size)
    if h <= 0 or w <= 0 or h % stride or w % stride:
        raise InputSizeError(
            f"input size {h}x{w}: both sides must be positive multiples of the total stride "
            f"{stride} (2x2 max pooling floors where the strided convs round up, so the shortcut "
            f"and the block output would differ)"
        )
    hw: dict[str, tuple[int, int]] = {}
    nodes: list[NodeInfo] = []
    unused = set(g.graph["unused"])
    for n in topo_order(g):
        a, definition = g.nodes[n], op(g, n)
        v = view(g, n, [hw[u] for u in inputs(g, n)] or [(h, w)])
        shape = definition.shape(v)
        hw[n] = tuple(shape[1:3]) if len(shape) == 3 else (1, 1)  # type: ignore[assignment]
        problem = definition.join_problem(v, shape)
        if problem is not None:
            raise InputSizeError(
                f"input size {h}x{w} does not fit this network: at {n} {problem}; use sides "
                f"that are multiples of {stride}"
            )
        nodes.append(
            NodeInfo(
                n,
                a["op"],
                definition.channels(v),
                shape,
                definition.params(v),
                definition.macs(v),
                n in unused,
            )
        )
    info = {ni.name: ni for ni in nodes}
    output_shape: Any = [info[u].shape for u in inputs(g, g.graph["output"])]
    if len(output_shape) == 1 and g.nodes[g.graph["output"]]["rec"]["kind"] == "tensor":
        output_shape = output_shape[0]
    to_output = _aggregations_on_paths(g) if paths else {}
    return Summary(
        name=g.graph["name"],
        paper_name=g.graph["paper_name"],
        layout=g.graph["layout"],
        input_size=(h, w),
        params=sum(ni.params for ni in nodes),
        macs=sum(ni.macs for ni in nodes if not ni.unused),
        output_shape=output_shape,
        nodes=nodes,
        levels=_levels(g, nodes, paths),
        aggregation_nodes=sum(1 for n in g if is_aggregation(g.nodes[n]["meta"])),
        aggregations_to_output={n: d for n, d in to_output.items() if is_block(g.nodes[n]["meta"])},
        unused=sorted(unused, key=lambda n: g.nodes[n]["index"]),
        unused_params=sum(ni.params for ni in nodes if ni.unused),
        feature_info=feature_info(g),
    )


def live_peak(g: nx.DiGraph, summary: Summary) -> int:
    """The most node-output elements alive at once in one image's forward, when each output is
    freed after its last reader (the generated forward's order): a lower bound of inference
    activation memory, which the layers inside a node (a block's intermediate maps) add to."""
    size = {ni.name: math.prod(ni.shape) for ni in summary.nodes if not ni.unused}
    order = [n for n in topo_order(g) if n in size]
    last = {}
    for i, n in enumerate(order):
        for u in inputs(g, n):
            last[u] = i
    live = peak = 0
    for i, n in enumerate(order):
        live += size[n]
        peak = max(peak, live)
        live -= sum(size[u] for u in set(inputs(g, n)) if last.get(u) == i)
    return peak


def _aggregations_on_paths(
    g: nx.DiGraph, target: str | None = None, within: str | None = None, pick: Any = max
) -> dict[str, int]:
    """Aggregation nodes on the longest (``pick=max``) or shortest (``pick=min``) path from each
    node to ``target`` (default: the output), optionally through nodes under ``within`` only."""
    target = target or g.graph["output"]
    depth: dict[str, int] = {}
    for n in reversed(topo_order(g)):
        if n == target:
            depth[n] = 0
            continue
        options = [
            depth[s] + is_aggregation(g.nodes[s]["meta"])
            for s in g.successors(n)
            if s in depth and (within is None or s.startswith(within))
        ]
        if options:
            depth[n] = pick(options)
    return depth


def aggregations_to_root(g: nx.DiGraph, i: int) -> int:
    """The paper's HDA depth claim (§3): the shortest path from any block of ``levels[i]`` to the
    level's root passes at most ``depth`` aggregation nodes, i.e. log2 of the number of blocks.
    Returns the largest such shortest-path count over the level's blocks."""
    lv = next(lv for lv in g.graph["levels"] if lv["index"] == i)
    prefix = lv["module"] + "."
    d = _aggregations_on_paths(g, lv["output"], within=prefix, pick=min)
    return max(d[b] for b in d if is_block(g.nodes[b]["meta"]))


def _levels(g: nx.DiGraph, nodes: list[NodeInfo], paths: bool = True) -> list[LevelInfo]:
    facts = {lv["module"]: lv for lv in g.graph["levels"]}
    groups: dict[str, list[NodeInfo]] = {}
    for ni in nodes:
        if ni.name not in (g.graph["input"], g.graph["output"]):
            groups.setdefault(ni.name.split(".")[0], []).append(ni)
    out = []
    for mod, members in groups.items():
        meta = g.nodes[members[0].name]["meta"]
        lv = facts.get(mod)
        tree = lv is not None and lv["kind"] == "tree"
        last = ([m for m in members if not m.unused] or members)[-1]
        out.append(
            LevelInfo(
                module=mod,
                paper_level=f"Level {meta['level']}" if "level" in meta else "head",
                spec_path=meta.get("spec_path", ""),
                channels=last.out_channels,
                depth=lv["depth"] if tree else None,
                blocks=sum(is_block(g.nodes[m.name]["meta"]) for m in members),
                aggregations=sum(is_aggregation(g.nodes[m.name]["meta"]) for m in members),
                aggregations_to_root=aggregations_to_root(g, lv["index"]) if tree and paths else 0,
                params=sum(m.params for m in members),
                macs=sum(m.macs for m in members if not m.unused),
                shape=last.shape,
            )
        )
    return out
