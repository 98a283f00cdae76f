"""load_weights: reports, layout conversion, safe file reading."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from dlagraph import WeightsError, build_module, load_spec, load_weights
from dlagraph.checkpoints.read import read_state_dict

from .helpers import TINY

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")


@pytest.fixture(scope="module")
def ref_sd() -> dict:
    return timm.create_model("dla34").state_dict()


def official(model_spec: str = "specs/dla36.yaml") -> object:
    return build_module(load_spec(model_spec).model_copy(update={"layout": "official"}))


def test_timm_checkpoint_loads_strictly(ref_sd: dict) -> None:
    report = load_weights(build_module("specs/dla36.yaml"), ref_sd)
    assert report.ok and len(report.matched) == len(ref_sd) and not report.dropped


def test_official_checkpoint_into_timm_layout_drops_dead_projections() -> None:
    off_sd = official().state_dict()
    model = build_module("specs/dla36.yaml")
    report = load_weights(model, off_sd)
    assert sorted({k.rsplit(".", 2)[0] for k in report.dropped}) == [
        "level3.project",
        "level4.project",
    ]
    assert report.by_level()["level3"]["dropped"] == 6
    assert all(
        torch.equal(model.state_dict()[k], v) for k, v in off_sd.items() if k in model.state_dict()
    )


def test_timm_checkpoint_into_official_layout_keeps_model_values(ref_sd: dict) -> None:
    report = load_weights(official(), ref_sd)
    assert report.ok and len(report.kept) == 12


def test_strict_refusal_reports_per_level_and_loads_nothing(ref_sd: dict) -> None:
    model = build_module("specs/dla36.yaml")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    bad = dict(ref_sd)
    bad["fc.weight"] = torch.zeros(10, 512, 1, 1)
    del bad["level2.root.conv.weight"]
    bad["extra.weight"] = torch.zeros(1)
    with pytest.raises(WeightsError) as info:
        load_weights(model, bad)
    text = str(info.value)
    assert "missing: level2.root.conv.weight" in text and "unexpected: extra.weight" in text
    assert "shape: fc.weight: checkpoint [10, 512, 1, 1], model [1000, 512, 1, 1]" in text
    assert "level2: missing 1" in text
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_non_strict_loads_what_fits(ref_sd: dict) -> None:
    model = build_module("specs/dla36.yaml")
    bad = dict(ref_sd)
    bad["fc.weight"] = torch.zeros(10, 512, 1, 1)
    report = load_weights(model, bad, strict=False)
    assert [k for k, _, _ in report.mismatched] == ["fc.weight"]
    assert torch.equal(model.state_dict()["level0.0.weight"], ref_sd["level0.0.weight"])


def test_files_torch_save_safetensors_and_wrappers(tmp_path: Path, ref_sd: dict) -> None:
    from safetensors.torch import save_file

    p = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in ref_sd.items()}}, p)
    assert load_weights(build_module("specs/dla36.yaml"), p).ok
    s = tmp_path / "ckpt.safetensors"
    save_file({k: v.contiguous() for k, v in ref_sd.items()}, str(s))
    assert load_weights(build_module("specs/dla36.yaml"), s).ok


class _Evil:
    def __reduce__(self) -> tuple:
        return (print, ("pwned",))


def test_pickled_code_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    p = tmp_path / "evil.pth"
    torch.save({"x": _Evil()}, p)
    with pytest.raises(WeightsError, match="never unpickles code"):
        load_weights(build_module("specs/dla36.yaml"), p)
    assert "pwned" not in capsys.readouterr().out


def test_prefix_loads_an_imagenet_checkpoint_into_the_dla_up_backbone(ref_sd: dict) -> None:
    model = build_module("specs/dla34_up.yaml")
    before = model.state_dict()["dla_up.ida_0.node_1.0.weight"].clone()
    report = load_weights(model, ref_sd, prefix="base.")
    assert report.ok and len(report.kept) == 12  # the official layout's unused projections
    sd = model.state_dict()
    assert torch.equal(sd["base.level2.tree1.conv1.weight"], ref_sd["level2.tree1.conv1.weight"])
    assert torch.equal(sd["base.fc.weight"], ref_sd["fc.weight"])
    assert torch.equal(sd["dla_up.ida_0.node_1.0.weight"], before)  # the head is untouched


# ---- instant loading: build_module(spec, weights=...) and generated Model.from_weights ----------


@pytest.fixture(scope="module")
def ref() -> object:
    torch.manual_seed(3)
    return timm.create_model("dla34").eval()


def _files(tmp_path: Path, sd: dict) -> list:
    from safetensors.torch import save_file

    save_file(sd, str(tmp_path / "w.safetensors"))
    torch.save(sd, tmp_path / "w.pth")
    torch.save(sd, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)  # torch < 1.6
    return [tmp_path / "w.safetensors", tmp_path / "w.pth", tmp_path / "legacy.pth", sd]


def _generated() -> type:
    from .conftest import ROOT
    from .helpers import import_file

    return import_file(ROOT / "codegen" / "dla36.py", "_dlagraph_weights_dla36").Dla36


def test_build_with_weights_equals_timm_and_owns_its_memory(tmp_path: Path, ref: object) -> None:
    sd = ref.state_dict()
    x = torch.randn(1, 3, 64, 64)
    for source in _files(tmp_path, sd):
        for model in (build_module("dla36", weights=source), _generated().from_weights(source)):
            state = model.state_dict()
            assert list(state) == list(sd) and not any(v.is_meta for v in state.values())
            assert all(torch.equal(v, sd[k]) for k, v in state.items())
            assert not {v.data_ptr() for v in state.values()} & {v.data_ptr() for v in sd.values()}
            assert all(p.requires_grad for p in model.parameters())
            with torch.no_grad():
                assert torch.equal(model.eval()(x), ref(x))
    report = build_module("dla36", weights=sd).load_report
    assert report.ok and len(report.matched) == len(sd)


def test_build_with_weights_skips_the_random_init(monkeypatch: pytest.MonkeyPatch) -> None:
    import dlagraph.backends.torch.interpret as interpret

    sd = build_module("dla_tiny_digits", init=False).state_dict()

    def fail(*args: object) -> None:
        raise AssertionError("initialised before loading")

    def meta_only(init: object) -> object:
        def guarded(*args: object, **kwargs: object) -> object:
            t = args[0] if args else kwargs["tensor"]  # torch's dispatch passes it by name
            assert t.is_meta, "a random init wrote real memory"
            return init(*args, **kwargs)

        return guarded

    monkeypatch.setattr(interpret, "init_weights", fail)  # the official init
    for name in ("kaiming_uniform_", "uniform_", "normal_"):  # nn.Conv2d's own
        monkeypatch.setattr(torch.nn.init, name, meta_only(getattr(torch.nn.init, name)))
    model = build_module("dla_tiny_digits", weights=sd)
    assert all(torch.equal(v, sd[k]) for k, v in model.state_dict().items())


def test_timm_checkpoint_into_official_layout_initialises_the_unused_projections(
    ref: object,
) -> None:
    spec = load_spec("dla36").model_copy(update={"layout": "official"})
    model = build_module(spec, weights=ref.state_dict())
    assert len(model.load_report.kept) == 12
    w = model.level3.project[0].weight  # never in a timm checkpoint: initialised as the official
    n = w.shape[2] * w.shape[3] * w.shape[0]  # code does, N(0, sqrt(2 / n))
    assert not w.is_meta and abs(w.std().item() - (2 / n) ** 0.5) < 0.2 * (2 / n) ** 0.5
    assert torch.equal(model.level3.project[1].running_var, torch.ones_like(w[:, 0, 0, 0]))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), ref(x))


def test_build_with_weights_converts_dtypes_and_refuses_misfits(ref: object) -> None:
    half = {k: v.half() if v.is_floating_point() else v for k, v in ref.state_dict().items()}
    model = build_module("dla36", weights=half)
    assert model.fc.weight.dtype == torch.float32 and model.load_report.converted
    bad = dict(ref.state_dict())
    del bad["level2.root.conv.weight"]
    with pytest.raises(WeightsError, match="missing: level2.root.conv.weight"):
        build_module("dla36", weights=bad)
    with pytest.raises(WeightsError, match="no such checkpoint file"):
        build_module("dla36", weights="nowhere.safetensors")
    with pytest.raises(
        RuntimeError, match=r"does not fit Dla36: missing \[.level2.root.conv.weight.\]"
    ):
        _generated().from_weights(bad)


# ---- reading files: only the maintained readers, and every failure one WeightsError line ---------


def _st_file(tmp_path: Path, header: object, data: bytes = b"") -> Path:
    """A hand-made safetensors file: 8-byte header length, JSON header, data."""
    import json
    import struct

    raw = json.dumps(header).encode()
    path = tmp_path / f"bad{len(list(tmp_path.iterdir()))}.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def test_safetensors_files_read_like_the_library_and_own_their_memory(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    from dlagraph.checkpoints.read import read_owned

    sd = {
        "f32": torch.randn(3, 4),
        "bf16": torch.randn(5).bfloat16(),
        "f16": torch.randn(2, 2).half(),
        "scalar": torch.tensor(7),
        "empty": torch.zeros(0, 3),
        "bool": torch.tensor([True, False, True]),
        "i8": torch.arange(-3, 3, dtype=torch.int8),
    }
    path = tmp_path / "ok.safetensors"
    save_file(sd, str(path), metadata={"format": "pt"})
    ours, ref = read_owned(path), load_file(path)
    assert sorted(ours) == sorted(ref)
    assert all(torch.equal(ours[k], ref[k]) and ours[k].dtype == ref[k].dtype for k in ref)
    path.write_bytes(path.read_bytes()[:-8] + bytes(8))  # the file changes under the model
    assert torch.equal(ours["i8"], sd["i8"])  # read, not mapped
    renamed = tmp_path / "ok.bin"  # recognised by content, not by suffix
    save_file(sd, str(renamed))
    assert torch.equal(read_owned(renamed)["f32"], sd["f32"])


@pytest.mark.parametrize(
    ("header", "data"),
    [
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 16]}}, bytes(8)),  # past the end
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, bytes(8)),  # too few bytes
        ({"a": {"dtype": "F8_E9", "shape": [2], "data_offsets": [0, 8]}}, bytes(8)),  # no dtype
        ({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, bytes(8)),  # bad shape
        ({"a": [1, 2]}, b""),  # not an entry
        ([1, 2], b""),  # not an object
        (  # two tensors over the same bytes: the safetensors library refuses overlaps
            {
                "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "b": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
            },
            bytes(8),
        ),
        ({"a": {"dtype": "F32", "shape": [2**31, 2**31], "data_offsets": [0, 8]}}, bytes(8)),
    ],
    ids=["beyond", "short", "dtype", "shape", "entry", "array", "overlap", "huge"],
)
def test_malformed_safetensors_files_are_one_line_weights_errors(
    tmp_path: Path, header: object, data: bytes
) -> None:
    path = _st_file(tmp_path, header, data)
    with pytest.raises(WeightsError, match="not a readable safetensors file") as e:
        build_module("dla_tiny_digits", weights=path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_a_header_longer_than_the_file_is_refused(tmp_path: Path) -> None:
    import struct

    huge = tmp_path / "huge.safetensors"
    huge.write_bytes(struct.pack("<Q", 2**62) + b"{}")
    with pytest.raises(WeightsError, match="huge.safetensors: not a readable safetensors file"):
        build_module("dla_tiny_digits", weights=huge)


def test_a_broadcast_view_is_not_blown_up(tmp_path: Path) -> None:
    """A stride-0 view is a few bytes on disk and gigabytes once copied: refused before copying."""
    path = tmp_path / "stride0.pth"
    torch.save({"base_layer.0.weight": torch.zeros(1).expand(30000, 30000)}, path)
    assert path.stat().st_size < 4096
    with pytest.raises(WeightsError, match=r"stride0.pth: tensor 'base_layer.0.weight' .* views "):
        build_module("dla_tiny_digits", weights=path)


def test_copies_that_do_not_fit_in_memory_are_refused_before_copying(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dlagraph.checkpoints.read as weights

    path = tmp_path / "c.pth"
    torch.save(build_module("dla_tiny_digits").state_dict(), path)
    monkeypatch.setattr(weights, "available_memory", lambda: 1000)
    with pytest.raises(WeightsError, match=r"c.pth: its tensors need .* GiB of memory, only"):
        build_module("dla_tiny_digits", weights=path)


def test_a_duplicated_zip_entry_reads_as_torch_reads_it(tmp_path: Path) -> None:
    """A zip archive may hold one name twice; scanners built on torch see torch's choice, and so
    must the loader (it is torch's reader)."""
    import zipfile

    good = tmp_path / "good.pth"
    torch.save({"w": torch.ones(4)}, good)
    dup = tmp_path / "dup.pth"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(dup, "w") as dst:
        for info in src.infolist():
            body = src.read(info)
            dst.writestr(info, body)
            if "/data/" in info.filename:  # a second entry of the same name, other values
                with pytest.warns(UserWarning, match="Duplicate name"):
                    dst.writestr(info, torch.zeros(4).numpy().tobytes())
    from dlagraph.checkpoints.read import read_owned

    try:
        want = torch.load(dup, weights_only=True)
    except Exception:  # torch refuses it: then so must dlagraph
        with pytest.raises(WeightsError):
            read_owned(dup)
        return
    assert torch.equal(read_owned(dup)["w"], want["w"])


def test_paths_that_are_not_regular_files_are_refused_before_opening(tmp_path: Path) -> None:

    fifo = tmp_path / "pipe.pth"
    os.mkfifo(fifo)  # opening it would block forever
    (tmp_path / "dir.safetensors").mkdir()
    (tmp_path / "empty.pth").write_bytes(b"")
    cases = {
        fifo: "is not a regular file",
        Path("/dev/zero"): "is not a regular file",
        tmp_path / "dir.safetensors": "is a folder",
        tmp_path / "nowhere.pth": "no such checkpoint file",
        tmp_path / "empty.pth": "is empty",
        tmp_path / ("x" * 5000 + ".pth"): "cannot read",
    }
    for path, why in cases.items():
        with pytest.raises(WeightsError, match=why) as e:
            build_module("dla_tiny_digits", weights=path)
        assert len(str(e.value).splitlines()) == 1 and len(str(e.value)) < 400


@pytest.mark.parametrize(
    "obj",
    [
        {"w": torch.randn(2), "f": print},  # a global beyond plain tensors
        torch.nn.Linear(2, 2),  # a whole module
    ],
    ids=["function", "module"],
)
def test_pickled_code_and_modules_are_refused(tmp_path: Path, obj: object) -> None:
    torch.save(obj, tmp_path / "x.pth")
    with pytest.raises(WeightsError, match="x.pth: not loaded: .*dlagraph never unpickles code"):
        build_module("dla_tiny_digits", weights=tmp_path / "x.pth")


def test_legacy_files_views_and_wrappers_read_like_torch_load(tmp_path: Path) -> None:
    from dlagraph.checkpoints.read import read_owned

    a = torch.randn(2, 3)
    sd = {"a": a, "t": a.t(), "tail": torch.randn(5)[2:], "half": torch.randn(3).half(),
          "flag": torch.tensor([True, False]), "long": torch.arange(4)}  # fmt: skip
    torch.save({"model": sd, "epoch": 3}, tmp_path / "c.pth")
    torch.save(sd, tmp_path / "old.pth", _use_new_zipfile_serialization=False)
    for name in ("c.pth", "old.pth"):
        got = read_owned(tmp_path / name)
        assert set(got) == set(sd)
        assert all(torch.equal(got[k], v) and got[k].dtype == v.dtype for k, v in sd.items())
        assert got["t"].data_ptr() != got["a"].data_ptr()  # copies of their own, no aliasing


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=600), suffix=st.sampled_from([".pth", ".safetensors", ".bin"]))
def test_random_bytes_are_weights_errors(tmp_path: Path, data: bytes, suffix: str) -> None:
    path = tmp_path / f"random{suffix}"
    path.write_bytes(data)
    with pytest.raises(WeightsError):
        build_module("dla_tiny_digits", weights=path)


