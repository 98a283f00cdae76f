"""Static analysis of a compiled DLA: exact parameters, MACs and shapes, without torch.

Shapes follow PyTorch's formulas op by op (conv: floor((H + 2p - d(k-1) - 1) / s) + 1, 2x2 max pool:
floor((H - 2) / 2) + 1), so an input size the network cannot take is reported here, before a tensor
exists, instead of as a size mismatch deep inside ``forward`` (official code: any side that is not a
multiple of 32). MACs count the multiply-accumulates of every conv and of the classifier.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from .blocks import Layer, get_block_type
from .compile import compile_spec
from .errors import SpecError
from .graph import inputs, topo_order
from .spec import Spec

__all__ = [
    "summarize",
    "Summary",
    "NodeInfo",
    "LevelInfo",
    "node_layers",
    "feature_info",
    "total_stride",
    "default_input_size",
    "static_params",
]


@dataclass(frozen=True)
class NodeInfo:
    name: str
    op: str
    in_channels: int
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
    aggregation_depth: int  # max over blocks of aggregation nodes on the shortest path to the root
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
    aggregation_depth: dict[
        str, int
    ]  # block -> aggregation nodes on its longest path to the output
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
        right = {2, 3, 4, 5, 6, 7}
        out = []
        for j, r in enumerate(rows):
            cells = [
                c.rjust(w) if i in right else c.ljust(w)
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


def _conv(
    name: str, cin: int, cout: int, k: int, s: int = 1, bias: bool = False, div: int = 1
) -> Layer:
    return Layer(name, "conv", cin, cout, k, s, bias=bias, out_div=div)


def node_layers(a: dict[str, Any]) -> list[Layer]:
    """The parametrised layers a DAG node holds (names relative to the node's module)."""
    op = a["op"]
    cin, cout = a.get("in_channels", 0), a.get("out_channels", 0)
    if op == "conv":
        out: list[Layer] = []
        for j in range(a["convs"]):
            s = a["stride"] if j == 0 else 1
            out += [
                _conv(
                    str(3 * j), cin if j == 0 else cout, cout, a["kernel_size"], s, div=a["stride"]
                ),
                Layer(str(3 * j + 1), "bn", cout, cout, out_div=a["stride"]),
            ]
        return out
    if op == "project":
        return [_conv("0", cin, cout, 1), Layer("1", "bn", cout, cout)]
    if op == "aggregate":
        if a.get("sequential"):  # the official IDAUp node: Sequential(conv, BN, ReLU)
            return [_conv("0", cin, cout, a["kernel_size"]), Layer("1", "bn", cout, cout)]
        return [_conv("conv", cin, cout, a["kernel_size"]), Layer("bn", "bn", cout, cout)]
    if op == "classifier":
        return [_conv("0" if a.get("sequential") else "", cin, cout, 1, bias=True)]
    if op == "upsample":  # depthwise: one (2f x 2f) kernel per channel
        return [Layer("", "conv", cin, cout, 2 * a["factor"], a["factor"], groups=cout)]
    if op == "block":
        bt = get_block_type(a["block"])
        opts = bt.options.model_validate(a["block_options"])
        layers = bt.static_layers(cin, cout, a["stride"], a.get("dilation", 1), opts)
        if layers is None:
            return [_Opaque(cin, cout, a["block"], a["stride"], a.get("dilation", 1), opts)]
        return layers
    return []


def static_params(g: nx.DiGraph) -> int:
    """The exact parameter count of a compiled network, without shapes (no input size needed)."""
    return sum(layer.params for _, a in g.nodes(data=True) for layer in node_layers(a))


class _Opaque(Layer):
    """A registered block without a ``layers`` contract: counted on a meta-device instance."""

    def __init__(
        self, cin: int, cout: int, name: str, stride: int, dilation: int, opts: Any
    ) -> None:
        super().__init__(name, "conv", cin, cout)
        object.__setattr__(self, "_args", (name, cin, cout, stride, dilation, opts))

    @property
    def params(self) -> int:
        from .nn.interpret import count_block_params  # the only torch use, by the block's choice

        return count_block_params(*self._args)  # type: ignore[attr-defined]

    def macs(self, h: int, w: int) -> int:
        return 0  # unknown without a layer description


def _out_hw(g: nx.DiGraph, n: str, hw: dict[str, tuple[int, int]]) -> tuple[int, int]:
    a = g.nodes[n]
    ins = inputs(g, n)
    op = a["op"]
    h, w = hw[ins[0]] if ins else (0, 0)
    if op == "conv":
        k, s = a["kernel_size"], a["stride"]
        p = k // 2
        return (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    if op == "downsample":
        s = a["stride"]
        return (h - s) // s + 1, (w - s) // s + 1
    if op == "block":
        s = a["stride"]
        return (h - 1) // s + 1, (w - 1) // s + 1
    if op == "pool":
        return 1, 1
    if op == "upsample":  # ConvTranspose2d(k=2f, s=f, p=f//2): (H-1)f - 2(f//2) + 2f
        f = a["factor"]
        return (h - 1) * f - 2 * (f // 2) + 2 * f, (w - 1) * f - 2 * (f // 2) + 2 * f
    if op == "interpolate":
        return h * a["scale"], w * a["scale"]
    return h, w


def _check_join(
    g: nx.DiGraph, n: str, hw: dict[str, tuple[int, int]], size: tuple[int, int], stride: int
) -> None:
    a = g.nodes[n]
    ins = inputs(g, n)
    if a["op"] == "aggregate":
        shapes = {u: hw[u] for u in ins}
    elif a["op"] == "block" and len(ins) == 2:
        shapes = {n: hw[n], ins[1]: hw[ins[1]]}
    else:
        return
    if len(set(shapes.values())) > 1:
        detail = ", ".join(f"{u} {h}x{w}" for u, (h, w) in shapes.items())
        raise SpecError(
            f"input size {size[0]}x{size[1]} does not fit this network: at {n} the joined "
            f"feature maps differ ({detail}); use sides that are multiples of {stride}"
        )


def summarize(
    spec: Spec | str | dict[str, Any] | nx.DiGraph, input_size: tuple[int, int] | None = None
) -> Summary:
    """Exact parameter count, MACs, per-node shapes and a per-level table, computed statically.

    ``input_size`` defaults to :func:`default_input_size` (224x224 for the paper's networks).

    Raises:
        SpecError: for an invalid spec, or an ``input_size`` the network cannot take.

    Example:
        >>> s = summarize("specs/dla104_s.yaml")
        >>> f"{s.params:,}"
        '26,309,272'
    """
    g = spec if isinstance(spec, nx.DiGraph) else compile_spec(spec)
    sp = g.graph["spec"]
    if input_size is None:
        input_size = default_input_size(g)
    stride = total_stride(g)  # dilated levels do not stride
    h, w = input_size
    if h <= 0 or w <= 0 or h % stride or w % stride:
        raise SpecError(
            f"input size {h}x{w}: both sides must be positive multiples of the total stride "
            f"{stride} (2x2 max pooling floors where the strided convs round up, so the shortcut "
            f"and the block output would differ)"
        )
    hw: dict[str, tuple[int, int]] = {}
    nodes: list[NodeInfo] = []
    unused = set(g.graph.get("unused", []))
    for n in topo_order(g):
        a = g.nodes[n]
        hw[n] = (h, w) if a["op"] == "input" else _out_hw(g, n, hw)
        _check_join(g, n, hw, input_size, stride)
        ins = inputs(g, n)
        hin, win = hw[ins[0]] if ins else (h, w)
        layers = node_layers(a)
        params = sum(layer.params for layer in layers)
        macs = sum(layer.macs(hin, win) for layer in layers)
        if a["op"] == "upsample":  # a transposed conv scatters each input pixel over k x k
            macs = hin * win * a["out_channels"] * (2 * a["factor"]) ** 2
        if a["op"] == "output":
            shape: tuple[int, ...] = ()
        elif a["op"] == "classifier" and a.get("flatten"):
            shape = (a["out_channels"],)
        else:
            shape = (a["out_channels"], *hw[n])
        nodes.append(
            NodeInfo(
                n,
                a["op"],
                a.get("in_channels", 0),
                a.get("out_channels", 0),
                shape,
                params,
                macs,
                n in unused,
            )
        )
    info = {ni.name: ni for ni in nodes}
    out_ins = inputs(g, "output")
    output_shape: Any = [info[u].shape for u in out_ins]
    if g.graph.get("output_kind") == "tensor":
        output_shape = output_shape[0]
    agg_depth = _aggregation_depth(g)
    return Summary(
        name=sp["name"],
        paper_name=sp.get("paper_name"),
        layout=sp["layout"],
        input_size=(h, w),
        params=sum(ni.params for ni in nodes),
        macs=sum(ni.macs for ni in nodes if not ni.unused),
        output_shape=output_shape,
        nodes=nodes,
        levels=_levels(g, nodes),
        aggregation_nodes=sum(1 for ni in nodes if ni.op == "aggregate"),
        aggregation_depth={n: d for n, d in agg_depth.items() if g.nodes[n]["op"] == "block"},
        unused=sorted(unused, key=lambda n: g.nodes[n]["index"]),
        unused_params=sum(ni.params for ni in nodes if ni.unused),
        feature_info=feature_info(g, input_size),
    )


def total_stride(g: nx.DiGraph) -> int:
    """The input side divisor: the deepest resolution reduction the network reaches."""
    return max(a["reduction"] for _, a in g.nodes(data=True))


def default_input_size(g: nx.DiGraph, at_least: int = 224) -> tuple[int, int]:
    """The smallest square input of at least ``at_least`` pixels the network takes (sides a
    multiple of the total stride): 224 for the paper's networks, 256 with a sixth tree level."""
    s = total_stride(g)
    side = -(-at_least // s) * s
    return side, side


def _aggregation_depth(
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
            depth[s] + (g.nodes[s]["op"] == "aggregate")
            for s in g.successors(n)
            if s in depth and (within is None or s.startswith(within))
        ]
        if options:
            depth[n] = pick(options)
    return depth


def level_aggregation_depth(g: nx.DiGraph, i: int) -> int:
    """The paper's HDA depth claim (§3): the shortest path from any block of ``levels[i]`` to the
    level's root passes at most ``depth`` aggregation nodes, i.e. log2 of the number of blocks.
    Returns the largest such shortest-path count over the level's blocks."""
    prefix = f"level{i}."
    root = [n for n in topo_order(g) if n.startswith(prefix) and g.nodes[n]["op"] == "aggregate"][
        -1
    ]
    d = _aggregation_depth(g, root, within=prefix, pick=min)
    return max(d[b] for b in d if g.nodes[b]["op"] == "block")


def _levels(g: nx.DiGraph, nodes: list[NodeInfo]) -> list[LevelInfo]:
    sp = g.graph["spec"]
    groups: dict[str, list[NodeInfo]] = {}
    for ni in nodes:
        if ni.op in ("input", "output"):
            continue
        groups.setdefault(ni.name.split(".")[0], []).append(ni)
    out = []
    for mod, members in groups.items():
        a = g.nodes[members[0].name]
        level = a.get("level")
        depth = None
        if mod.startswith("level") and int(mod[5:]) >= 2:
            depth = sp["levels"][int(mod[5:])]["depth"]
        last = ([m for m in members if not m.unused] or members)[-1]
        out.append(
            LevelInfo(
                module=mod,
                paper_level=f"Level {level}" if level else "head",
                spec_path=a.get("spec_path", ""),
                channels=last.out_channels,
                depth=depth,
                blocks=sum(m.op == "block" for m in members),
                aggregations=sum(m.op == "aggregate" for m in members),
                aggregation_depth=level_aggregation_depth(g, int(mod[5:])) if depth else 0,
                params=sum(m.params for m in members),
                macs=sum(m.macs for m in members if not m.unused),
                shape=last.shape,
            )
        )
    return out


def feature_info(g: nx.DiGraph, input_size: tuple[int, int] | None = None) -> list[dict[str, Any]]:
    """timm-style ``feature_info`` of every level: channels, reduction and module name."""
    out = []
    for i in range(len(g.graph["spec"]["levels"])):
        mod = f"level{i}"
        nodes = [n for n in g.nodes if n == mod or n.startswith(mod + ".")]
        if not nodes:
            continue
        last = max(
            nodes,
            key=lambda n: g.nodes[n]["index"] if g.nodes[n]["op"] in ("aggregate", "conv") else -1,
        )
        a = g.nodes[last]
        out.append(
            {
                "index": i,
                "num_chs": a["out_channels"],
                "reduction": a["reduction"],
                "module": mod,
                "node": last,
            }
        )
    return out
