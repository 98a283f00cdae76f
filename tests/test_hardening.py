"""Hostile and careless inputs, one test per case found by an outside pass (issue 12).

Each test is named after the case it covers; each failed on the code before the fix.
"""

from __future__ import annotations

import copy
import enum
import math
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

import dlagraph
from dlagraph import (
    CodegenError,
    DlagraphError,
    GraphError,
    SpecError,
    WeightsError,
    build_module,
    compile_spec,
    generate_source,
    load_spec,
    load_weights,
)
from dlagraph.cli import main
from dlagraph.io import write_outputs
from dlagraph.spec.load import MAX_PROBLEMS

from .helpers import TINY, exec_generated

ROOT = Path(__file__).resolve().parent.parent


def problems_of(text: str, tmp_path: Path) -> list[str]:
    p = tmp_path / "spec.yaml"
    p.write_text(textwrap.dedent(text))
    with pytest.raises(SpecError) as info:
        load_spec(p)
    return info.value.problems


TINY_YAML = """\
name: tiny
block: {type: basic}
levels: [{channels: 8}, {channels: 16}, {channels: 32, depth: 1}]
"""

# ---- specs and YAML ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "hint"),
    [
        ("num-classes", "`num_classes` belongs to head"),
        ("paper-name", "did you mean 'paper_name'?"),
        ("Paper_Name", "did you mean 'paper_name'?"),
        ("a.b", "the top level takes: name, paper_name"),
        ("k" * 45, "the top level takes: name, paper_name"),
    ],
)
def test_dashed_dotted_and_long_unknown_keys_get_their_line(
    tmp_path: Path, key: str, hint: str
) -> None:
    (found,) = problems_of(TINY_YAML + f"{key}: 3\n", tmp_path)
    assert found.startswith(f"{tmp_path / 'spec.yaml'}:4: ['") or found.startswith(
        f"{tmp_path / 'spec.yaml'}:4: Paper_Name"
    ), found
    assert hint in found


def test_num_classes_typo_under_head_suggests_the_key(tmp_path: Path) -> None:
    (found,) = problems_of(TINY_YAML + "head: {type: classifier, num-classes: 3}\n", tmp_path)
    assert "head['num-classes']: unknown key (did you mean 'num_classes'?)" in found


SIX_TREES = """\
name: six
block: {type: basic}
levels: [{channels: 8}, {channels: 16}, {channels: 16, depth: 1}, {channels: 16, depth: 1},
         {channels: 16, depth: 1}, {channels: 16, depth: 1}, {channels: 16, depth: 1}]
"""