@pytest.fixture(scope="module")
def real_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("real")
    sd = build_module("dla_tiny_digits").state_dict()
    torch.save(sd, folder / "a.pth")
    save_file(sd, str(folder / "a.safetensors"))
    return {s: (folder / f"a{s}").read_bytes() for s in (".pth", ".safetensors")}


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    suffix=st.sampled_from([".pth", ".safetensors"]),
    edits=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), min_size=1, max_size=8),
    cut=st.none() | st.floats(0, 1),
)
def test_damaged_checkpoints_load_exactly_or_fail_in_one_line(
    tmp_path: Path, real_files: dict[str, bytes], suffix: str, edits: list, cut: float | None
) -> None:
    """Bytes flipped or the file cut short, anywhere: either a strict load of a network that fits
    (damage inside tensor data) or one WeightsError line; never another exception."""
    data = bytearray(real_files[suffix])
    for where, value in edits:
        data[min(int(where * len(data)), len(data) - 1)] = value
    if cut is not None:
        data = data[: int(cut * len(data))]
    path = tmp_path / f"damaged{suffix}"
    path.write_bytes(bytes(data))
    try:
        model = build_module("dla_tiny_digits", weights=path)
    except WeightsError as e:
        assert len(str(e).splitlines()) <= 1 or "does not fit" in str(e)
    else:
        assert model.load_report.ok


