"""timm's model API and registry, against timm's own DLA (same weights, same answers).

dla36 is timm's dla34 and dla104_s timm's dla102x (ground truth §9): every API call is made on
both, for the interpreter and for the generated class, and must agree. The registry is used only
through timm's public functions.
"""

from __future__ import annotations

import copy
import pickle
import subprocess
import sys
from collections import Counter
from collections.abc import Callable

import pytest

import dlagraph
from dlagraph.spec import ClassifierHead, load_spec, presets

from .conftest import ROOT
from .helpers import import_file

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
nn = torch.nn

X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def registered() -> list[str]:
    return dlagraph.register_timm_models()


def _pair(backend: str) -> tuple[nn.Module, nn.Module]:
    """(timm's dla34, dlagraph's dla36 with the same weights), both in eval mode."""
    torch.manual_seed(0)
    ref = timm.create_model("dla34").eval()
    if backend == "interpreter":
        ours = dlagraph.build_module("dla36", weights=ref.state_dict())
    else:
        gen = import_file(ROOT / "codegen" / "dla36.py", "_dlagraph_timm_dla36")
        ours = gen.Dla36.from_weights(ref.state_dict())
    return ref, ours.eval()


BACKENDS = ["interpreter", "generated"]


def _same(a: object, b: object) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b)
    else:
        assert isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b)
        for u, v in zip(a, b, strict=True):
            _same(u, v)


# ---- the model API, call by call ----------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_forward_features_head_and_attributes(backend: str) -> None:
    ref, ours = _pair(backend)
    with torch.no_grad():
        _same(ours.forward_features(X), ref.forward_features(X))
        f = ref.forward_features(X)
        _same(ours.forward_head(f), ref.forward_head(f))
        _same(ours.forward_head(f, pre_logits=True), ref.forward_head(f, pre_logits=True))
        _same(ours(X), ref(X))
    for attr in ("num_classes", "num_features", "head_hidden_size"):
        assert getattr(ours, attr) == getattr(ref, attr), attr
    keys = ("num_chs", "reduction", "module")
    assert [{k: f[k] for k in keys} for f in ours.feature_info] == [
        {k: f[k] for k in keys} for f in ref.feature_info
    ]
    assert ours.get_classifier() is ours.fc
    assert ours.group_matcher() == ref.group_matcher()
    assert ours.group_matcher(coarse=True) == ref.group_matcher(coarse=True)

    def value(cfg: dict, key: str) -> object:
        v = cfg[key]
        return tuple(v) if isinstance(v, (list, tuple)) else v

    for key in ("input_size", "mean", "std", "crop_pct", "interpolation", "first_conv",
                "classifier"):  # fmt: skip
        assert value(ours.pretrained_cfg, key) == value(ref.pretrained_cfg, key), key
    assert ours.default_cfg == ours.pretrained_cfg


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"indices": [1, 3, 5]},
        {"indices": 2},
        {"indices": [-1, 0]},
        {"indices": [2, 3], "stop_early": True},
        {"indices": 3, "intermediates_only": True},
    ],
    ids=["all", "list", "last2", "negative", "stop_early", "only"],
)
def test_forward_intermediates(backend: str, kwargs: dict) -> None:
    ref, ours = _pair(backend)
    with torch.no_grad():
        _same(ours.forward_intermediates(X, **kwargs), ref.forward_intermediates(X, **kwargs))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("indices", [[1, 2], 3, [0, 5]], ids=["early", "last3", "all"])
