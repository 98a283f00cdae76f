"""Property tests of the DAG: the compiler's guarantees hold for every spec, not only the presets.

Run longer with ``pytest tests/test_properties.py --hypothesis-profile=thorough``.
"""

from __future__ import annotations

import math
from typing import Any

import networkx as nx
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from dlagraph import build_module, compile_spec, generate_source, load_spec, spec_to_yaml, summarize
from dlagraph.base.names import var_name
from dlagraph.ir.analysis import aggregations_to_root
from dlagraph.ir.graph import channels, inputs, paper_inputs, topo_order
from dlagraph.ir.state import state_shapes

from .helpers import exec_generated
from .strategies import valid_specs, with_test_block

torch = pytest.importorskip("torch")


def tree_levels(spec: dict[str, Any]) -> range:
    return range(2, len(spec["levels"]))


@given(valid_specs())
def test_acyclic(spec: dict) -> None:
    with with_test_block():
        assert nx.is_directed_acyclic_graph(compile_spec(spec))


@given(valid_specs())
def test_one_input_and_one_output(spec: dict) -> None:
    with with_test_block():
        g = compile_spec(spec)
    assert [n for n in g if g.in_degree(n) == 0] == ["input"]
    sinks = [n for n in g if g.out_degree(n) == 0 and not g.nodes[n]["layout"].get("unused")]
    assert sinks == ["output"]


@given(valid_specs())
def test_reachability_except_reported_unused(spec: dict) -> None:
    with with_test_block():
        g = compile_spec(spec)
    from_input = nx.descendants(g, "input") | {"input"}
    to_output = nx.ancestors(g, "output") | {"output"}
    assert from_input == set(g)
    assert set(g) - to_output == set(g.graph["unused"])
    for n in g.graph["unused"]:  # only projections and the pools that feed nothing else
        assert g.nodes[n]["op"] in ("project", "downsample")


@given(valid_specs())
def test_ports_contiguous_from_zero(spec: dict) -> None:
    with with_test_block():
        g = compile_spec(spec)
    for n in g:
        ports = sorted(p for _, _, p in g.in_edges(n, data="port"))
        assert ports == list(range(g.in_degree(n)))


@given(valid_specs())
def test_channel_conservation_at_aggregation_nodes(spec: dict) -> None:
    with with_test_block():
        g = compile_spec(spec)
    for n, a in g.nodes(data=True):
        if a["op"] == "aggregate":
            assert a["rec"]["in_channels"] == sum(channels(g, u) for u in inputs(g, n))


@given(valid_specs())
def test_tree_of_depth_d_has_2_to_the_d_blocks(spec: dict) -> None:
    with with_test_block():
        g = compile_spec(spec)
    for i in tree_levels(spec):
        if f"level{i}.tree1" not in g and not any(n.startswith(f"level{i}.") for n in g):
            continue  # pruned by a features head
        blocks = [n for n in g if n.startswith(f"level{i}.") and g.nodes[n]["op"] == "block"]
        assert len(blocks) == 2 ** spec["levels"][i]["depth"]


@given(valid_specs())
def test_aggregation_depth_grows_with_log2_of_blocks(spec: dict) -> None:
    """Paper §3: the shortest path from any block to its level's root passes at most `depth`
    aggregation nodes (and the first block needs all of them): log2 of the number of blocks."""
    with with_test_block():
        g = compile_spec(spec)
    for i in tree_levels(spec):
        blocks = [n for n in g if n.startswith(f"level{i}.") and g.nodes[n]["op"] == "block"]
        if blocks:
            assert aggregations_to_root(g, i) == math.log2(len(blocks))


def _blocks_upstream(g: nx.DiGraph, n: str, prefix: str) -> int:
    up = nx.ancestors(g, n) | {n}
    return sum(1 for u in up if u.startswith(prefix) and g.nodes[u]["op"] == "block")