@pytest.mark.parametrize(
    "name", ["dla_tiny_seg", "centernet_tiny_shapes", "dla48_s_s", "dla62_s_s_seg_camvid"]
)
def test_every_head_loads_instantly_in_both_backends(name: str) -> None:
    from dlagraph import generate_source

    from .helpers import exec_generated

    model = build_module(name).eval()
    state = model.state_dict()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        want = model(x)
        for other in (
            build_module(name, weights=state),
            exec_generated(generate_source(name)).from_weights(state),
        ):
            got = other.eval()(x)
            pairs = [(got[k], want[k]) for k in want] if isinstance(want, dict) else [(got, want)]
            assert all(torch.equal(a, b) for a, b in pairs)


def test_a_weights_build_skips_torch_init_in_its_own_thread_only() -> None:
    """build_module(weights=) skips torch's random init while it builds on the meta device; other
    threads still initialise, and torch's classes are as they were afterwards."""
    import math
    import threading

    from dlagraph.checkpoints.instant import skipped_init

    before = torch.nn.modules.conv._ConvNd.reset_parameters
    sd = build_module("dla_tiny_digits").state_dict()
    model = build_module("dla_tiny_digits", weights=sd)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in sd.items())
    assert torch.nn.modules.conv._ConvNd.reset_parameters is before
    other: list = []
    with skipped_init():
        thread = threading.Thread(target=lambda: other.append(torch.nn.Conv2d(64, 64, 3)))
        thread.start()
        thread.join()
    bound = 1 / math.sqrt(64 * 9)
    w = other[0].weight
    assert w.abs().max() <= bound and w.std() > 0.3 * bound  # uniform(-b, b), not skipped


