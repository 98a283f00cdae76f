"""Spec -> DAG: the paper's equations as graph constructions.

Paper: `Deep Layer Aggregation` (Yu, Wang, Darrell), https://arxiv.org/abs/1707.06484

* :func:`_ida` — eq. 1, iterative deep aggregation: the levels are chained, each level's root
  aggregating the (downsampled) output of the level before.
* :func:`_hda_tree` — eq. 2, hierarchical deep aggregation: a tree of depth ``n`` whose root
  aggregates the two leaf blocks and every earlier subtree output.
* :func:`_level_root` — eq. 5, the two combined: a level's root also takes S(x), the 2x2-max-pooled
  level input.
* :func:`_aggregation_node` — eq. 3 (eq. 4 when residual), the node N itself.

The structure mirrors the official ``Tree`` (and timm's ``DlaTree``) exactly, so node ids are the
module paths of those implementations and aggregation inputs are concatenated in their order
``[x2, x1, S(x)?, ancestors' x1 …]``; each aggregation edge also records its ``paper_port``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from . import graph as ir
from .load import load_spec
from .spec import ConvLevel, DlaUpHead, Spec, TreeLevel

__all__ = ["compile_spec", "level_output"]


@dataclass
class _Builder:
    spec: Spec
    g: nx.DiGraph = field(default_factory=nx.DiGraph)
    modules: list[str] = field(default_factory=list)  # registration order of the layout
    prefix: str = ""  # module path prefix of backbone nodes (the official DLASeg nests "base.")

    def add(self, node: str, op: str, ins: list[str], register: bool = True, **attrs: Any) -> str:
        assert node not in self.g, f"duplicate node id {node}"
        if op in ir.MODULE_OPS:
            attrs.setdefault("module", self.prefix + node)
        self.g.add_node(node, op=op, index=self.g.number_of_nodes(), **attrs)
        for port, u in enumerate(ins):
            self.g.add_edge(u, node, port=port)
        if register and op in ir.MODULE_OPS:
            self.modules.append(node)
        return node

    def out(self, n: str) -> int:
        return self.g.nodes[n]["out_channels"]

    def red(self, n: str) -> int:
        return self.g.nodes[n]["reduction"]


def compile_spec(spec: Spec | dict[str, Any] | str) -> nx.DiGraph:
    """Compile a spec into the DAG IR and lint it.

    Returns a ``networkx.DiGraph`` whose graph attributes hold ``spec`` (the spec as data),
    ``name``, ``input``/``output`` node ids, ``modules`` (registration order) and ``unused``
    (checkpoint-only nodes). Deterministic: compiling twice gives identical graphs.

    Raises:
        SpecError: if the spec is invalid.
        GraphError: if the compiled graph breaks an IR invariant (a dlagraph bug, or a registered
            block type whose contract is inconsistent).

    Example:
        >>> g = compile_spec("specs/dla36.yaml")
        >>> from dlagraph.graph import inputs
        >>> inputs(g, "level3.tree2.root")
        ['level3.tree2.tree2', 'level3.tree2.tree1', 'level3.downsample', 'level3.tree1.root']
    """
    spec = load_spec(spec)
    b = _Builder(spec)
    b.g.graph.update(
        ir_version=ir.IR_VERSION, name=spec.name, layout=spec.layout, spec=spec.to_dict()
    )
    x = b.add(
        "input", "input", [], out_channels=spec.in_channels, reduction=1, spec_path="in_channels"
    )
    if isinstance(spec.head, DlaUpHead):
        b.prefix = "base."  # the official DLASeg holds the classification network as `base`
    x = _conv_levels(b, x)
    x = _ida(b, x)
    b.prefix = ""
    from .heads import build_head  # heads build on this module's builder

    build_head(b, x)
    b.g.graph.update(input="input", output="output", modules=b.modules)
    b.g.graph["unused"] = ir.check(b.g)
    return b.g


def _conv_levels(b: _Builder, x: str) -> str:
    """Paper Levels 1-2: the 7x7 stem at full resolution, then 3x3 conv layers (Level 2 strides)."""
    l0, l1 = b.spec.levels[0], b.spec.levels[1]
    assert isinstance(l0, ConvLevel) and isinstance(l1, ConvLevel)
    x = b.add(
        "base_layer",
        "conv",
        [x],
        in_channels=b.out(x),
        out_channels=l0.channels,
        kernel_size=7,
        convs=1,
        stride=1,
        reduction=1,
        spec_path="levels[0]",
        level=1,
        role="stem",
    )
    x = b.add(
        "level0",
        "conv",
        [x],
        in_channels=l0.channels,
        out_channels=l0.channels,
        kernel_size=3,
        convs=l0.convs,
        stride=1,
        reduction=1,
        spec_path="levels[0]",
        level=1,
        role="level",
    )
    return b.add(
        "level1",
        "conv",
        [x],
        in_channels=l0.channels,
        out_channels=l1.channels,
        kernel_size=3,
        convs=l1.convs,
        stride=2,
        reduction=2,
        spec_path="levels[1]",
        level=2,
        role="level",
    )


def _ida(b: _Builder, x: str) -> str:
    """Eq. 1, I(x1, …, xn) = I(N(x1, x2), x3, …, xn): each tree level's root aggregates the
    previous level's output (through S(x), eq. 5), so the levels form one iterative chain."""
    for i in range(2, len(b.spec.levels)):
        x = _level_root(b, i, x)
    return x


