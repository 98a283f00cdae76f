"""dlagraph.optimize on PyTorch (fp32 / bf16 / int8 CPU inference), the BN folding every runtime
starts from (interpreter and generated code, graph-break-free torch.compile), and `dlagraph bench`.

Accuracy on real data lives in test_examples.py (digits; the detection example's mAP@0.5): the
trained models come from the examples. Speed is measured by benchmarks/bench.py, not asserted.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from .helpers import bf16_warning, exec_generated, trained_bn

torch = pytest.importorskip("torch")
pytest.importorskip("torchao")

import dlagraph  # noqa: E402
from dlagraph import DlagraphError, build_module, fold_bn, generate_source, load_spec  # noqa: E402
from dlagraph.cli import main  # noqa: E402
from dlagraph.deploy.optimize import optimize  # noqa: E402
from dlagraph.deploy.pytorch import _split_reused_modules  # noqa: E402


def tiny(seed: int = 0) -> torch.nn.Module:
    """The digits network (1x32x32 inputs), settled (below)."""
    torch.manual_seed(seed)
    return settled(
        dlagraph.build_module(dlagraph.load_spec("dla_tiny_digits")), batches(3, batch=8)
    )


def settled(model: torch.nn.Module, data: list) -> torch.nn.Module:
    """``model`` in eval mode with BatchNorm statistics measured on ``data``, so that folding and
    quantizing see activations on a sane scale, as a trained network's are (at init, activations
    shrink level after level against the running variance of 1)."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # a plain average over the batches
    model.train()
    with torch.no_grad():
        for x in data:
            model(x)
    return model.eval()


def batches(n: int = 3, size: int = 32, channels: int = 1, batch: int = 4) -> list:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(batch, channels, size, size, generator=g) for _ in range(n)]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """The largest difference, relative to the largest value of ``a``."""
    return float((a - b).abs().max() / a.abs().max())


def rel_rms(a: torch.Tensor, b: torch.Tensor) -> float:
    """The RMS difference relative to ``a``'s spread: 1.0 means no better than a constant. An
    untrained network on random inputs gives int8 about 0.2 here; the accuracy of a trained one is
    tested in test_examples.py."""
    return float((a - b).norm() / (a - a.mean()).norm())


def test_pt2e_fails_on_a_reused_relu_and_splitting_the_calls_fixes_it() -> None:
    """The root cause of 'Input partition has more than one output node': the quantizer groups
    nodes by module path, and the official blocks call one ``self.relu`` twice."""
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    model = dlagraph.fold_bn(tiny())
    x = batches(1)[0]

    def quantizer() -> xiq.X86InductorQuantizer:
        return xiq.X86InductorQuantizer().set_global(
            xiq.get_default_x86_inductor_quantization_config()
        )

    gm = torch.export.export(model, (x,)).module()
    with pytest.raises(ValueError, match="more than one output node"):
        prepare_pt2e(gm, quantizer())
    gm = torch.export.export(model, (x,)).module()
    _split_reused_modules(gm)
    prepared = prepare_pt2e(gm, quantizer())
    observers = [n for n in prepared.graph.nodes if n.op == "call_module"]
    assert len(observers) > 20  # every conv input, weight and block output observed


def test_timm_dla_quantizes_too_after_the_same_fix() -> None:
    timm = pytest.importorskip("timm")
    model = timm.create_model("dla34", num_classes=10).eval()
    fast = optimize(model, "int8", batches(1, 64, 3, 2), compile=False)
    with torch.no_grad():
        assert fast(batches(1, 64, 3, 2)[0]).shape == (2, 10)


def test_fp32_folds_and_stays_exact_eager_and_compiled() -> None:
    model = tiny()
    x = batches(1)[0]
    fast = optimize(model, "fp32", compile=False)
    compiled = optimize(model, "fp32", example_input=x)
    with torch.no_grad():
        assert rel_err(model(x), fast(x)) < 1e-5
        assert rel_err(model(x), compiled(x)) < 1e-4
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # a copy was changed


def test_bf16_is_close_to_fp32_and_returns_float32() -> None:
    model = tiny()
    x = batches(1)[0]
    with bf16_warning():  # a DlagraphWarning where this CPU emulates bf16
        fast = optimize(model, "bf16", compile=False)
    with torch.no_grad():
        out = fast(x)
        assert out.dtype == torch.float32 and rel_rms(model(x), out) < 0.1
    assert {p.dtype for p in fast.parameters()} == {torch.bfloat16}


