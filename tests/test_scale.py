"""`scale` (compound width/depth scaling) and `dlagraph build --set`: the rounding rule, checked
against its statement in docs/spec.md, and the scaled networks' counts against torch's."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import dlagraph
from dlagraph.blocks import get_block_type

from .test_cli import run

PRESETS = ["dla36", "dla60_res2next", "dla104_s", "dla48_b_s", "dla_tiny_digits"]


def scaled(name: str, **scale: float) -> dlagraph.Spec:
    return dlagraph.load_spec({**dlagraph.load_spec(name).to_dict(), "scale": scale})


def test_halving_dla36_halves_every_width_and_rounds_depths_half_up() -> None:
    base, half = dlagraph.load_spec("dla36"), scaled("dla36", width=0.5, depth=0.75)
    assert [lv.channels for lv in half.levels] == [lv.channels // 2 for lv in base.levels]
    # DLA-34's HDA depths are 1, 2, 2, 1 (timm: levels 1, 1, 1, 2, 2, 1); times 0.75: 0.75 -> 1,
    # 1.5 -> 2 (half up), 1.5 -> 2, 0.75 -> 1; times 0.5: all 1 (at least 1)
    assert [getattr(lv, "depth", None) for lv in base.levels] == [None, None, 1, 2, 2, 1]
    assert [getattr(lv, "depth", None) for lv in half.levels] == [None, None, 1, 2, 2, 1]
    quarter = scaled("dla36", depth=0.5)
    assert [getattr(lv, "depth", None) for lv in quarter.levels] == [None, None, 1, 1, 1, 1]
    assert half.paper_name is None and half.reference is None and half.scale is None
    assert scaled("dla36").reference == base.reference  # the identity keeps the claim


@given(
    name=st.sampled_from(PRESETS),
    width=st.floats(0.1, 2.0),
    depth=st.floats(0.1, 2.0),
    divisor=st.sampled_from([1, 4, 8, 16]),
)
def test_scaled_levels_follow_the_documented_rule(
    name: str, width: float, depth: float, divisor: int
) -> None:
    base = dlagraph.load_spec(name)
    spec = scaled(name, width=width, depth=depth, divisor=divisor)
    bt = get_block_type(base.block.type)
    for old, new in zip(base.levels, spec.levels, strict=True):
        c = new.channels
        nearest = max(divisor, math.floor(old.channels * width / divisor + 0.5) * divisor)
        if nearest < 0.9 * old.channels * width:
            nearest += divisor
        assert c % divisor == 0 and c >= nearest
        if hasattr(old, "depth"):
            assert not bt.check(c, base.block.options)  # the block accepts it
            # ... and it is the first multiple from `nearest` that the block accepts
            assert all(bt.check(x, base.block.options) for x in range(nearest, c, divisor))
            assert new.depth == max(1, math.floor(old.depth * depth + 0.5))
        else:
            assert c == nearest and new.convs == old.convs
    again = dlagraph.load_spec(spec.to_dict())  # the scaled spec reads back as itself
    assert again == spec


@pytest.mark.parametrize("name", ["dla36", "dla104_s", "dla60_res2next"])
def test_scaled_networks_count_what_torch_counts(name: str) -> None:
    spec = scaled(name, width=0.3, depth=0.6)
    with torch.device("meta"):
        model = dlagraph.build_module(spec)
    assert dlagraph.summarize(spec).params == sum(p.numel() for p in model.parameters())


def test_build_set_prints_the_scaled_costs_and_refuses_bad_paths(tmp_path) -> None:
    r = run("build", "dla36", "--set", "scale.width=0.5", "--no-diagram", "-o", str(tmp_path / "a"))
    assert r.returncode == 0, r.stderr
    params = dlagraph.summarize(scaled("dla36", width=0.5)).params
    assert f"parameters: {params:,}" in r.stdout
    # named for its scale, so that the files of variants do not collide
    assert r.stdout.startswith("dla36_w0_5: layout timm")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        "dla36_w0_5.graph.json",
        "dla36_w0_5.py",
    ]
    named = run("build", "dla36", "--set", "scale.width=0.5", "--set", "name=half",
                "--no-diagram", "-o", str(tmp_path / "n"))  # fmt: skip
    assert named.stdout.startswith("half: layout timm")
    bad = run(
        "build",
        "dla36",
        "--set",
        "scale.knob=2",
        "--set",
        "scale.width=0",
        "-o",
        str(tmp_path / "b"),
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    lines = bad.stderr.strip().splitlines()
    assert any("scale.knob: unknown key" in x for x in lines)
    assert any("scale.width: must be greater than 0" in x for x in lines)
    assert not (tmp_path / "b").exists()
    for arg in ("levels.9.depth=2", "scale", "=3"):
        r = run("build", "dla36", "--set", arg, "-o", str(tmp_path / "c"))
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_a_scale_no_divisor_step_can_fix_is_one_error_at_scale() -> None:
    @dlagraph.register_block("odd_only", check=lambda c, o: [] if c % 2 else ["must be odd"])
    class OddOnly(torch.nn.Module):  # no multiple of an even divisor is ever right
        def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
            super().__init__()

    data = {
        "name": "odd",
        "block": {"type": "odd_only"},
        "levels": [{"channels": 8}, {"channels": 16}, {"channels": 33, "depth": 1}],
    }
    try:
        dlagraph.load_spec(data)  # as written, it is valid
        with pytest.raises(dlagraph.SpecError) as e:
            dlagraph.load_spec({**data, "scale": {"width": 0.5}})
        assert str(e.value).splitlines() == [
            "<spec>: scale: the scaled network fails at levels[2].channels: must be odd"
        ]
    finally:
        dlagraph.unregister_block("odd_only")


def test_build_refuses_nan_and_infinite_scales_and_batches_out_of_range(tmp_path) -> None:
    for args in (
        ["--set", "scale.width=.nan"],
        ["--set", "scale.depth=.inf"],
        ["--batch", "0"],
        ["--batch", "1000001"],
        ["--batch", "-3"],
    ):
        r = run("build", "dla36", *args, "-o", str(tmp_path / "o"))
        assert r.returncode == 2 and "Traceback" not in r.stderr, (args, r.stderr)
        assert not (tmp_path / "o").exists()