def _level_root(b: _Builder, i: int, x: str) -> str:
    """Eq. 5, T^r_n(x) = N(S(x), R^n_{n-1}(x), …, R^n_1(x), L^n_1(x), L^n_2(x)): the HDA tree of
    ``levels[i]`` at stride 2 (or dilated at stride 1 in a segmentation network, §4.2), whose root
    also takes S(x) when the level aggregates its input."""
    lvl = b.spec.levels[i]
    assert isinstance(lvl, TreeLevel)
    dilation = b.spec.dilated.get(i, 1)
    return _hda_tree(
        b,
        f"level{i}",
        lvl.depth,
        b.out(x),
        lvl.channels,
        1 if dilation > 1 else 2,
        x,
        level_root=b.spec.aggregates_input(i),
        root_dim=0,
        children=[],
        spec_path=f"levels[{i}]",
        level=i + 1,
        dilation=dilation,
    )


def _hda_tree(
    b: _Builder,
    path: str,
    n: int,
    cin: int,
    cout: int,
    stride: int,
    x: str,
    *,
    level_root: bool,
    root_dim: int,
    children: list[tuple[str, str]],
    spec_path: str,
    level: int,
    dilation: int = 1,
) -> str:
    """Eq. 2, T_n(x) = N(R^n_{n-1}(x), …, R^n_1(x), L^n_1(x), L^n_2(x)), with
    L^n_2 = B(L^n_1), L^n_1 = B(R^n_1) and R^n_m = T_m(R^n_{m+1}) (Fig. 1f: the parent node is merged
    into its left child, so only depth-1 subtrees own a root).

    ``children`` carries the extra root arguments of the official ``Tree``: S(x) (role ``S``) and
    the outputs of the enclosing subtrees (role ``R``), shallow first. Returns the tree's output.
    """
    if root_dim == 0:
        root_dim = 2 * cout
    if level_root:
        root_dim += cin
    official = b.spec.layout == "official"
    common = {"spec_path": spec_path, "level": level}
    bottom = x
    pool = f"{path}.downsample"
    if stride > 1:
        bottom = b.add(
            pool,
            "downsample",
            [x],
            register=not official,
            in_channels=cin,
            out_channels=cin,
            stride=stride,
            reduction=b.red(x) * stride,
            role="S",
            **common,
        )
    shortcut, project = bottom, None
    if cin != cout and (n == 1 or official):
        # timm builds `project` only where it is used (n == 1); the official code also builds it
        # at n > 1, where Tree.forward computes it and the child Tree ignores it: dead parameters
        # that the official checkpoints hold, kept (and marked) in the official layout.
        project = b.add(
            f"{path}.project",
            "project",
            [bottom],
            register=not official,
            in_channels=cin,
            out_channels=cout,
            reduction=b.red(bottom),
            unused=n > 1,
            role="P",
            **common,
        )
        if n == 1:
            shortcut = project
    if stride > 1 and not level_root and n > 1:
        b.g.nodes[bottom]["unused"] = True  # pooled only for a projection that nothing reads
    if level_root:
        children = children + [("S", bottom)]
    if n == 1:
        x1 = b.add(
            f"{path}.tree1",
            "block",
            [x] if shortcut == x else [x, shortcut],
            **_block_attrs(b, cin, cout, stride, x, dilation),
            role="L1",
            **common,
        )
        x2 = b.add(
            f"{path}.tree2",
            "block",
            [x1],
            **_block_attrs(b, cout, cout, 1, x1, dilation),
            role="L2",
            **common,
        )
        out = _aggregation_node(
            b, f"{path}.root", [("L2", x2), ("L1", x1)] + children, root_dim, cout, **common
        )
    else:
        x1 = _hda_tree(
            b,
            f"{path}.tree1",
            n - 1,
            cin,
            cout,
            stride,
            x,
            level_root=False,
            root_dim=0,
            children=[],
            dilation=dilation,
            **common,
        )
        out = _hda_tree(
            b,
            f"{path}.tree2",
            n - 1,
            cout,
            cout,
            1,
            x1,
            level_root=False,
            root_dim=root_dim + cout,
            children=children + [("R", x1)],
            dilation=dilation,
            **common,
        )
    if official:  # the official Tree registers tree1, tree2, root, then downsample and project
        b.modules += [m for m in (pool if stride > 1 else None, project) if m is not None]
    return out