def test_int8_reference_graph_is_close_to_fp32_and_quantized() -> None:
    model = tiny()
    cal = batches(4)
    fast = optimize(model, "int8", cal, compile=False)
    graph = fast.inner.graph
    targets = [str(n.target) for n in graph.nodes if n.op == "call_function"]
    convs = targets.count("aten.conv2d.default")
    # every conv's weight, the classifier's (timm's 1x1 conv) included, is int8 per channel
    assert convs > 10
    assert targets.count("quantized_decomposed.dequantize_per_channel.default") == convs
    assert fast.report.calibration_batches == 4
    with torch.no_grad():
        assert rel_rms(model(cal[0]), fast(cal[0])) < 0.3


@pytest.mark.slow  # two int8 compiles: about 10 s on one core
def test_int8_compiles_and_takes_other_batch_sizes() -> None:
    model = tiny()
    cal = batches(8, batch=1)  # a batch of one: the exported batch dimension stays dynamic
    steps = []
    fast = optimize(model, "int8", cal, progress=lambda s, t: steps.append((s, t is None)))
    assert [s for s, start in steps if start] == ["fold BN", "export", "calibrate", "convert",
                                                  "compile"]  # fmt: skip
    assert set(fast.report.steps) == {"fold BN", "export", "calibrate", "convert", "compile"}
    x = batches(1, batch=3)[0]
    reference = optimize(model, "int8", cal, compile=False)  # the q/dq graph, run op by op
    with torch.no_grad():
        want, ref, got = model(x), reference(x), fast(x)
    assert rel_rms(want, got) < 0.3
    # inductor's fused int8 kernels round differently from the q/dq reference, and by CPU (AVX2
    # without VNNI sums u8 x s8 pairs in saturating 16-bit lanes): they may differ from it by no
    # more than int8 itself differs from fp32 (the quantization's own error on these inputs)
    assert rel_rms(ref, got) <= rel_rms(want, ref)


def test_generated_class_quantizes_like_the_interpreter() -> None:
    model = tiny()
    gen = exec_generated(dlagraph.generate_source("dla_tiny_digits"))().eval()
    gen.load_state_dict(model.state_dict())
    cal = batches(2)
    a = optimize(model, "int8", cal, compile=False)
    b = optimize(gen, "int8", cal, compile=False)
    with torch.no_grad():
        assert torch.allclose(a(cal[1]), b(cal[1]), atol=1e-6)


def test_a_spec_or_preset_name_is_built_first() -> None:
    fast = optimize("dla_tiny_digits", "fp32", compile=False)
    with torch.no_grad():
        assert fast(batches(1)[0]).shape == (4, 10)