@given(valid_specs())
def test_eq5_at_every_level_root(spec: dict) -> None:
    """The root of level i takes, in eq. 5 order: S(x) (when the level aggregates its input),
    then R_{n-1} … R_1 (subtrees of 2^{n-1} … 2 blocks, each fed by the one before), then L1,
    then L2 = B(L1)."""
    with with_test_block():
        g = compile_spec(spec)
    for i in tree_levels(spec):
        prefix = f"level{i}."
        roots = [
            n for n in topo_order(g) if n.startswith(prefix) and g.nodes[n]["op"] == "aggregate"
        ]
        if not roots:
            continue
        args = paper_inputs(g, roots[-1])
        depth = spec["levels"][i]["depth"]
        agg_in = spec["levels"][i].get("aggregate_input", i > 2)
        if agg_in:
            s = args.pop(0)
            assert g.nodes[s]["op"] == "downsample" and s == f"level{i}.downsample"
            prev = inputs(g, s)[0]
            assert not prev.startswith(prefix)  # S(x) pools the previous level's output
        rs, (l1, l2) = args[:-2], args[-2:]
        # R_m = T_m(R_{m+1}): a subtree of 2^m blocks fed by the previous ones
        expected = [sum(2**k for k in range(m, depth)) for m in range(depth - 1, 0, -1)]
        assert [_blocks_upstream(g, r, prefix) for r in rs] == expected
        assert all(g.nodes[r]["op"] == "aggregate" for r in rs)
        assert g.nodes[l1]["op"] == g.nodes[l2]["op"] == "block"
        assert inputs(g, l2)[0] == l1


@pytest.mark.slow  # traces 25 random networks: about 13 s
@given(valid_specs(max_tree_levels=6, max_depth=3))
def test_static_shapes_equal_traced_shapes(spec: dict) -> None:
    from torch.fx.passes.shape_prop import ShapeProp

    with with_test_block():
        stride = compile_spec(spec).graph["total_stride"]
        size = (stride, 2 * stride)
        static = {ni.name: ni.shape for ni in summarize(spec, size).nodes}
        with torch.device("meta"):
            model = build_module(spec, init=False)
        ShapeProp(model).propagate(torch.empty(1, spec["in_channels"], *size, device="meta"))
    for node in model.graph.nodes:
        # fx nodes are named like the DAG's variables: level3.tree1.root -> level3_tree1_root
        dag = next((n for n in static if var_name(n) == node.name), None)
        if dag is not None and node.op != "output" and "tensor_meta" in node.meta:
            assert tuple(node.meta["tensor_meta"].shape[1:]) == static[dag], dag


@given(valid_specs())
def test_static_params_equal_torch(spec: dict) -> None:
    with with_test_block():
        with torch.device("meta"):
            model = build_module(spec, init=False)
        assert summarize(spec, (2 ** (len(spec["levels"]) - 1),) * 2).params == sum(
            p.numel() for p in model.parameters()
        )


@given(valid_specs())
def test_ir_state_shapes_equal_torch_state_dict_as_ordered_lists(spec: dict) -> None:
    with with_test_block():
        with torch.device("meta"):
            model = build_module(spec, init=False)
        want = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
        assert list(state_shapes(compile_spec(spec)).items()) == want


@given(valid_specs(max_tree_levels=3, max_depth=2))
def test_interpreter_and_generated_code_are_bit_identical(spec: dict) -> None:
    with with_test_block():
        cls = exec_generated(generate_source(spec))
        torch.manual_seed(0)
        gen = cls().eval()
        torch.manual_seed(0)
        ref = build_module(spec).eval()
    assert list(gen.state_dict()) == list(ref.state_dict())
    assert all(
        torch.equal(a, b)
        for a, b in zip(gen.state_dict().values(), ref.state_dict().values(), strict=True)
    )
    stride = 2 ** (len(spec["levels"]) - 1)
    x = torch.randn(1, spec["in_channels"], stride, stride)
    with torch.no_grad():
        a, b = gen(x), ref(x)
    flat = {list: list, dict: lambda d: list(d.values())}
    for u, v in zip(flat.get(type(a), lambda t: [t])(a), flat.get(type(b), lambda t: [t])(b),
                    strict=True):  # fmt: skip
        assert torch.equal(u, v)
    assert type(a) is type(b) and (not isinstance(a, dict) or list(a) == list(b))


@given(valid_specs())
def test_yaml_round_trip_is_identity(spec: dict) -> None:
    with with_test_block():
        s = load_spec(spec)
        assert load_spec(yaml.safe_load(spec_to_yaml(s))) == s