def test_five_or_more_tree_levels_build_at_the_smallest_valid_size(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    p = tmp_path / "six.yaml"
    p.write_text(SIX_TREES)
    assert main(["build", str(p), "-o", str(tmp_path / "out"), "--no-diagram"]) == 0
    out = capsys.readouterr().out
    assert "MACs at 256x256" in out and "total stride 64" in out
    assert dlagraph.summarize(str(p)).input_size == (256, 256)


def test_draw_honours_input_size_and_labels_none(tmp_path: Path) -> None:
    p = tmp_path / "six.yaml"
    p.write_text(SIX_TREES)
    assert main(["draw", str(p), "-o", str(tmp_path / "a.dot"), "--labels", "none"]) == 0
    assert main(["draw", str(p), "-o", str(tmp_path / "b.dot"), "--labels", "shapes"]) == 0
    assert "16x4x4" in (tmp_path / "b.dot").read_text()  # level 6 at 256 / 64
    args = ["draw", str(p), "-o", str(tmp_path / "c.dot"), "--labels", "shapes"]
    assert main([*args, "--input-size", "128", "192"]) == 0
    assert "16x2x3" in (tmp_path / "c.dot").read_text()
    assert main([*args, "--input-size", "100", "100"]) == 2  # a clean error, not a traceback


@pytest.mark.parametrize("depth", [40, 500, 5000])
def test_deep_nesting_is_refused_without_recursion_error(tmp_path: Path, depth: int) -> None:
    (found,) = problems_of(TINY_YAML + "x: " + "[" * depth + "]" * depth + "\n", tmp_path)
    assert "nests deeper than 32 levels" in found
    deep: object = 1
    for _ in range(depth):
        deep = [deep]
    with pytest.raises(SpecError, match="nests deeper"):
        load_spec({**load_spec(TINY).to_dict(), "levels": deep})


def test_self_referencing_mapping_is_refused() -> None:
    loop: dict = {}
    loop["a"] = loop
    with pytest.raises(SpecError, match="refers to itself"):
        load_spec({"name": "x", "block": loop, "levels": []})


def test_error_reporting_is_bounded_and_linear(tmp_path: Path) -> None:
    body = "".join(f"k{i}: 1\n" for i in range(25_000))  # 240 KB: under the 256 KiB cap
    p = tmp_path / "spec.yaml"
    p.write_text(TINY_YAML + body)
    t = time.perf_counter()
    with pytest.raises(SpecError) as info:
        load_spec(p)
    elapsed = time.perf_counter() - t
    found = info.value.problems
    assert len(found) == MAX_PROBLEMS + 1
    assert found[0].startswith(f"{p}:4: k0: unknown key")
    assert found[-1] == f"{p}: … and {25_000 - MAX_PROBLEMS:,} more problems not listed"
    assert elapsed < 5  # was 31 s: quadratic line lookups and a difflib hint per key


def test_integer_of_thousands_of_digits(tmp_path: Path) -> None:
    (found,) = problems_of(TINY_YAML.replace("32, depth", "3" * 5000 + ", depth"), tmp_path)
    assert found.endswith(":3: an integer of 5,000 digits is too large")
    spec = copy.deepcopy(TINY)
    spec["levels"][2]["channels"] = 10**5000
    (found,) = problems_of_mapping(spec)
    assert "must be at most 65536 (got an integer of about 5,001 digits)" in found


def problems_of_mapping(spec: dict) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    return info.value.problems


def test_unknown_block_and_head_types_are_cut() -> None:
    spec = copy.deepcopy(TINY)
    spec["block"] = {"type": "b" * 900_000}
    spec["head"] = {"type": "h" * 900_000}
    found = problems_of_mapping(spec)
    assert len(found) == 2 and all(len(line) < 200 for line in found), [len(x) for x in found]


def test_merge_keys_are_supported(tmp_path: Path) -> None:
    p = tmp_path / "spec.yaml"
    p.write_text(
        "x-tree: &tree {channels: 32, depth: 1}\n"
        "name: merged\nblock: {type: basic}\n"
        "levels: [{channels: 8}, {channels: 16}, {<<: *tree}, {<<: *tree, channels: 64}]\n"
    )
    spec = load_spec(p)
    assert [lv.channels for lv in spec.levels] == [8, 16, 32, 64]
    p.write_text("name: x\nlevels: [{<<: 3}]\n")
    (found,) = problems_of(p.read_text(), tmp_path)
    assert "merge key `<<` must refer to a mapping" in found


def test_mixing_convs_and_depth_names_what_each_level_kind_takes() -> None:
    spec = copy.deepcopy(TINY)
    spec["levels"][2]["convs"] = 2
    (found,) = problems_of_mapping(spec)
    assert found == (
        "<spec>: levels[2].convs: `convs` belongs to a conv level; "
        "a tree level (Levels 3 and up) takes: channels, depth, aggregate_input"
    )
    assert "did you mean 'convs'" not in found


def test_a_network_too_wide_for_memory_is_refused_before_allocating() -> None:
    spec = copy.deepcopy(TINY)
    spec["levels"][2]["channels"] = 65_536
    spec["levels"][3]["channels"] = 65_536
    with pytest.raises(DlagraphError, match=r"need [\d,.]+ GiB of float32 memory, but only"):
        build_module(spec)


# ---- outputs -------------------------------------------------------------------------------------


def test_output_folder_that_is_a_file_or_under_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "afile").write_text("mine")
    for out in ("afile", "afile/sub"):
        assert main(["build", "specs/dla36.yaml", "-o", str(tmp_path / out)]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and "part of that path is a file" in err
    assert (tmp_path / "afile").read_text() == "mine"


def test_output_folder_that_cannot_be_created_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    real = Path.mkdir

    def read_only(self: Path, *a: object, **k: object) -> None:
        if self.name == "denied":
            raise PermissionError(13, "Permission denied", str(self))
        real(self, *a, **k)

    monkeypatch.setattr(Path, "mkdir", read_only)
    out = tmp_path / "new" / "denied"
    assert main(["build", "specs/dla36.yaml", "-o", str(out), "--no-diagram"]) == 2
    assert "error: cannot write outputs: Permission denied" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # the folder it did create is gone again


@pytest.mark.parametrize("when", [1, 2, 3])
def test_interrupt_while_writing_rolls_everything_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, when: int
) -> None:
    (tmp_path / "a.py").write_text("# Generated by dlagraph (old a)\n")
    real, calls = os.replace, {"n": 0}

    def interrupted(src: object, dst: object) -> None:
        calls["n"] += 1
        if calls["n"] == when:
            raise KeyboardInterrupt
        real(src, dst)

    monkeypatch.setattr(os, "replace", interrupted)
    files = {tmp_path / n: f"# Generated by dlagraph (new {n})\n" for n in ("a.py", "b.py")}
    with pytest.raises(KeyboardInterrupt):
        write_outputs(files)
    monkeypatch.setattr(os, "replace", real)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.py"]  # no .tmp, no .old, no b.py
    assert (tmp_path / "a.py").read_text() == "# Generated by dlagraph (old a)\n"