@pytest.mark.parametrize("name", ["centernet_dla34", "fairmot_dla34"])
def test_centernet_keeps_deformable_convs_in_float(name: str) -> None:
    torch.manual_seed(0)
    model = dlagraph.build_module(name).eval()
    x = torch.randn(2, 3, 64, 64)
    f32 = optimize(model, "fp32", compile=False)  # DeformConv's BN folded into the DCN
    with torch.no_grad():
        ref = model(x)
        out = f32(x)
        assert all(rel_err(ref[k], out[k]) < 1e-4 for k in ref)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in f32.modules())
        q = optimize(model, "int8", [x], compile=False)
        assert len(q.report.float_modules) == 16 and q(x).keys() == ref.keys()
        deform = [n for n in q.inner.graph.nodes if "deform_conv2d" in str(n.target)]
        assert len(deform) == 16
        for node in deform:  # its input arrives in float: no dequantize right before it
            assert "quantize" not in str(node.args[0].target)
        with bf16_warning():
            b = optimize(model, "bf16", compile=False)
        assert all(o.dtype == torch.float32 for o in b(x).values())
        assert "16 deformable conv(s) kept in fp32" in str(b.report)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m: optimize(m, "fp16"), "must be one of fp32, bf16, int8"),  # type: ignore[arg-type]
        (lambda m: optimize(m, "int8"), "int8 needs calibration batches"),
        (lambda m: optimize(m, "int8", []), "calibration: holds no batches"),
        (lambda m: optimize(m, "int8", 3), "calibration: give an iterable of NCHW batches"),
        (lambda m: optimize(m, "int8", batches(1, size=30)), r"calibration\[0\]: sides 30x30 "),
        (
            lambda m: optimize(m, "int8", batches(1) + batches(1, size=64)),
            r"calibration\[1\]: images of 64x64 after 32x32",
        ),
        (lambda m: optimize(m, "int8", [torch.zeros(0, 1, 32, 32)]), r"calibration\[0\]: is empty"),
        (
            lambda m: optimize(m, "int8", [torch.full((1, 1, 32, 32), float("nan"))]),
            r"calibration\[0\]: holds NaN",
        ),
        (lambda m: optimize(m, "int8", batches(1, channels=3)), r"has 3 channels, the network"),
        (lambda m: optimize(m, "int8", [torch.zeros(1, 32, 32)]), "must be a float NCHW batch"),
        (lambda m: optimize(m, "int8", [[1.0]]), r"calibration\[0\]: must be a tensor"),
        (lambda m: optimize(m, "fp32", [batches(1)[0]]), "only int8 is calibrated"),
        (lambda m: optimize(3.5, "fp32"), "model: give a built DLA module"),  # type: ignore[arg-type]
        (
            lambda m: optimize(m, "fp32", example_input=torch.zeros(2, 1, 31, 31)),
            "example_input: sides 31x31",
        ),
        (lambda m: optimize(m.train(), "fp32"), "call model.eval"),
        (lambda m: optimize(m, "fp32", compile=False).train(), "inference only"),
        (
            lambda m: optimize(m, "int8", batches(1), compile=False)(batches(1, size=64)[0]),
            r"calibrated on 1 x 32 x 32 images \(got 1 x 64 x 64\)",
        ),
    ],
    ids=[
        "unknown precision",
        "int8 without data",
        "empty calibration",
        "not an iterable",
        "a size the stride does not divide",
        "mixed sizes",
        "an empty batch",
        "a NaN batch",
        "other channels",
        "wrong rank",
        "not a tensor",
        "calibrating fp32",
        "not a module",
        "a bad example input",
        "training model",
        "train() on the result",
        "int8 at another image size",
    ],
)
def test_bad_calls_get_one_clear_error(call, match: str) -> None:  # noqa: ANN001
    with pytest.raises(DlagraphError, match=match):
        call(tiny())