@given(valid_specs())
def test_compiling_is_deterministic(spec: dict) -> None:
    with with_test_block():
        a, b = compile_spec(spec), compile_spec(spec)
    assert nx.node_link_data(a, edges="e") == nx.node_link_data(b, edges="e")
    assert topo_order(a) == topo_order(b) and a.graph["modules"] == b.graph["modules"]


@given(
    spec=valid_specs(max_tree_levels=5, max_depth=3),
    st_index=st.integers(0, 100),
    new_depth=st.integers(1, 3),
)
def test_changing_one_level_keeps_other_levels_parameter_names(
    spec: dict, st_index: int, new_depth: int
) -> None:
    import copy

    i = 2 + st_index % (len(spec["levels"]) - 2)
    other = copy.deepcopy(spec)
    other["levels"][i]["depth"] = new_depth
    other["levels"][i]["channels"] *= 2  # also changes the shapes, not the names, of level i+1

    def names(s: dict) -> dict[str, set[str]]:
        with with_test_block():
            with torch.device("meta"):
                m = build_module(s, init=False)
        out: dict[str, set[str]] = {}
        for k in m.state_dict():
            k = k.removeprefix("base.")  # a DLASeg's backbone
            out.setdefault(k.split(".")[0], set()).add(k)
        return out

    a, b = names(spec), names(other)
    for top in set(a) | set(b):
        if top != f"level{i}":
            # no renames; a shortcut projection of the next level may appear or vanish when its
            # input width now equals (or no longer equals) its output width
            diff = a.get(top, set()) ^ b.get(top, set())
            assert all(top == f"level{i + 1}" and ".project." in k for k in diff), (top, diff)


class ChainOptions(__import__("pydantic").BaseModel):
    model_config = __import__("pydantic").ConfigDict(extra="forbid", frozen=True)
    kinds: str = "cb"


class Chain(torch.nn.Module):
    """A block of any conv/BN sequence (``kinds``: ``c`` a 3x3 conv, ``b`` a BatchNorm), then the
    shortcut and a ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, kinds: str = "cb"):
        super().__init__()
        layers, c, s = [], in_channels, stride
        for k in kinds:
            if k == "c":
                layers.append(torch.nn.Conv2d(c, out_channels, 3, s, 1, bias=False))
                c, s = out_channels, 1
            else:
                layers.append(torch.nn.BatchNorm2d(c))
        self.layers = torch.nn.Sequential(*layers)
        self.relu = torch.nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        out = self.layers(x)
        out += shortcut
        return self.relu(out)


def _chain_layers(cin: int, cout: int, s: int, d: int, o: Any) -> list:
    from dlagraph import Layer

    out, c, stride, div = [], cin, s, 1
    for i, k in enumerate(o.kinds):
        if k == "c":
            out.append(Layer(f"layers.{i}", "conv", c, cout, 3, stride=stride, out_div=s))
            c, stride, div = cout, 1, s
        else:
            out.append(Layer(f"layers.{i}", "bn", c, c, out_div=div))
    return out


@settings(max_examples=12, deadline=None)  # each valid example builds both backends
@given(
    name=st.one_of(
        st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True),  # mostly valid, some taken
        st.text(max_size=12),  # anything: newlines, capitals, keywords, the empty name
    ),
    kinds=st.from_regex(r"b?c[cb]{0,3}", fullmatch=True),
)
def test_registered_names_and_layer_lists_are_refused_or_equal_in_both_backends(
    name: str, kinds: str
) -> None:
    """A registration is refused in one line, or the block runs the same in the interpreter and
    the generated code, with static parameter counts and memory figures for it."""
    import dlagraph

    try:
        dlagraph.register_block(name, options=ChainOptions, layers=_chain_layers)(Chain)
    except dlagraph.RegistryError as e:
        assert len(str(e).splitlines()) == 1
        return
    try:
        spec = {**load_spec("dla_tiny_digits").to_dict(), "block": {"type": name, "kinds": kinds}}
        torch.manual_seed(0)
        model = build_module(spec).eval()
        generated = exec_generated(generate_source(spec))().eval()
        generated.load_state_dict(model.state_dict())
        x = torch.randn(2, 1, 32, 32)
        with torch.no_grad():
            assert torch.equal(model(x), generated(x))
        assert summarize(spec).params == sum(p.numel() for p in model.parameters())
        assert dlagraph.activation_memory(spec).inference_peak > 0
    finally:
        dlagraph.unregister_block(name)
