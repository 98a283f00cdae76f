"""The compiler: the paper's equations on small hand-checked DAGs, the lint, determinism."""

from __future__ import annotations

import copy

import networkx as nx
import pytest

from dlagraph import GraphError, compile_spec
from dlagraph.ir.graph import check, inputs, paper_inputs, topo_order

from .conftest import SPEC_PATHS, spec_ids
from .helpers import TINY


def test_eq2_depth_one_tree() -> None:
    """T_1(x) = N(L1, L2): two blocks and a root; the first block strides and gets the projected
    pooled input as its shortcut, the root concatenates [x2, x1] (official order)."""
    g = compile_spec(TINY)
    assert inputs(g, "level2.tree1") == ["level1", "level2.project"]
    assert inputs(g, "level2.project") == ["level2.downsample"]
    assert inputs(g, "level2.downsample") == ["level1"]
    assert inputs(g, "level2.tree2") == ["level2.tree1"]  # identity shortcut
    assert inputs(g, "level2.root") == ["level2.tree2", "level2.tree1"]
    assert paper_inputs(g, "level2.root") == ["level2.tree1", "level2.tree2"]
    assert g.nodes["level2.root"]["rec"]["in_channels"] == 64
    assert (
        g.nodes["level2.root"]["meta"]["eq"] == "eq2"
    )  # Level 3 does not aggregate S(x) by default
    assert (
        g.nodes["level2.tree1"]["rec"]["stride"] == 2
        and g.nodes["level2.tree2"]["rec"]["stride"] == 1
    )


def test_eq5_depth_two_level_root() -> None:
    """T^r_2(x) = N(S(x), R_1, L1, L2) at the second subtree's root; the first subtree's root is
    N(L1, L2) of eq. 2. Official concat order is [L2, L1, S(x), R_1]."""
    g = compile_spec(TINY)
    assert inputs(g, "level3.tree1.root") == ["level3.tree1.tree2", "level3.tree1.tree1"]
    assert inputs(g, "level3.tree2.root") == [
        "level3.tree2.tree2",
        "level3.tree2.tree1",
        "level3.downsample",
        "level3.tree1.root",
    ]
    assert paper_inputs(g, "level3.tree2.root") == [
        "level3.downsample",
        "level3.tree1.root",
        "level3.tree2.tree1",
        "level3.tree2.tree2",
    ]
    # R_1 feeds the next subtree's first block (Fig. 1e), not the level input
    assert inputs(g, "level3.tree2.tree1") == ["level3.tree1.root"]
    assert g.nodes["level3.tree2.root"]["rec"]["in_channels"] == 64 + 64 + 32 + 64
    assert g.nodes["level3.tree2.root"]["meta"]["eq"] == "eq5"
    assert g.nodes["level3.downsample"]["meta"]["role"] == "S"


def test_eq5_switch_adds_or_removes_s() -> None:
    spec = copy.deepcopy(TINY)
    spec["levels"][3]["aggregate_input"] = False
    spec["levels"][2]["aggregate_input"] = True
    g = compile_spec(spec)
    assert "level3.downsample" not in inputs(g, "level3.tree2.root")
    assert inputs(g, "level2.root") == ["level2.tree2", "level2.tree1", "level2.downsample"]
    assert g.nodes["level2.root"]["rec"]["in_channels"] == 32 + 32 + 16


def test_eq1_levels_form_an_iterative_chain() -> None:
    """I(x1, …, xn) = I(N(x1, x2), x3, …): each level consumes the previous level's root."""
    g = compile_spec(TINY)
    assert inputs(g, "level3.downsample") == ["level2.root"]
    assert inputs(g, "level3.tree1.tree1")[0] == "level2.root"
    assert inputs(g, "global_pool") == ["level3.tree2.root"]


def test_depth_three_root_order() -> None:
    """Depth 3: the last root takes [L2, L1, S, R_2, R_1] (ancestors shallow first)."""
    spec = copy.deepcopy(TINY)
    spec["levels"][3]["depth"] = 3
    g = compile_spec(spec)
    assert inputs(g, "level3.tree2.tree2.root") == [
        "level3.tree2.tree2.tree2",
        "level3.tree2.tree2.tree1",
        "level3.downsample",
        "level3.tree1.tree2.root",
        "level3.tree2.tree1.root",
    ]
    assert paper_inputs(g, "level3.tree2.tree2.root")[:3] == [
        "level3.downsample",
        "level3.tree1.tree2.root",
        "level3.tree2.tree1.root",
    ]


# root in→out channels measured on the official models (ground truth §3)
MEASURED_ROOTS = {
    "dla36": {
        "level2.root": 128,
        "level3.tree1.root": 256,
        "level3.tree2.root": 448,
        "level4.tree1.root": 512,
        "level4.tree2.root": 896,
        "level5.root": 1280,
    },
    "dla62_b": {
        "level2.root": 256,
        "level3.tree1.root": 512,
        "level3.tree2.root": 896,
        "level4.tree1.tree1.root": 1024,
        "level4.tree1.tree2.root": 1536,
        "level4.tree2.tree1.root": 1024,
        "level4.tree2.tree2.root": 2304,
        "level5.root": 2560,
    },
    "dla169": {
        "level2.tree1.root": 256,
        "level2.tree2.root": 384,
        "level4.tree2.tree2.tree2.tree2.root": 3328,
    },
}


