"""Static activation memory (dlagraph.activation_memory) against a measurement on CPU: the live
tensor storage bytes a TorchDispatchMode sees while the generated class runs (inference) and the
storages autograd saves, seen by saved-tensor hooks (training)."""

from __future__ import annotations

import weakref
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import dlagraph
from dlagraph.ir.compile import compile_spec

from .helpers import exec_generated
from .strategies import TEST_BLOCK, valid_specs


class LiveBytes(TorchDispatchMode):
    """The bytes of the storages of every tensor an op returns, until the last tensor viewing a
    storage is gone; ``peak`` is the most at once."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: dict[int, list[int]] = {}
        self.now = self.peak = 0

    def track(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key not in self.refs:
            self.refs[key] = [0, storage.nbytes()]
            self.now += storage.nbytes()
            self.peak = max(self.peak, self.now)
        self.refs[key][0] += 1
        weakref.finalize(t, self._drop, key)

    def _drop(self, key: int) -> None:
        ref = self.refs[key]
        ref[0] -= 1
        if ref[0] == 0:
            self.now -= ref[1]
            del self.refs[key]

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.track(t)
        return out


def measured(model: torch.nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """(inference peak, bytes saved for backward) of ``model`` on ``x``."""
    model.eval()
    mode = LiveBytes()
    with torch.no_grad(), mode:
        mode.track(x)  # the caller's image, alive throughout
        model(x)  # the result is dropped at once
    weights = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.untyped_storage().data_ptr() not in weights:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    return mode.peak, sum(saved.values())


def check(spec: Any, batch: int, size: tuple[int, int]) -> None:
    g = compile_spec(spec)
    static = dlagraph.activation_memory(g, batch, size)
    torch.manual_seed(0)
    model = exec_generated(dlagraph.generate_source(g))()
    peak, saved = measured(model, torch.randn(batch, g.graph["in_channels"], *size))
    assert static.inference_peak == pytest.approx(peak, rel=0.05), (static, peak)
    assert static.training_saved == pytest.approx(saved, rel=0.10), (static, saved)


@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("dla36", 224),
        ("dla60_res2next", 128),
        ("dla104_s", 128),
        ("dla34_up", 128),
        ("dla36_seg_camvid", 128),
        ("centernet_tiny_shapes", 64),
        ("dla_tiny_digits", 32),
    ],
)
def test_presets_within_5_percent_in_inference_and_10_in_training(name: str, size: int) -> None:
    check(name, 2, (size, size))


@settings(max_examples=15, deadline=None)
@given(valid_specs(max_tree_levels=3, max_depth=2))
def test_random_specs_within_5_and_10_percent(spec: dict) -> None:
    if spec["block"]["type"] == TEST_BLOCK:  # a user block: counted as its output alone
        spec = {**spec, "block": {"type": "basic"}}
        spec["levels"] = [{**lv, "channels": 8} if "depth" in lv else lv for lv in spec["levels"]]
    side = compile_spec(spec).graph["total_stride"] * 2
    check(spec, 2, (side, side))


def test_batch_and_dtype_scale_the_figures_and_bad_arguments_are_refused() -> None:
    g = compile_spec("dla36")
    one = dlagraph.activation_memory(g)
    four = dlagraph.activation_memory(g, 4, dtype="bfloat16")
    assert four.inference_peak == 2 * one.inference_peak
    assert four.training_saved < 4 * one.training_saved  # max pooling's int64 indices stay 8 bytes
    for kwargs in ({"batch": 0}, {"dtype": "int3"}):
        with pytest.raises(ValueError):
            dlagraph.activation_memory(g, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(dlagraph.InputSizeError):
        dlagraph.activation_memory(g, 1, (100, 100))


def test_interleaved_ida_order_keeps_fewer_bytes_alive_than_the_official_order() -> None:
    """dlagraph runs each IDA node right after its input's projection and upsampling (the order
    of least peak, ir.memory.run_order); the official DLASeg/IDAUp projects and upsamples every
    level first, all held in one list. Same modules, same output, measured peaks compared."""
    torch.manual_seed(0)
    model = exec_generated(dlagraph.generate_source(compile_spec("dla_tiny_seg")))().eval()

    class Official(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            m = self.m
            layers = [m.level1(m.level0(m.base_layer(x)))]
            for level in (m.forward_level2, m.forward_level3, m.forward_level4, m.forward_level5):
                layers.append(level(layers[-1]))
            ida = m.ida_up
            for i in range(1, len(layers)):
                layers[i] = getattr(ida, f"up_{i}")(getattr(ida, f"proj_{i}")(layers[i]))
            y = layers[0]
            for i in range(1, len(layers)):
                y = getattr(ida, f"node_{i}")([y, layers[i]])
            del layers
            up = torch.nn.functional.interpolate
            return up(m.fc(y), scale_factor=2.0, mode="bilinear", align_corners=False)

    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert torch.equal(model(x), Official()(x))
    ours, _ = measured(model, x)
    official, _ = measured(Official(), x)
    assert ours <= 0.85 * official, (ours, official)


def _chain_layers(cin: int, cout: int, s: int, d: int, o: Any) -> list[dlagraph.Layer]:
    return [
        dlagraph.Layer("conv1", "conv", cin, cout, 3, stride=s, out_div=s),
        dlagraph.Layer("conv2", "conv", cout, cout, 3, out_div=s),
        dlagraph.Layer("bn", "bn", cout, cout, out_div=s),
    ]


class ConvConvBN(torch.nn.Module):
    """Two convs then one BN: layers that are not conv/BN pairs."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.conv2 = torch.nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn = torch.nn.BatchNorm2d(out_channels)
        self.relu = torch.nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        out = self.bn(self.conv2(self.conv1(x)))
        out += shortcut
        return self.relu(out)