def test_fifo_output_fails_fast_instead_of_hanging(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "x.py")
    with pytest.raises(CodegenError, match="not a regular file"):
        write_outputs({tmp_path / "x.py": "# Generated by dlagraph\n"}, force=True)
    assert stat.S_ISFIFO(os.lstat(tmp_path / "x.py").st_mode)


def test_symlink_to_dev_zero_is_not_read(tmp_path: Path) -> None:
    (tmp_path / "x.py").symlink_to("/dev/zero")
    t = time.perf_counter()
    with pytest.raises(CodegenError, match="is a symbolic link"):
        write_outputs({tmp_path / "x.py": "# Generated by dlagraph\n"})
    assert time.perf_counter() - t < 1
    assert dlagraph.io.is_generated(tmp_path / "x.py") is False


def test_two_specs_with_one_name_in_one_codegen_call(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    for n in ("a", "b"):
        (tmp_path / f"{n}.yaml").write_text(TINY_YAML)
    args = ["codegen", str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml"), "-o", str(tmp_path)]
    assert main(args) == 2
    assert "both have name 'tiny'" in capsys.readouterr().err
    assert not (tmp_path / "tiny.py").exists()


@pytest.mark.parametrize("name", ["torch", "math", "typing", "os"])
def test_spec_named_like_a_module_it_would_shadow(name: str) -> None:
    (found,) = problems_of_mapping({**TINY, "name": name})
    assert f"name: must not be the name of a Python module ({name}.py would shadow" in found


FAKE_DOT = """#!/bin/sh
echo $$ > "{pidfile}"
exec sleep 600
"""


@pytest.fixture
def hanging_dot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `dot` on PATH that never finishes, and the file it writes its pid to."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    pidfile = tmp_path / "dot.pid"
    (bin_dir / "dot").write_text(FAKE_DOT.format(pidfile=pidfile))
    (bin_dir / "dot").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return pidfile


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "zombie" in status.read_text()


def test_graphviz_has_a_time_limit_and_is_reaped(hanging_dot: Path, tmp_path: Path) -> None:
    from dlagraph.backends.render import render

    with pytest.raises(DlagraphError, match="Graphviz took longer than 0.5 s"):
        render(dlagraph.draw("specs/dla36.yaml"), "svg", timeout=0.5)
    assert _gone(int(hanging_dot.read_text()))


@pytest.mark.parametrize("blocked", [False, True], ids=["plain", "spawned with SIGINT blocked"])
def test_kill_int_while_graphviz_renders_leaves_no_orphan(
    hanging_dot: Path, tmp_path: Path, blocked: bool
) -> None:
    # blocked: a parent that leaves SIGINT blocked in its children (after torch.compile, a Python
    # process spawned them with every signal blocked); the CLI unblocks it. SIGINT's disposition
    # is reset to the default either way: an ignored SIGINT is inherited, and a CLI started with it
    # ignored (a background job of a shell) rightly ignores it.
    def block() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if blocked:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})

    out, errs = (tmp_path / "stdout").open("wb"), (tmp_path / "stderr").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dlagraph.cli",
            "build",
            "specs/dla36.yaml",
            "-o",
            str(tmp_path / "o"),
        ],
        # files, not pipes: a process forked meanwhile by this (torch-using) test process could
        # inherit a pipe's write end and hold it open, so EOF would never come although the CLI
        # had exited
        stdout=out,
        stderr=errs,
        env=os.environ,
        preexec_fn=block,  # noqa: PLW1509 - a test of exactly this
    )
    try:
        deadline = time.time() + 60
        while not hanging_dot.exists() and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # say why: the CLI's signal state
            status = Path(f"/proc/{proc.pid}/status").read_text().splitlines()
            pytest.fail(f"the CLI ignored SIGINT: {[x for x in status if x.startswith('Sig')]}")
    finally:  # a failure here must not leave the CLI to the next test
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        out.close()
        errs.close()
    err = (tmp_path / "stderr").read_bytes()
    assert proc.returncode == 130 and b"Traceback" not in err
    time.sleep(0.2)
    assert _gone(int(hanging_dot.read_text()))
    assert not (tmp_path / "o").exists()  # interrupted before writing: nothing on disk