@pytest.mark.parametrize("name", sorted(MEASURED_ROOTS))
def test_root_channels_match_the_official_models(name: str) -> None:
    g = compile_spec(f"specs/{name}.yaml")
    got = {n: g.nodes[n]["rec"]["in_channels"] for n in MEASURED_ROOTS[name]}
    assert got == MEASURED_ROOTS[name]


def test_official_layout_keeps_and_marks_dead_projections() -> None:
    spec = copy.deepcopy(TINY)
    spec["layout"] = "official"
    g = compile_spec(spec)
    assert g.graph["unused"] == ["level3.project"]
    assert g.nodes["level3.project"]["layout"]["unused"] and g.out_degree("level3.project") == 0
    timm = compile_spec(TINY)
    assert "level3.project" not in timm
    # official registration order: tree1, tree2, root, then downsample, project
    mods = g.graph["modules"]
    assert (
        mods.index("level2.root") < mods.index("level2.downsample") < mods.index("level2.project")
    )
    assert timm.graph["modules"].index("level2.project") < timm.graph["modules"].index(
        "level2.tree1"
    )


@pytest.mark.parametrize("path", SPEC_PATHS, ids=spec_ids())
def test_compiling_is_deterministic(path: object) -> None:
    a, b = compile_spec(path), compile_spec(path)
    assert nx.node_link_data(a, edges="e") == nx.node_link_data(b, edges="e")
    assert list(a.nodes) == list(b.nodes) and topo_order(a) == topo_order(b)


# ---- the lint ----------------------------------------------------------------------------------


@pytest.fixture
def g() -> nx.DiGraph:
    return compile_spec(TINY)


def test_lint_accepts_compiled_graphs(g: nx.DiGraph) -> None:
    assert check(g) == []


def test_dead_pool_of_a_deep_first_subtree_is_reported() -> None:
    """At depth 3, level3.tree1 (depth 2, strided, not a level root) pools its input for a
    projection that timm does not build: the pool is computed by the reference and never read."""
    spec = copy.deepcopy(TINY)
    spec["levels"][3]["depth"] = 3
    assert compile_spec(spec).graph["unused"] == ["level3.tree1.downsample"]


def test_lint_cycle(g: nx.DiGraph) -> None:
    g.add_edge("level3.tree2.root", "level2.tree1", port=2)
    with pytest.raises(GraphError, match="cycle"):
        check(g)


def test_lint_port_gap(g: nx.DiGraph) -> None:
    g.edges["level2.tree1", "level2.root"]["port"] = 5
    with pytest.raises(GraphError, match=r"node 'level2.root' \(from levels\[2\]\): `port`s"):
        check(g)


def test_lint_channel_sum(g: nx.DiGraph) -> None:
    g.nodes["level3.tree2.root"]["rec"]["in_channels"] = 100
    with pytest.raises(
        GraphError,
        match=r"'level3.tree2.root' \(from levels\[3\]\): expects 100 "
        r"input channels, its inputs .* provide 224",
    ):
        check(g)


def test_lint_unreachable_and_dead(g: nx.DiGraph) -> None:
    g.add_node(
        "stray",
        op="project",
        index=999,
        rec={"in_channels": 1, "out_channels": 1},
        meta={"reduction": 1},
        layout={"module": "stray"},
    )
    g.graph["modules"].append("stray")
    with pytest.raises(GraphError, match="'stray': not reachable from the input"):
        check(g)


def test_lint_unused_must_not_reach_output(g: nx.DiGraph) -> None:
    g.nodes["level2.project"]["layout"]["unused"] = True
    with pytest.raises(
        GraphError, match="'level2.project' \\(from levels\\[2\\]\\): marked unused"
    ):
        check(g)


def test_lint_unknown_op_and_two_outputs(g: nx.DiGraph) -> None:
    g.nodes["level2.tree1"]["op"] = "magic"
    with pytest.raises(GraphError, match="unknown op 'magic'"):
        check(g)
    g.nodes["level2.tree1"]["op"] = "block"
    g.add_node(
        "out2",
        op="output",
        index=1000,
        rec={"kind": "tensor", "names": []},
        meta={"reduction": 1},
        layout={},
    )
    g.add_edge("fc", "out2", port=0)
    with pytest.raises(GraphError, match="exactly one input and one output"):
        check(g)


def test_lint_shortcut_shape(g: nx.DiGraph) -> None:
    g.nodes["level2.project"]["rec"]["out_channels"] = 8
    with pytest.raises(GraphError, match="shortcut 'level2.project' is 8 ch"):
        check(g)
