"""The backbone: the paper's equations as graph constructions.

Paper: `Deep Layer Aggregation` (Yu, Wang, Darrell), https://arxiv.org/abs/1707.06484

* :func:`ida` -- eq. 1, iterative deep aggregation: the levels are chained, each level's root
  aggregating the (downsampled) output of the level before.
* :func:`hda_tree` -- eq. 2, hierarchical deep aggregation: a tree of depth ``n`` whose root
  aggregates the two leaf blocks and every earlier subtree output.
* :func:`level_root` -- eq. 5, the two combined: a level's root also takes S(x), the 2x2-max-pooled
  level input.
* :func:`aggregation_node` -- eq. 3 (eq. 4 when residual), the node N itself.

The structure mirrors the official ``Tree`` (and timm's ``DlaTree``) exactly, so node ids are the
module paths of those implementations and aggregation inputs are concatenated in their order
``[x2, x1, S(x)?, ancestors' x1 …]``; each aggregation edge also records its ``paper_port``.
"""

from __future__ import annotations

from typing import Any

from ..spec import ConvLevel, TreeLevel
from .builder import Builder
from .ops import BlockRec, ConvRec
from .roles import AGGREGATION, L1, L2, PROJECTION, STEM, SX

__all__ = ["conv_levels", "ida", "level_root", "hda_tree", "aggregation_node"]


def conv_levels(b: Builder, x: str) -> str:
    """Paper Levels 1-2: the 7x7 stem at full resolution, then 3x3 conv layers (Level 2 strides)."""
    l0, l1 = b.spec.levels[0], b.spec.levels[1]
    if not (isinstance(l0, ConvLevel) and isinstance(l1, ConvLevel)):
        raise TypeError("Levels 1 and 2 must be conv levels (the spec validator guarantees it)")
    steps = [  # node, level index, in, out, kernel, convs, stride
        ("base_layer", 0, b.spec.in_channels, l0.channels, 7, 1, 1),
        ("level0", 0, l0.channels, l0.channels, 3, l0.convs, 1),
        ("level1", 1, l0.channels, l1.channels, 3, l1.convs, 2),
    ]
    for node, i, cin, cout, k, convs, stride in steps:
        rec = ConvRec(in_channels=cin, out_channels=cout, kernel_size=k, convs=convs, stride=stride)
        stem = node == "base_layer"  # its input width is the generated class's `in_chans`
        x = b.add(
            node,
            "conv",
            [x],
            dict(rec),
            symbols={"in_channels": "in_chans"} if stem else None,
            spec_path=f"levels[{i}]",
            level=i + 1,
            role=STEM if stem else "level",
        )
        b.level_outputs[i] = x
    return x


def ida(b: Builder, x: str) -> str:
    """Eq. 1, I(x1, …, xn) = I(N(x1, x2), x3, …, xn): each tree level's root aggregates the
    previous level's output (through S(x), eq. 5), so the levels form one iterative chain."""
    for i in range(2, len(b.spec.levels)):
        x = level_root(b, i, x)
        b.level_outputs[i] = x
    return x


def level_root(b: Builder, i: int, x: str) -> str:
    """Eq. 5, T^r_n(x) = N(S(x), R^n_{n-1}(x), …, R^n_1(x), L^n_1(x), L^n_2(x)): the HDA tree of
    ``levels[i]`` at stride 2 (or dilated at stride 1 in a segmentation network, §4.2), whose root
    also takes S(x) when the level aggregates its input."""
    lvl = b.spec.levels[i]
    if not isinstance(lvl, TreeLevel):
        raise TypeError("Levels 3 and up must be tree levels (the spec validator guarantees it)")
    dilation = b.dilations.get(i, 1)
    return hda_tree(
        b,
        f"level{i}",
        lvl.depth,
        b.channels(x),
        lvl.channels,
        1 if dilation > 1 else 2,
        x,
        level_root=b.spec.aggregates_input(i),
        root_dim=0,
        children=[],
        meta={"spec_path": f"levels[{i}]", "level": i + 1},
        dilation=dilation,
    )


