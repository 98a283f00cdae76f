"""dlagraph's own reader of torch.save files of plain tensors (backends/torch/pth_read.py)."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from dlagraph import WeightsError  # noqa: E402
from dlagraph.backends.torch.pth_read import _Loaded, _Unpickler, _Unsupported, read_pth  # noqa: E402
from dlagraph.backends.torch.weights import read_owned, read_state_dict  # noqa: E402


def test_a_timm_state_dict_reads_like_torch_load(tmp_path: Path) -> None:
    timm = pytest.importorskip("timm")
    path = tmp_path / "dla34.pth"
    torch.save(timm.create_model("dla34").state_dict(), path)
    ours, ref = read_pth(path), torch.load(path, weights_only=True)
    assert isinstance(ours, collections.OrderedDict) and list(ours) == list(ref)
    for k, v in ref.items():
        assert type(ours[k]) is torch.Tensor and ours[k].dtype == v.dtype
        assert ours[k].stride() == v.stride() and torch.equal(ours[k], v)


def test_views_become_copies_and_wrappers_keep_their_other_values(tmp_path: Path) -> None:
    a = torch.randn(2, 3)
    sd = {"a": a, "t": a.t(), "tail": torch.randn(5)[2:], "empty": torch.zeros(0),
          "half": torch.randn(3).half(), "bf16": torch.randn(3).bfloat16(),
          "flag": torch.tensor([True, False]), "long": torch.arange(4)}  # fmt: skip
    torch.save({"model": sd, "epoch": 3, "name": "run"}, tmp_path / "c.pth")
    got = read_pth(tmp_path / "c.pth")
    assert got["epoch"] == 3 and got["name"] == "run"
    for k, v in sd.items():
        assert torch.equal(got["model"][k], v) and got["model"][k].dtype == v.dtype
    assert got["model"]["t"].data_ptr() != got["model"]["a"].data_ptr()  # no aliasing
    owned = read_owned(tmp_path / "c.pth")  # through the loader: unwrapped, the same values
    assert set(owned) == set(sd)


@pytest.mark.parametrize(
    "obj",
    [
        {"p": torch.nn.Parameter(torch.randn(2))},  # a global beyond plain tensors
        torch.nn.Linear(2, 2),  # a whole module
    ],
    ids=["parameter", "module"],
)
def test_anything_else_falls_back_to_torch_load(obj: object, tmp_path: Path) -> None:
    torch.save(obj, tmp_path / "x.pth")
    assert read_pth(tmp_path / "x.pth") is None


def test_legacy_non_zip_files_fall_back(tmp_path: Path) -> None:
    path = tmp_path / "old.pth"
    torch.save({"w": torch.randn(2)}, path, _use_new_zipfile_serialization=False)
    assert read_pth(path) is None
    assert torch.equal(read_state_dict(path)["w"], torch.load(path, weights_only=True)["w"])


def test_code_in_a_pickle_is_never_reached(tmp_path: Path) -> None:
    torch.save({"w": torch.randn(2), "f": print}, tmp_path / "evil.pth")
    assert read_pth(tmp_path / "evil.pth") is None  # then torch.load(weights_only) refuses it
    with pytest.raises(WeightsError, match="dlagraph never unpickles code"):
        read_state_dict(tmp_path / "evil.pth")
    import io

    for module, name in [("builtins", "eval"), ("os", "system"), ("torch", "load")]:
        with pytest.raises(_Unsupported):
            _Unpickler(io.BytesIO(b""), None).find_class(module, name)


def test_build_on_a_loaded_tensor_is_refused() -> None:
    """pickle's BUILD calls __setstate__; a plain tensor's would re-point it at any storage."""
    t = torch.zeros(2).as_subclass(_Loaded)
    with pytest.raises(_Unsupported):
        t.__setstate__((torch.zeros(1).untyped_storage(), 0, (100,), (1,)))


def test_garbage_and_truncated_files(tmp_path: Path) -> None:
    good = tmp_path / "good.pth"
    torch.save({"w": torch.randn(1000)}, good)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(good.read_bytes()[:-3000])
    assert read_pth(cut) is None
    (tmp_path / "junk.pth").write_bytes(b"PK\x03\x04 not a zip at all")
    assert read_pth(tmp_path / "junk.pth") is None
    with pytest.raises(WeightsError):
        read_state_dict(tmp_path / "junk.pth")


def test_a_weights_build_skips_torch_init_in_its_own_thread_only() -> None:
    """build_module(weights=) skips torch's random init while it builds on the meta device; other
    threads still initialise, and torch's classes are as they were afterwards."""
    import math
    import threading

    import dlagraph
    from dlagraph.backends.torch.interpret import _torch_init_skipped

    before = torch.nn.modules.conv._ConvNd.reset_parameters
    sd = dlagraph.build_module("dla_tiny_digits").state_dict()
    model = dlagraph.build_module("dla_tiny_digits", weights=sd)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in sd.items())
    assert torch.nn.modules.conv._ConvNd.reset_parameters is before
    other: list = []
    with _torch_init_skipped():
        thread = threading.Thread(target=lambda: other.append(torch.nn.Conv2d(64, 64, 3)))
        thread.start()
        thread.join()
    bound = 1 / math.sqrt(64 * 9)
    w = other[0].weight
    assert w.abs().max() <= bound and w.std() > 0.3 * bound  # uniform(-b, b), not skipped