def test_prune_intermediate_layers(backend: str, indices: object) -> None:
    ref, ours = _pair(backend)
    assert ours.prune_intermediate_layers(indices) == ref.prune_intermediate_layers(indices)
    assert (ours.num_features, ours.head_hidden_size, ours.num_classes) == (
        ref.num_features,
        ref.head_hidden_size,
        ref.num_classes,
    )
    with torch.no_grad():
        _same(ours(X), ref(X))
        _same(ours.forward_intermediates(X, indices, intermediates_only=True),
              ref.forward_intermediates(X, indices, intermediates_only=True))  # fmt: skip
    kept = sum(p.numel() for p in ours.parameters())
    assert kept == sum(p.numel() for p in ref.parameters())  # the pruned levels are gone


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("num_classes", "pool"), [(7, None), (7, "max"), (0, None), (0, ""), (5, "")]
)
def test_reset_classifier(backend: str, num_classes: int, pool: str | None) -> None:
    ref, ours = _pair(backend)
    torch.manual_seed(1)
    ref.reset_classifier(num_classes, pool)
    torch.manual_seed(1)
    ours.reset_classifier(num_classes, pool)
    assert ours.num_classes == ref.num_classes == num_classes
    assert sorted(ours.state_dict()) == sorted(ref.state_dict())
    assert all(torch.equal(v, ref.state_dict()[k]) for k, v in ours.state_dict().items())
    with torch.no_grad():
        _same(ours(X), ref(X))


def test_reset_classifier_refuses_unknown_pooling() -> None:
    _, ours = _pair("interpreter")
    with pytest.raises(ValueError, match="'avg', 'max' or ''"):
        ours.reset_classifier(3, "catavgmax")


@pytest.mark.parametrize("backend", BACKENDS)
def test_grad_checkpointing_recomputes_levels_and_keeps_gradients(backend: str) -> None:
    _, ours = _pair(backend)
    ours.train()
    calls: Counter[int] = Counter()  # calls of the leaf modules of each level
    for i in range(6):
        for m in getattr(ours, f"level{i}").modules():
            if not list(m.children()):
                m.register_forward_pre_hook(lambda m, a, i=i: calls.update([i]))

    def grads() -> dict[str, torch.Tensor]:
        torch.manual_seed(0)  # the same dropout and batch statistics
        ours.zero_grad()
        ours(X).square().mean().backward()
        return {k: p.grad.clone() for k, p in ours.named_parameters()}

    state = copy.deepcopy(ours.state_dict())  # BN running statistics move on each forward
    plain = grads()
    once = calls.copy()
    calls.clear()
    ours.load_state_dict(state)
    ours.set_grad_checkpointing()
    assert ours.grad_checkpointing
    checkpointed = grads()
    assert all(calls[i] > once[i] for i in range(6)), (calls, once)  # recomputed in backward
    for k, g in plain.items():
        torch.testing.assert_close(checkpointed[k], g, rtol=1e-5, atol=1e-6)
    calls.clear()
    with torch.no_grad():
        ours(X)
    assert calls == once  # nothing to recompute without gradients
    ours.set_grad_checkpointing(False)
    assert not ours.grad_checkpointing


@pytest.mark.parametrize(
    "change",
    [
        lambda m: None,
        lambda m: m.reset_classifier(0, ""),
        lambda m: m.prune_intermediate_layers([1, 2]),
        lambda m: m.set_grad_checkpointing(),
        lambda m: dlagraph.fold_bn(m),
    ],
    ids=["as built", "reset", "pruned", "checkpointing", "folded"],
)
def test_deepcopy_and_pickle_keep_the_model_as_changed(change: Callable) -> None:
    _, ours = _pair("interpreter")
    change(ours)
    with torch.no_grad():
        want = ours(X)
    for other in (copy.deepcopy(ours), pickle.loads(pickle.dumps(ours))):
        assert type(other).__name__ == type(ours).__name__
        for attr in ("num_classes", "num_features", "feature_info", "grad_checkpointing"):
            assert getattr(other, attr) == getattr(ours, attr), attr
        with torch.no_grad():
            assert torch.equal(other(X), want)
        assert list(other.state_dict()) == list(ours.state_dict())


# ---- the registry, through timm's public API only -----------------------------------------------


def test_every_classifier_preset_is_registered(registered: list[str]) -> None:
    want = {
        f"dlagraph_{name}"
        for name, path in presets().items()
        if isinstance(load_spec(path).head, ClassifierHead)
    }
    assert set(registered) == want and set(timm.list_models("dlagraph_*")) == want
    assert dlagraph.register_timm_models() == registered  # a second call changes nothing