def _block_attrs(
    b: _Builder, cin: int, cout: int, stride: int, x: str, dilation: int
) -> dict[str, Any]:
    return {
        "block": b.spec.block.type,
        "block_options": b.spec.block.options.model_dump(mode="json"),
        "in_channels": cin,
        "out_channels": cout,
        "stride": stride,
        "dilation": dilation,
        "reduction": b.red(x) * stride,
        "eq": "eq2",
    }


def _aggregation_node(
    b: _Builder, node: str, args: list[tuple[str, str]], root_dim: int, cout: int, **common: Any
) -> str:
    """Eq. 3, N(x1, …, xn) = σ(BN(Σ W_i x_i + b)), or eq. 4 (+ the block output L2) when residual.

    ``args`` are ``(role, node)`` in the official concat order ``[L2, L1, S?, R…]``; the paper's
    order ``[S?, R…, L1, L2]`` is stored on each edge as ``paper_port``.
    """
    roles = [r for r, _ in args]
    ins = [u for _, u in args]
    has_s = "S" in roles
    agg = b.spec.aggregation
    n = b.add(
        node,
        "aggregate",
        ins,
        in_channels=root_dim,
        out_channels=cout,
        kernel_size=agg.kernel_size,
        residual=agg.residual,
        reduction=b.red(ins[0]),
        eq="eq5" if has_s else "eq2",
        role="N",
        arg_roles=roles,
        **common,
    )
    paper = sorted(range(len(args)), key=lambda p: _paper_rank(roles[p], p))
    for rank, p in enumerate(paper):
        b.g.edges[ins[p], n]["paper_port"] = rank
    return n


def _paper_rank(role: str, port: int) -> tuple[int, int]:
    # eq. 5 argument order: S(x), then R_{n-1} … R_1 (the official list holds them shallow first,
    # i.e. R_{n-1} first, so port order is kept), then L1, then L2.
    return ({"S": 0, "R": 1, "L1": 2, "L2": 3}[role], port)


def level_output(b: _Builder, i: int) -> str:
    """The node whose output is ``levels[i]``'s output (index 0 is Level 1, as timm's level0)."""
    if i < 2:
        return f"level{i}"
    prefix = f"level{i}."
    return next(
        n
        for n in reversed(list(b.g.nodes))
        if n.startswith(prefix) and b.g.nodes[n]["op"] == "aggregate"
    )