def hda_tree(
    b: Builder,
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
    meta: dict[str, Any],
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
    bottom = x
    pool = f"{path}.downsample"
    if stride > 1:
        # S(x) when the level root aggregates it; otherwise only the shortcut's pooled input
        bottom = b.add(
            pool,
            "downsample",
            [x],
            {"channels": cin, "stride": stride},
            register=not official,
            role=SX if level_root else "pool",
            **meta,
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
            {"in_channels": cin, "out_channels": cout},
            register=not official,
            unused=n > 1,
            role=PROJECTION,
            **meta,
        )
        if n == 1:
            shortcut = project
    if cin != cout and n > 1:  # in either layout: what official checkpoints hold and never use
        b.official_only.append(b.prefix + f"{path}.project")
    if stride > 1 and not level_root and n > 1:
        b.mark_unused(bottom)  # pooled only for a projection that nothing reads
    if level_root:
        children = children + [(SX, bottom)]
    if n == 1:
        spec = b.spec.block
        block = {"block": spec.type, "options": spec.options.model_dump(mode="json")}
        rec1 = BlockRec(
            **block, in_channels=cin, out_channels=cout, stride=stride, dilation=dilation
        )
        rec2 = BlockRec(**block, in_channels=cout, out_channels=cout, stride=1, dilation=dilation)
        ins = [x] if shortcut == x else [x, shortcut]
        x1 = b.add(f"{path}.tree1", "block", ins, dict(rec1), role=L1, eq="eq2", **meta)
        x2 = b.add(f"{path}.tree2", "block", [x1], dict(rec2), role=L2, eq="eq2", **meta)
        out = aggregation_node(
            b, f"{path}.root", [(L2, x2), (L1, x1)] + children, root_dim, cout, meta
        )
    else:
        sub = {"level_root": False, "meta": meta, "dilation": dilation}
        x1 = hda_tree(
            b, f"{path}.tree1", n - 1, cin, cout, stride, x, root_dim=0, children=[], **sub
        )
        out = hda_tree(
            b,
            f"{path}.tree2",
            n - 1,
            cout,
            cout,
            1,
            x1,
            root_dim=root_dim + cout,
            children=children + [("R", x1)],
            **sub,
        )
    if official:  # the official Tree registers tree1, tree2, root, then downsample and project
        b.modules += [m for m in (pool if stride > 1 else None, project) if m is not None]
    return out


def aggregation_node(
    b: Builder,
    node: str,
    args: list[tuple[str, str]],
    root_dim: int,
    cout: int,
    meta: dict[str, Any],
) -> str:
    """Eq. 3, N(x1, …, xn) = σ(BN(Σ W_i x_i + b)), or eq. 4 (+ the block output L2) when residual.

    ``args`` are ``(role, node)`` in the official concat order ``[L2, L1, S?, R…]``; the paper's
    order ``[S?, R…, L1, L2]`` is stored on each edge as ``paper_port``.
    """
    roles = [r for r, _ in args]
    ins = [u for _, u in args]
    agg = b.spec.aggregation
    n = b.add(
        node,
        "aggregate",
        ins,
        {
            "in_channels": root_dim,
            "out_channels": cout,
            "kernel_size": agg.kernel_size,
            "residual": agg.residual,
        },
        eq="eq5" if SX in roles else "eq2",
        role=AGGREGATION,
        arg_roles=roles,
        **meta,
    )
    paper = sorted(range(len(args)), key=lambda p: _paper_rank(roles[p], p))
    for rank, p in enumerate(paper):
        b.g.edges[ins[p], n]["paper_port"] = rank
    return n


def _paper_rank(role: str, port: int) -> tuple[int, int]:
    # eq. 5 argument order: S(x), then R_{n-1} … R_1 (the official list holds them shallow first,
    # i.e. R_{n-1} first, so port order is kept), then L1, then L2.
    return ({SX: 0, "R": 1, L1: 2, L2: 3}[role], port)
