"""hypothesis strategies: valid specs over the whole spec space, and hostile mutations of them."""

from __future__ import annotations

import contextlib
import keyword
import re
from collections.abc import Iterator
from typing import Any

import torch
from hypothesis import strategies as st
from torch import nn

import dlagraph
from dlagraph import Layer
from dlagraph.spec.schema import SHADOWED_MODULES

TEST_BLOCK = "dw_test"


class DepthwiseSeparable(nn.Module):
    """A registered block for the property tests: depthwise 3x3 (strided), pointwise 1x1."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(
            in_channels, in_channels, 3, stride, 1, groups=in_channels, bias=False
        )
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv2 = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)

    @staticmethod
    def layers(cin: int, cout: int, stride: int, dilation: int, options: Any) -> list[Layer]:
        return [
            Layer("conv1", "conv", cin, cin, 3, stride, cin, out_div=stride),
            Layer("bn1", "bn", cin, cin, out_div=stride),
            Layer("conv2", "conv", cin, cout, 1, out_div=stride),
            Layer("bn2", "bn", cout, cout, out_div=stride),
        ]

    def forward(self, x: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(out + shortcut)


@contextlib.contextmanager
def with_test_block() -> Iterator[None]:
    """The registered test block, for the duration of one example."""
    if TEST_BLOCK not in dlagraph.registered_blocks():
        dlagraph.register_block(TEST_BLOCK)(DepthwiseSeparable)
    try:
        yield
    finally:
        dlagraph.unregister_block(TEST_BLOCK)


BLOCKS: list[tuple[dict[str, Any], list[int]]] = [
    ({"type": "basic"}, [4, 8, 16, 24]),
    ({"type": "bottleneck"}, [4, 8, 16]),
    ({"type": "split", "cardinality": 4}, [32, 64]),
    ({"type": "split", "cardinality": 32}, [32, 64]),
    ({"type": "res2net", "scale": 2, "cardinality": 2, "base_width": 16}, [32, 64]),
    ({"type": "res2net", "scale": 4, "cardinality": 1, "base_width": 32}, [32]),
    ({"type": TEST_BLOCK}, [4, 8, 12]),
]


@st.composite
def valid_specs(draw: st.DrawFn, max_tree_levels: int = 8, max_depth: int = 4) -> dict[str, Any]:
    """Specs over every block type (a registered one included), 1..8 tree levels of depth 1..4,
    both aggregation options, both layouts and every head."""
    block, widths = draw(st.sampled_from(BLOCKS))
    n = draw(st.integers(1, max_tree_levels))
    depths = draw(st.lists(st.integers(1, max_depth), min_size=n, max_size=n))
    chans = draw(st.lists(st.sampled_from(widths), min_size=n, max_size=n))
    levels: list[dict[str, Any]] = [
        {"channels": draw(st.sampled_from([4, 8])), "convs": draw(st.integers(1, 2))},
        {"channels": draw(st.sampled_from([8, 16])), "convs": draw(st.integers(1, 2))},
    ]
    for d, c in zip(depths, chans, strict=True):
        lvl: dict[str, Any] = {"channels": c, "depth": d}
        agg = draw(st.sampled_from([None, True, False]))
        if agg is not None:
            lvl["aggregate_input"] = agg
        levels.append(lvl)
    head: dict[str, Any]
    kind = draw(st.sampled_from(["classifier", "classifier", "features", "features", "centernet"]))
    if kind == "centernet" and len(levels) >= 3:  # DLAUp from level log2(down_ratio) on
        ratio = draw(st.sampled_from([r for r in (2, 4, 8, 16) if r.bit_length() - 1 < n + 1]))
        first = ratio.bit_length() - 1
        head = {
            "type": "centernet",
            "heads": {"hm": draw(st.integers(1, 3)), "wh": 2},
            "head_conv": draw(st.sampled_from([0, 8])),
            "down_ratio": ratio,
            "last_level": draw(st.integers(first + 1, n + 1)),
            "node": draw(st.sampled_from(["dcn", "conv"])),
        }
    elif kind != "features":
        head = {"type": "classifier", "num_classes": draw(st.integers(1, 10))}
        if draw(st.booleans()):
            head["dropout"] = 0.1
    else:
        idx = draw(st.lists(st.integers(0, len(levels) - 1), min_size=1, max_size=4, unique=True))
        head = {"type": "features", "out_indices": sorted(idx)}
    return {
        "name": draw(
            st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True).filter(
                lambda s: (
                    not keyword.iskeyword(s)
                    and not keyword.issoftkeyword(s)
                    and s not in SHADOWED_MODULES
                )
            )
        ),
        "block": block,
        "levels": levels,
        "aggregation": {
            "kernel_size": draw(st.sampled_from([1, 3])),
            "residual": draw(st.booleans()),
        },
        "head": head,
        "layout": draw(st.sampled_from(["timm", "official"])),
        "in_channels": draw(st.integers(1, 4)),
    }


HOSTILE_STRINGS = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "\n",
        '"""',
        "'''",
        "\\",
        "${HOME}",
        "{{ 7*7 }}",
        "{% raw %}",
        "__import__('os').system('true')",
        "a\nimport os",
        "; rm -rf /",
        "Ω≈ç√",
        "\u202e",
        "x" * 5000,
        "-1",
        "1e309",
        "nan",
        "!!python/object:os.system",
        "<script>",
        "level3.tree1",
    ]
)
JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True),
    HOSTILE_STRINGS,
    st.lists(st.integers(-3, 3), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated_specs(draw: st.DrawFn) -> dict[str, Any]:
    """A valid spec with 1-3 random mutations: a value replaced by junk, a key deleted, an
    unknown key added, or a size made absurd."""
    import copy

    spec = copy.deepcopy(draw(valid_specs(max_tree_levels=4, max_depth=3)))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(spec)
        path = draw(st.sampled_from(paths))
        parent: Any = spec
        for k in path[:-1]:
            parent = parent[k]
        kind = draw(st.sampled_from(["junk", "delete", "extra", "absurd"]))
        key = path[-1]
        if kind == "junk":
            parent[key] = draw(JUNK)
        elif kind == "delete" and isinstance(parent, dict):
            del parent[key]
        elif kind == "extra" and isinstance(parent, dict):
            parent[draw(HOSTILE_STRINGS)] = draw(JUNK)
        elif kind == "absurd":
            parent[key] = draw(st.sampled_from([0, -1, 2**31, 10**18, 40, 4096]))
    return spec


@st.composite
def hostile_yaml(draw: st.DrawFn) -> str:
    """A valid spec as YAML text, then edited the way careless or hostile users edit files:
    dashed or cased keys, deep nesting, integers of thousands of digits, merge keys and anchors."""
    import yaml

    spec = draw(valid_specs(max_tree_levels=3, max_depth=2))
    lines = yaml.safe_dump(spec, sort_keys=False).splitlines()
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["dashed", "nest", "bigint", "merge", "alias"]))
        if kind == "dashed":
            key = draw(
                st.sampled_from(["num-classes", "Paper-Name", "in channels", "a.b", "x" * 50])
            )
            lines.append(f"{key}: {draw(st.integers(0, 9))}")
        elif kind == "nest":
            n = draw(st.integers(20, 800))
            lines.append(f"deep: {'[' * n}{']' * n}")
        elif kind == "bigint":
            digits = draw(st.integers(5, 6000))
            i = draw(st.integers(0, len(lines) - 1))
            lines[i] = re.sub(r"\b\d+\b", "9" * digits, lines[i], count=1)
        elif kind == "merge":
            lines.insert(0, "x-defaults: &d {channels: 64, depth: 1}")
            lines.append(f"extra_level: {{<<: *d, {draw(st.sampled_from(['depth', 'bad']))}: 2}}")
        else:
            lines.insert(0, "x-a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]")
            lines.append("bomb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]")
            lines.append("bomb2: [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]")
    return "\n".join(lines) + "\n"