# ---- checkpoint contents -------------------------------------------------------------------------


@pytest.fixture
def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return build_module(TINY)


@pytest.mark.parametrize("kind", ["sparse", "meta"])
def test_sparse_or_meta_tensor_loads_nothing(tiny_model: nn.Module, kind: str) -> None:
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    sd = {k: v.clone() + 1 if v.is_floating_point() else v for k, v in before.items()}
    last = [k for k, v in sd.items() if v.is_floating_point()][-1]
    sd[last] = (
        sd[last].to_sparse() if kind == "sparse" else torch.empty_like(sd[last], device="meta")
    )
    with pytest.raises(WeightsError, match="unusable 1"):
        load_weights(tiny_model, sd)
    after = tiny_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # nothing was loaded


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("truncated.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{"),
        ("garbage.safetensors", bytes(range(7, 71))),
        ("empty.safetensors", b""),
        ("empty.pth", b""),
        ("garbage.pth", b"not a checkpoint at all"),
    ],
)
def test_unreadable_checkpoint_files_are_weights_errors(
    tiny_model: nn.Module, tmp_path: Path, name: str, content: bytes
) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(WeightsError):
        load_weights(tiny_model, tmp_path / name)


def test_checkpoint_folder_and_non_string_keys_are_weights_errors(
    tiny_model: nn.Module, tmp_path: Path
) -> None:
    (tmp_path / "dir.safetensors").mkdir()
    with pytest.raises(WeightsError, match="is a folder"):
        load_weights(tiny_model, tmp_path / "dir.safetensors")
    torch.save({3: torch.zeros(1)}, tmp_path / "intkey.pth")
    with pytest.raises(WeightsError, match="key 3 is not a string"):
        load_weights(tiny_model, tmp_path / "intkey.pth")