def _conv_layers(cin: int, cout: int, s: int, d: int, o: Any) -> list[dlagraph.Layer]:
    return [dlagraph.Layer("conv1", "conv", cin, cout, 3, stride=s, out_div=s)]


class ConvOnly(torch.nn.Module):
    """One conv, no BN."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.relu = torch.nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        out += shortcut
        return self.relu(out)


@pytest.mark.parametrize("block, layers", [(ConvConvBN, _chain_layers), (ConvOnly, _conv_layers)])
def test_a_block_of_any_conv_bn_sequence_is_counted_as_it_runs(block: type, layers: Any) -> None:
    """The memory model once paired layers two by two: a [conv] block crashed generate_source
    and build_module."""
    dlagraph.register_block("ccb_test", layers=layers)(block)
    try:
        spec = {**dlagraph.load_spec("dla_tiny_digits").to_dict(), "block": {"type": "ccb_test"}}
        check(spec, 2, (32, 32))
    finally:
        dlagraph.unregister_block("ccb_test")


def test_block_options_may_not_take_the_constructors_own_arguments() -> None:
    from pydantic import BaseModel, ConfigDict

    class Strided(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)
        stride: int = 1

    with pytest.raises(dlagraph.RegistryError, match="option.s. stride are the constructor's own"):
        dlagraph.register_block("strided_test", options=Strided, layers=_conv_layers)(ConvOnly)
    with pytest.raises(dlagraph.RegistryError, match="register an nn.Module class"):
        dlagraph.register_block("five_test")(5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "layers, want",
    [
        (lambda *a: [dlagraph.Layer("c", "conv", -8, 8, 3)], "needs positive whole numbers"),
        (lambda *a: [dlagraph.Layer("c", "conv", 8, 8, 3, groups=0)], "positive whole numbers"),
        (lambda *a: ["conv"], "must be a list of dlagraph.Layer"),
        (lambda *a: (x for x in []), "must be a list of dlagraph.Layer"),
        (lambda *a: [dlagraph.Layer("c", "conv", 8, 8, 3)] * 2, "name a layer twice"),
        (lambda *a: [dlagraph.Layer("c", "conv", 8, 8, 3, groups=3)], "groups that do not divide"),
    ],
)
def test_a_blocks_layers_are_checked_before_use(layers: Any, want: str) -> None:
    dlagraph.register_block("layers_test", layers=layers)(ConvOnly)
    try:
        spec = {**dlagraph.load_spec("dla_tiny_digits").to_dict(), "block": {"type": "layers_test"}}
        with pytest.raises(dlagraph.DlagraphError, match=want):
            dlagraph.summarize(spec)
    finally:
        dlagraph.unregister_block("layers_test")