def test_no_diagram_skips_graphviz(hanging_dot: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["build", "specs/dla36.yaml", "-o", str(out), "--no-diagram"]) == 0
    assert not hanging_dot.exists()
    assert sorted(p.suffix for p in out.iterdir()) == [".json", ".py"]


# ---- generated code ------------------------------------------------------------------------------


class InvertedResidual(nn.Module):
    """Shares its name with the model class of a spec called `inverted_residual`."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)) + shortcut)


class DlaRoot(InvertedResidual):
    """Shares its name with a helper every generated file defines."""


def test_block_class_named_like_the_model_class() -> None:
    dlagraph.register_block("inverted_residual", replace=True)(InvertedResidual)
    try:
        spec = {**TINY, "name": "inverted_residual", "block": {"type": "inverted_residual"}}
        cls = exec_generated(generate_source(spec))
        assert cls.__name__ == "InvertedResidualNet"
        torch.manual_seed(0)
        gen = cls().eval()
        torch.manual_seed(0)
        ref = build_module(spec).eval()
        x = torch.randn(1, 3, 32, 32)
        assert torch.equal(gen(x), ref(x))
    finally:
        dlagraph.unregister_block("inverted_residual")


def test_block_class_named_like_a_helper_is_refused() -> None:
    dlagraph.register_block("rooty")(DlaRoot)
    try:
        with pytest.raises(CodegenError, match="'DlaRoot' has the name of a helper"):
            generate_source({**TINY, "block": {"type": "rooty"}})
    finally:
        dlagraph.unregister_block("rooty")


@pytest.mark.parametrize(
    ("part", "key", "value"),
    [
        ("layout", "module", "level2.tree1;__import__('os').system('true')"),
        ("layout", "module", "os.system"),  # a valid path, but not this node's: refused
        ("rec", "in_channels", "32)\nimport os\n("),
        ("rec", "options", {"cardinality": "__import__('os')"}),
        ("rec", "evil", "__import__('os')"),  # a field the op's record does not declare
        ("layout", "symbols", {"in_channels": "__import__('os')"}),
    ],
)
def test_tampered_graph_attributes_never_reach_source(part: str, key: str, value: object) -> None:
    g = compile_spec({**TINY, "block": {"type": "split", "cardinality": 1}})
    g.nodes["level2.tree1"][part][key] = value
    with pytest.raises(GraphError, match="level2.tree1"):
        generate_source(g)
    with pytest.raises(GraphError, match="level2.tree1"):
        build_module(g)


def test_source_path_with_a_newline_stays_in_the_comment() -> None:
    src = generate_source(compile_spec(TINY), source_path="x.yaml\nimport os")
    assert "\nimport os" not in src and "'x.yaml\\nimport os'" in src


class Act(str, enum.Enum):
    relu = "relu"
    gelu = "gelu"


class ScaledBlock(nn.Module):
    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)
        scale: float = 1.0
        act: Act = Act.relu

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        scale: float = 1.0,
        act: str = "relu",
    ):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.scale = 1.0 if math.isnan(scale) or math.isinf(scale) else scale
        self.act = act

    def forward(self, x: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        y = self.conv(x) * self.scale + shortcut
        return torch.relu(y) if self.act == "relu" else torch.nn.functional.gelu(y)


@pytest.mark.parametrize("scale", [float("nan"), float("inf"), -float("inf"), 0.5])
def test_non_finite_float_and_enum_options_become_literals(scale: float) -> None:
    dlagraph.register_block("scaled")(ScaledBlock)
    try:
        spec = {**TINY, "block": {"type": "scaled", "scale": scale, "act": Act.gelu}}
        src = generate_source(spec)
        assert 'act="gelu"' in src and "<Act" not in src
        cls = exec_generated(src)
        torch.manual_seed(0)
        gen = cls().eval()
        torch.manual_seed(0)
        ref = build_module(spec).eval()
        x = torch.randn(1, 3, 32, 32)
        assert torch.equal(gen(x), ref(x))
    finally:
        dlagraph.unregister_block("scaled")


# ---- checkpoints ---------------------------------------------------------------------------------


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
        ("garbage.safetensors", os.urandom(64)),
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


# ---- heads ---------------------------------------------------------------------------------------


def test_unsorted_out_indices_agree_with_feature_info() -> None:
    spec = {**TINY, "head": {"type": "features", "out_indices": [3, 1]}}
    model = build_module(spec).eval()
    outs = model(torch.randn(1, 3, 32, 32))
    assert [f["num_chs"] for f in model.feature_info] == [o.shape[1] for o in outs] == [64, 16]
    gen = exec_generated(generate_source(spec))().eval()
    assert [o.shape[1] for o in gen(torch.randn(1, 3, 32, 32))] == [64, 16]


# ---- a new user's first steps --------------------------------------------------------------------


def test_presets_and_spec_folders_get_clear_messages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["presets", "specs"]) == 2
    assert "specs: no such folder of specs" in capsys.readouterr().err
    (tmp_path / "specs").mkdir()
    assert main(["build", "specs"]) == 2
    assert "specs: is a folder, not a spec file" in capsys.readouterr().err
    (tmp_path / "dla36").mkdir()  # a folder named like a preset: the path wins, and says so
    assert main(["build", "dla36"]) == 2
    err = capsys.readouterr().err
    assert "dla36: is a folder here, and a path wins over the preset of the same name" in err
    assert err.count("\n") == 1 and err.rstrip().endswith("dla36.yaml")


def test_examples_find_their_specs_from_any_folder(tmp_path: Path) -> None:
    script = ROOT / "examples" / "train_classifier.py"
    r = subprocess.run(
        [sys.executable, str(script), "--spec", "missing.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "error: missing.yaml: no such spec file, and no preset of that name" in r.stderr
    for name in ("train_classifier", "train_segmentation", "finetune_from_timm"):
        text = (ROOT / "examples" / f"{name}.py").read_text()
        assert 'SPECS = Path(__file__).resolve().parent.parent / "specs"' in text


def test_debug_works_after_the_subcommand_and_version_exists(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: 1\n")
    with pytest.raises(SpecError):
        main(["build", str(bad), "--debug"])
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"dlagraph {dlagraph.__version__}"


def test_every_argument_has_help_and_no_rest_markup() -> None:
    from dlagraph.cli import parser

    ap = parser()
    assert "``" not in ap.format_help()
    subs = next(a for a in ap._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, sp in subs.choices.items():
        for action in sp._actions:
            assert action.help, f"dlagraph {name} {action.dest}: no help text"


def test_help_lists_the_lazy_entry_points() -> None:
    import pydoc

    text = pydoc.render_doc(dlagraph, renderer=pydoc.plaintext)
    for name in ("build_module", "generate_source", "draw", "load_weights", "fold_bn"):
        assert f"    {name}(" in text, name


def test_repository_hygiene() -> None:
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    assert not [f for f in tracked if ".egg-info" in f]
    ignored = (ROOT / ".gitignore").read_text().split()
    assert {"runs/", "dlagraph-out/", "build/"} <= set(ignored)
    assert "BSD 3-Clause License" in (ROOT / "LICENSE").read_text()
    from dlagraph.cli.common import DEFAULT_OUTPUT

    assert DEFAULT_OUTPUT != "build"  # `pip wheel .` writes build/lib