# the bench's table itself: docs/deployment.md runs `dlagraph bench` and checks what it prints


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--precision", "int8"], "add --calibrate"),
        (["--size", "30"], "30x30"),
    ],
    ids=["int8 without --calibrate", "a size the network cannot take"],
)
def test_cli_bench_refusals_are_one_line(
    args: list[str], match: str, capsys: pytest.CaptureFixture
) -> None:
    assert main(["bench", "dla_tiny_digits", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0]


@pytest.mark.parametrize(
    ("n", "c", "c_out", "size", "stride", "padding", "dilation", "bias"),
    [
        (1, 8, 16, 9, 1, 1, 1, True),
        (2, 5, 3, 12, 2, 1, 1, False),
        (3, 4, 6, 11, 1, 2, 2, True),
        (1, 16, 16, 1, 1, 1, 1, True),  # a 1x1 image: every tap but the centre is outside
    ],
)
def test_gathered_deform_conv_equals_torchvision(
    n: int, c: int, c_out: int, size: int, stride: int, padding: int, dilation: int, bias: bool
) -> None:
    """Against torchvision's op, with offsets that push samples across and past every border."""
    import torchvision

    from dlagraph.deploy.deform import deform_conv2d_gather

    g = torch.Generator().manual_seed(size * 31 + c)
    x = torch.randn(n, c, size, size, generator=g, dtype=torch.float64)
    weight = torch.randn(c_out, c, 3, 3, generator=g, dtype=torch.float64)
    b = torch.randn(c_out, generator=g, dtype=torch.float64) if bias else None
    out_size = (size + 2 * padding - dilation * 2 - 1) // stride + 1
    offset = torch.randn(n, 18, out_size, out_size, generator=g, dtype=torch.float64) * size / 2
    offset[:, :, 0, 0] = torch.tensor([-1.0, size + 0.0] * 9)  # exactly on the -1 / H lines
    mask = torch.rand(n, 9, out_size, out_size, generator=g, dtype=torch.float64)
    ref = torchvision.ops.deform_conv2d(
        x, offset, weight, b, stride=stride, padding=padding, dilation=dilation, mask=mask
    )
    ours = deform_conv2d_gather(x, weight, offset, mask, b, stride, padding, dilation)
    # positions are computed in float32 (see the function's doc): agreement to float32 rounding
    assert ours.shape == ref.shape and torch.allclose(ours, ref, rtol=1e-4, atol=1e-4)


def test_lowered_dcn_matches_the_module_in_fp32_and_bf16() -> None:
    from dlagraph.deploy.deform import LoweredDCN
    from dlagraph.nn.modules import DCN

    torch.manual_seed(0)
    dcn = DCN(16, 24).eval()
    with torch.no_grad():  # trained-like offsets: the init's are all zero
        dcn.conv_offset_mask.weight.normal_(0, 0.1)
        x = torch.randn(2, 16, 20, 20)
        ref = dcn(x)
        lowered = LoweredDCN(dcn)
        assert rel_err(ref, lowered(x)) < 1e-5
        lowered.weight.data = lowered.weight.data.bfloat16()
        lowered.bias.data = lowered.bias.data.bfloat16()
        out = lowered(x.bfloat16())
        assert out.dtype == torch.bfloat16 and rel_err(ref, out.float()) < 0.03


@given(
    st.lists(
        st.tuples(
            st.integers(0, 3),
            st.integers(0, 4),
            st.sampled_from([0, 16, 24, 32, 48, 64]),
            st.sampled_from([0, 16, 30, 32, 48]),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_calibration_shapes_are_accepted_exactly_when_the_network_takes_them(shapes: list) -> None:
    """The check every calibration batch passes, against the rule stated independently: a
    non-empty float NCHW batch with the network's channels (1), sides its total stride (16: five
    levels, each halving) divides, all of the first batch's size."""
    from dlagraph.deploy.request import batch_checker as _batch_checker

    check = _batch_checker(dlagraph.build_module("dla_tiny_digits").eval())
    stride = 2 ** (len(dlagraph.load_spec("dla_tiny_digits").levels) - 1)  # every level halves
    first = shapes[0][1:]
    for i, (b, c, h, w) in enumerate(shapes):
        ok = b > 0 and c == 1 and h > 0 and w > 0 and h % stride == 0 and w % stride == 0
        ok = ok and (c, h, w) == first
        if ok:
            check(torch.zeros(b, c, h, w), f"calibration[{i}]")
        else:
            with pytest.raises(DlagraphError, match=rf"^calibration\[{i}\]: "):
                check(torch.zeros(b, c, h, w), f"calibration[{i}]")
            return


# --- BN folding (dlagraph.fold_bn, what every runtime starts from) and graph-break-free compile

FOLD_SPECS = ["dla36", "dla62_s_s", "dla60_res2next", "dla36_seg_camvid", "dla34_up"]


def trained_like(name: str) -> object:
    return trained_bn(build_module(f"specs/{name}.yaml"))


def outputs(model: object, x: object) -> tuple:
    with torch.no_grad():
        out = model(x)
    return out if isinstance(out, tuple) else (out,)


def rel_err_all(a: tuple, b: tuple) -> float:
    return max(((u - v).abs().max() / u.abs().max()).item() for u, v in zip(a, b, strict=True))


@pytest.mark.parametrize("name", FOLD_SPECS)
def test_folded_interpreter_is_close(name: str) -> None:
    model = trained_like(name)
    x = torch.randn(2, 3, 64, 64)
    ref = outputs(model, x)
    folded = dlagraph.fold_bn(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert rel_err_all(ref, outputs(folded, x.contiguous(memory_format=torch.channels_last))) < 1e-4


@pytest.mark.parametrize("name", FOLD_SPECS)
def test_folded_generated_code_is_close(name: str) -> None:
    model = trained_like(name)
    gen = exec_generated(generate_source(f"specs/{name}.yaml", fold_bn=True))()
    gen.load_state_dict(model.state_dict())  # an ordinary, unfolded checkpoint
    gen.fold_bn()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in gen.modules())
    x = torch.randn(2, 3, 64, 64)
    assert rel_err_all(outputs(model, x), outputs(gen, x)) < 1e-4


def test_fold_requires_eval_mode() -> None:
    with pytest.raises(DlagraphError, match="call model.eval"):
        fold_bn(build_module("specs/dla36.yaml").train())


def test_generated_code_compiles_without_graph_breaks() -> None:
    model = exec_generated(generate_source("specs/dla48_s_s.yaml"))().eval()
    explain = torch._dynamo.explain(model)(torch.randn(1, 3, 64, 64))
    assert explain.graph_break_count == 0


def test_segmentation_heads_compile_without_graph_breaks() -> None:
    for name in ("dla36_seg_camvid", "dla34_up"):
        model = build_module(load_spec(f"specs/{name}.yaml")).eval()
        explain = torch._dynamo.explain(model)(torch.randn(1, 3, 64, 64))
        assert explain.graph_break_count == 0, name