def test_dtype_changes_are_reported(tiny_model: nn.Module) -> None:
    sd = tiny_model.state_dict()
    w = "base_layer.0.weight"
    sd = {**sd, w: sd[w].to(torch.int32), "level0.1.weight": sd["level0.1.weight"].bool()}
    report = load_weights(tiny_model, sd)
    assert (w, "int32", "float32") in report.converted
    assert "dtype-converted 2" in str(report) and f"dtype: {w}: checkpoint int32" in str(report)


def test_reports_list_twenty_names_of_each_kind_then_count_the_rest(tiny_model: nn.Module) -> None:
    sd = dict(tiny_model.state_dict())
    sd.update({f"extra{i}.w\nfake: line": torch.zeros(1) for i in range(30_000)})
    with pytest.raises(WeightsError) as e:
        load_weights(tiny_model, sd)
    lines = str(e.value).splitlines()
    assert len(lines) < 70 and "… and 29,980 more unexpected" in lines[-1]
    assert "unexpected: extra0.w\\nfake: line" in str(e.value)  # one line, escaped
    report = load_weights(tiny_model, sd, transfer=True)
    table = report.transfer_table()
    assert len(table) == 22 and table[-1].strip().startswith("… and ")


def test_a_transfer_counts_every_model_tensor_once(tiny_model: nn.Module) -> None:
    """Transferred, or left at init (missing, reshaped or unusable in the checkpoint)."""
    sd = dict(tiny_model.state_dict())
    first, second, third = [k for k in sd if k.endswith("weight")][:3]
    del sd[first]
    sd[second] = torch.zeros(1, 2, 3)  # reshaped
    sd[third] = sd[third].to_sparse()  # unusable
    report = load_weights(tiny_model, sd, transfer=True)
    rows = [r.split() for r in report.transfer_table()[1:]]
    assert sum(int(r[1]) + int(r[2]) for r in rows) == len(tiny_model.state_dict())
    assert sum(int(r[2]) for r in rows) == 3
    assert "left at init 3 (1 missing, 1 reshaped, 1 unusable in the checkpoint)" in str(report)


def test_a_compressed_archive_entry_is_refused_before_it_is_inflated(tmp_path: Path) -> None:
    """torch.save stores its entries uncompressed: a deflated entry (a few KiB declaring a
    hundred MiB) is not one of its archives, refused from the directory alone."""
    import zipfile

    plain = tmp_path / "plain.pth"
    torch.save(build_module("dla_tiny_digits").state_dict(), plain)
    bomb = tmp_path / "bomb.pth"
    with zipfile.ZipFile(plain) as z, zipfile.ZipFile(bomb, "w") as out:
        for info in z.infolist():
            out.writestr(info, z.read(info.filename))
        out.writestr("plain/data/999", b"\0" * (100 * 2**20), zipfile.ZIP_DEFLATED)
    assert bomb.stat().st_size < 2 * plain.stat().st_size
    with pytest.raises(WeightsError, match=r"entry 'plain/data/999' is compressed .* not reading"):
        read_state_dict(bomb)
    assert len(read_state_dict(plain)) > 0