def test_create_model_matches_timm(registered: list[str]) -> None:
    torch.manual_seed(0)
    ours = timm.create_model("dlagraph_dla104_s", num_classes=10).eval()
    torch.manual_seed(0)
    ref = timm.create_model("dla102x", num_classes=10).eval()
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [
        (k, v.shape) for k, v in ref.state_dict().items()
    ]
    assert all(torch.equal(v, ref.state_dict()[k]) for k, v in ours.state_dict().items())
    with torch.no_grad():
        assert torch.equal(ours(X), ref(X))
    assert ours.num_classes == 10 and ours.pretrained_cfg["architecture"] == "dlagraph_dla104_s"


def test_create_model_options(registered: list[str]) -> None:
    m = timm.create_model("dlagraph_dla36", num_classes=0, in_chans=1, global_pool="max")
    assert m.eval()(torch.randn(1, 1, 64, 64)).shape == (1, 512)
    assert isinstance(m.global_pool, nn.AdaptiveMaxPool2d)
    m = timm.create_model("dlagraph_dla36", drop_rate=0.25, dtype=torch.bfloat16)
    assert m.head_drop.p == 0.25 and m.fc.weight.dtype == torch.bfloat16
    with pytest.raises(TypeError):
        timm.create_model("dlagraph_dla36", no_such_option=1)


def test_features_only_matches_timm(registered: list[str]) -> None:
    torch.manual_seed(0)
    ours = timm.create_model("dlagraph_dla36", features_only=True, out_indices=(2, 3, 4)).eval()
    torch.manual_seed(0)
    ref = timm.create_model("dla34", features_only=True, out_indices=(2, 3, 4)).eval()
    assert ours.feature_info.channels() == ref.feature_info.channels() == [64, 128, 256]
    assert ours.feature_info.reduction() == ref.feature_info.reduction() == [4, 8, 16]
    with torch.no_grad():
        _same(ours(X), ref(X))
    default = timm.create_model("dlagraph_dla36", features_only=True)
    assert default.feature_info.reduction() == [2, 4, 8, 16, 32]  # timm's dla default


def test_data_config_optimizer_and_ema(registered: list[str]) -> None:
    from timm.data import resolve_data_config
    from timm.optim import create_optimizer_v2
    from timm.utils import ModelEmaV3

    ours = timm.create_model("dlagraph_dla36")
    ref = timm.create_model("dla34")
    assert resolve_data_config({}, model=ours) == resolve_data_config({}, model=ref)

    def groups(model: nn.Module) -> list[tuple[float, list[str]]]:
        names = {id(p): n for n, p in model.named_parameters()}
        opt = create_optimizer_v2(model, "sgd", lr=0.1, weight_decay=1e-4, layer_decay=0.7)
        return sorted(
            (g["lr_scale"], g["weight_decay"], sorted(names[id(p)] for p in g["params"]))
            for g in opt.param_groups
        )

    assert groups(ours) == groups(ref)  # the same layer-wise decay, through group_matcher

    ema = ModelEmaV3(ours, decay=0.5)
    before = ema.module.fc.weight.detach().clone()
    with torch.no_grad():
        ours.fc.weight.add_(1.0)
    ema.update(ours)
    torch.testing.assert_close(ema.module.fc.weight, before + 0.5)
    assert ema.module.num_classes == 1000 and ema.module.feature_info == ours.feature_info


def test_importing_dlagraph_does_not_import_timm() -> None:
    code = (
        "import sys, dlagraph\n"
        "dlagraph.build_module('dla_tiny_digits')\n"
        "dlagraph.generate_source('dla_tiny_digits')\n"
        "print('timm' in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


@pytest.mark.slow  # downloads timm's sdist and runs its generic model tests: about 1.5 minutes
def test_timm_model_test_suite_passes_for_dlagraph_models() -> None:
    """timm's own model tests, for a split-block and a Res2Net preset (every preset takes the same
    code paths; `python tests/run_timm_suite.py` runs them for all, in about 6 minutes)."""
    suite = import_file(ROOT / "tests" / "run_timm_suite.py", "_run_timm_suite")
    models = "dlagraph_dla48_s_s or dlagraph_dla60_res2next"
    assert suite.main(["-x", "-W", "ignore::FutureWarning", "--models", models]) == 0
