"""The state_dict names and shapes the IR derives (``dlagraph.ir.state``) against torch's own.

The expected values come from torch: each network is built by ``build_module`` (on the meta
device, which allocates nothing and gives the same names and shapes) and its ``state_dict()``
listed. The IR's listing must equal it as an ordered list: names, shapes and order.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

import dlagraph
from dlagraph import Layer, build_module, compile_spec
from dlagraph.ir.state import state_shapes
from dlagraph.spec import presets

from .conftest import ROOT
from .helpers import TINY, import_file

torch = pytest.importorskip("torch")
nn = torch.nn


def torch_state(spec: Any) -> list[tuple[str, tuple[int, ...]]]:
    with torch.device("meta"):
        model = build_module(spec, init=False)
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


def ir_state(spec: Any) -> list[tuple[str, tuple[int, ...]]]:
    return list(state_shapes(compile_spec(spec)).items())


@pytest.mark.parametrize("name", sorted(presets()))
def test_preset_state_names_shapes_and_order_equal_torch_as_ordered_lists(name: str) -> None:
    assert ir_state(name) == torch_state(name)


class Expanded(nn.Module):
    """A custom block whose state is nested (a Sequential) and holds a buffer of its own."""

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)
        expand: int = 2

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, expand: int = 2):
        super().__init__()
        mid = in_channels * expand
        self.register_buffer("scale", torch.ones(out_channels))
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, mid, 1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(),
            nn.Conv2d(mid, out_channels, 3, stride, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) * self.scale[:, None, None] + shortcut)


def _expanded_layers(cin: int, cout: int, stride: int, dilation: int, o: Any) -> list[Layer]:
    mid = cin * o.expand
    return [
        Layer("body.0", "conv", cin, mid, 1),
        Layer("body.1", "bn", mid, mid),
        Layer("body.3", "conv", mid, cout, 3, stride, out_div=stride),
        Layer("body.4", "bn", cout, cout, out_div=stride),
    ]


@pytest.fixture
def expanded() -> Any:
    """``Expanded`` registered twice: without ``layers`` (its state read from a meta-device
    instance) and with them (which cannot know its buffer: a block declares convs and BNs)."""
    dlagraph.register_block("expanded_test")(Expanded)
    dlagraph.register_block("expanded_layers_test", layers=_expanded_layers)(Expanded)
    yield
    dlagraph.unregister_block("expanded_test")
    dlagraph.unregister_block("expanded_layers_test")


@pytest.mark.parametrize("layout", ["timm", "official"])
def test_custom_block_without_layers_state_equals_torch_as_ordered_lists(
    expanded: Any, layout: str
) -> None:
    spec = copy.deepcopy(TINY) | {"layout": layout}
    spec["block"] = {"type": "expanded_test", "expand": 3}
    got = ir_state(spec)
    assert got == torch_state(spec)
    assert ("level2.tree1.scale", (32,)) in got  # the block's own buffer, from the meta instance


def test_custom_block_with_layers_state_equals_torch_but_its_undeclared_buffer(
    expanded: Any,
) -> None:
    spec = copy.deepcopy(TINY)
    spec["block"] = {"type": "expanded_layers_test"}
    want = [(k, s) for k, s in torch_state(spec) if not k.endswith(".scale")]
    assert ir_state(spec) == want


def test_custom_block_of_the_example_state_equals_torch_as_ordered_lists() -> None:
    """``examples/custom_block.py``'s inverted residual (it declares ``layers``)."""
    dlagraph.unregister_block("inverted_residual")  # another test's class of that name
    import_file(ROOT / "examples" / "custom_block.py", "_custom_block_state")
    try:
        spec = ROOT / "examples" / "inverted_residual.yaml"
        assert ir_state(spec) == torch_state(spec)
    finally:
        dlagraph.unregister_block("inverted_residual")
