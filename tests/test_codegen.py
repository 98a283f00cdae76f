"""The code generator: goldens, bit-identity with the interpreter, standalone files."""

from __future__ import annotations

import enum
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict
from torch import nn

import dlagraph
from dlagraph import (
    CodegenError,
    GraphError,
    InputSizeError,
    build_module,
    compile_spec,
    generate_source,
    load_spec,
    summarize,
)
from dlagraph.cli import main

from .conftest import ROOT, SPEC_PATHS, spec_ids
from .helpers import TINY, exec_generated, import_file

torch = pytest.importorskip("torch")


def load_generated(src: str, tmp_path: Path, name: str = "gen") -> object:
    path = tmp_path / f"{name}.py"
    path.write_text(src)
    return import_file(path, f"_dlagraph_gen_{name}")


def test_codegen_folder_is_current(tmp_path: Path) -> None:
    """`codegen/` must equal what `dlagraph codegen specs/*.yaml -o codegen` emits now."""
    assert main(["codegen", *[f"specs/{p.name}" for p in SPEC_PATHS], "-o", str(tmp_path)]) == 0
    committed = sorted(p.name for p in (ROOT / "codegen").glob("*.py"))
    assert committed == sorted(p.name for p in tmp_path.glob("*.py")), "codegen/ has stale files"
    for p in tmp_path.glob("*.py"):
        assert (ROOT / "codegen" / p.name).read_text() == p.read_text(), (
            f"codegen/{p.name} is stale; run: dlagraph codegen specs/*.yaml -o codegen"
        )


@pytest.mark.parametrize("path", SPEC_PATHS, ids=spec_ids())
def test_generated_equals_interpreter(path: Path, tmp_path: Path) -> None:
    spec = load_spec(path)
    mod = load_generated((ROOT / "codegen" / f"{spec.name}.py").read_text(), tmp_path, spec.name)
    cls = getattr(mod, mod.__all__[0])
    torch.manual_seed(3)
    gen = cls()
    torch.manual_seed(3)
    ref = build_module(spec)
    gsd, rsd = gen.state_dict(), ref.state_dict()
    assert list(gsd) == list(rsd)
    assert all(torch.equal(gsd[k], rsd[k]) for k in rsd), "init differs under the same seed"
    gen.eval(), ref.eval()
    x = torch.randn(1, spec.in_channels, 64, 64)
    with torch.no_grad():
        a, b = gen(x), ref(x)
    if isinstance(a, dict):  # CenterNet: {head: map} in the spec's head order
        assert list(a) == list(b)
        a, b = tuple(a.values()), tuple(b.values())
    a, b = (a, b) if isinstance(a, (tuple, list)) else ((a,), (b,))
    assert len(a) == len(b) and all(torch.equal(u, v) for u, v in zip(a, b, strict=True))


def test_keywords_num_classes_and_in_chans(tmp_path: Path) -> None:
    mod = load_generated(generate_source("specs/dla48_s_s.yaml"), tmp_path)
    model = mod.Dla48SS(num_classes=7, in_chans=1).eval()
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 7)


def test_generated_file_is_standalone_scriptable_and_exports(tmp_path: Path) -> None:
    gen = tmp_path / "dla60_res2next.py"
    shutil.copy(ROOT / "codegen" / "dla60_res2next.py", gen)
    code = (
        "import sys, io, warnings\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'dlagraph': raise ImportError('dlagraph is blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "warnings.simplefilter('ignore')\n"
        "import torch, dla60_res2next as m\n"
        "model = m.Dla60Res2next().eval()\n"
        "x = torch.randn(1, 3, 64, 64)\n"
        "s = torch.jit.script(model)\n"
        "assert torch.equal(s(x), model(x))\n"
        "torch.onnx.export(model, (x,), io.BytesIO(), dynamo=False)\n"
        "print('ok', 'dlagraph' in sys.modules)\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok False"


def test_byte_identical_across_hash_seeds() -> None:
    code = "import dlagraph,sys; sys.stdout.write(dlagraph.generate_source('specs/dla169.yaml'))"
    outs = set()
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        r = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            cwd=ROOT,
        )
        assert r.returncode == 0, r.stderr
        outs.add(r.stdout)
    assert len(outs) == 1
    assert outs.pop() == (ROOT / "codegen" / "dla169.py").read_text()


def test_stable_under_ruff_format_and_passes_ruff_check(tmp_path: Path) -> None:
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff not installed")
    shutil.copytree(ROOT / "codegen", tmp_path / "codegen")
    r = subprocess.run(
        [
            ruff,
            "format",
            "--check",
            "--isolated",
            "--line-length",
            "100",
            str(tmp_path / "codegen"),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run(
        [
            ruff,
            "check",
            "--isolated",
            "--select",
            "E,F,I,UP,B",
            "--line-length",
            "100",
            "--target-version",
            "py310",
            str(tmp_path / "codegen"),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_header_has_provenance_and_no_timestamp() -> None:
    head = (ROOT / "codegen" / "dla36.py").read_text().splitlines()[:2]
    assert (
        head[0].startswith("# Generated by dlagraph ")
        and "from specs/dla36.yaml (sha256 " in head[0]
    )
    assert head[1] == "# Do not edit; regenerate with `dlagraph codegen specs/dla36.yaml -o DIR`."


def test_forward_is_one_statement_per_node_in_port_order() -> None:
    src = generate_source("specs/dla36.yaml")
    assert (
        "level3_tree2_root = self.level3.tree2.root(\n            [level3_tree2_tree2, "
        "level3_tree2_tree1, level3_downsample, level3_tree1_root]\n        )" in src
    )
    assert "(levels[3], eq. 5)" in src


def test_never_overwrites_foreign_files(tmp_path: Path) -> None:
    (tmp_path / "dla36.py").write_text("# my own model\n")
    assert main(["codegen", "specs/dla36.yaml", "specs/dla169.yaml", "-o", str(tmp_path)]) == 2
    assert (tmp_path / "dla36.py").read_text() == "# my own model\n"
    assert not (tmp_path / "dla169.py").exists()  # all or nothing
    assert main(["codegen", "specs/dla36.yaml", "-o", str(tmp_path), "--force"]) == 0
    assert main(["codegen", "specs", "-o", str(tmp_path)]) == 0  # folders work; ours is replaced


def test_build_writes_the_source(tmp_path: Path) -> None:
    assert main(["build", "specs/dla36.yaml", "-o", str(tmp_path)]) == 0
    assert (tmp_path / "dla36.py").read_text() == (ROOT / "codegen" / "dla36.py").read_text()


def test_registered_block_without_standalone_source_is_refused() -> None:
    from torch import nn

    import dlagraph

    helper = nn.Identity

    @dlagraph.register_block("needs_helper")
    class NeedsHelper(nn.Module):
        def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
            super().__init__()
            self.conv = nn.Conv2d(in_channels, out_channels, 3, stride, 1)
            self.extra = helper()

        def forward(self, x: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
            return self.extra(self.conv(x)) + shortcut

    try:
        spec = {
            "name": "t",
            "block": {"type": "needs_helper"},
            "levels": [{"channels": 8}, {"channels": 8}, {"channels": 8, "depth": 1}],
        }
        with pytest.raises(CodegenError, match="standalone file cannot import: helper;"):
            generate_source(spec)
    finally:
        dlagraph.unregister_block("needs_helper")


@given(
    block=st.sampled_from(
        [
            {"type": "basic"},
            {"type": "bottleneck"},
            {"type": "split", "cardinality": 4},
            {"type": "res2net", "scale": 2, "cardinality": 2, "base_width": 16},
        ]
    ),
    depths=st.lists(st.integers(1, 3), min_size=1, max_size=3),
    residual=st.booleans(),
    kernel=st.sampled_from([1, 3]),
    layout=st.sampled_from(["timm", "official"]),
    features=st.booleans(),
)
def test_random_specs_generated_equals_interpreter(
    block: dict, depths: list[int], residual: bool, kernel: int, layout: str, features: bool
) -> None:
    spec = {
        "name": "rand",
        "block": block,
        "layout": layout,
        "levels": [{"channels": 8}, {"channels": 16}]
        + [{"channels": 32 * (i + 1), "depth": d} for i, d in enumerate(depths)],
        "aggregation": {"residual": residual, "kernel_size": kernel},
        "head": {"type": "features", "out_indices": [1, len(depths) + 1]}
        if features
        else {"type": "classifier", "num_classes": 5},
    }
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
    x = torch.randn(1, 3, 2 ** (len(depths) + 1) * 2, 2 ** (len(depths) + 1) * 2)
    with torch.no_grad():
        a, b = gen(x), ref(x)
    a, b = (
        (a, b)
        if not features
        else (torch.cat([t.flatten() for t in a]), torch.cat([t.flatten() for t in b]))
    )
    assert torch.equal(a, b)


def test_every_generated_comment_says_something() -> None:
    """No comment of a golden is empty or has an empty slot, like `(head.down_ratio, )`."""
    for path in sorted((ROOT / "codegen").glob("*.py")):
        for line in path.read_text().splitlines():
            if "  # " not in line and not line.lstrip().startswith("# "):
                continue
            comment = line.split("# ", 1)[1]
            assert comment.strip() and ", )" not in comment and "()" not in comment, (
                f"{path.name}: {line.strip()}"
            )
            assert not re.search(r"\bstride \d", comment), f"{path.name}: reduction, not stride"


def test_pruned_features_head_documents_the_stride_summarize_accepts() -> None:
    spec = {**TINY, "head": {"type": "features", "out_indices": [1, 2]}}
    src = generate_source(spec)
    assert "Input sides must be multiples of 4." in src
    assert summarize(spec, (4, 8)).input_size == (4, 8)
    with pytest.raises(InputSizeError, match="multiples of the total stride 4"):
        summarize(spec, (6, 8))


# ---- strings from a reloaded graph never reach the source raw ------------------------------------


def _reloaded(spec: dict | str = "dla_tiny_digits") -> object:
    """A compiled graph as a user reloads it from ``.graph.json`` (JSON round trip)."""
    import json

    import networkx as nx

    from dlagraph.cli.build import _graph_json

    data = json.loads(_graph_json(compile_spec(spec)))
    return nx.node_link_graph(data, edges="edges")


EVIL = '"""\nimport os; os.system("true")  # '


@pytest.mark.parametrize(
    ("where", "key", "value"),
    [
        ("graph", "paper_name", EVIL),
        ("graph", "reference", EVIL),
        ("graph", "layout", EVIL),
        ("graph", "name", "x\nimport os"),
        ("graph", "name", "other"),  # a valid name, but not the spec's
        ("graph", "spec", {"name": EVIL}),
        ("graph", "modules", ["base_layer", EVIL]),
        ("graph", "input", EVIL),
        ("graph", "total_stride", "32"),
        ("meta", "spec_path", "levels[2]\nimport os"),
        ("meta", "role", EVIL),
        ("meta", "eq", "eq5\n"),
        ("meta", "arg_roles", ["I", EVIL]),
    ],
)
def test_tampered_strings_of_a_reloaded_graph_are_refused(
    where: str, key: str, value: object
) -> None:
    from dlagraph import GraphError, build_module

    g = _reloaded()
    body = generate_source(g).splitlines()[2:]  # the round trip itself is fine (but the header)
    assert body == generate_source("dla_tiny_digits").splitlines()[2:]
    if where == "graph":
        g.graph[key] = value
    else:
        g.nodes["level2.root"]["meta"][key] = value
    with pytest.raises(GraphError, match=re.escape(key) if where == "graph" else "level2.root"):
        generate_source(g)
    with pytest.raises(GraphError):
        build_module(g)


@given(st.text(max_size=40))
def test_any_text_in_comments_and_docstrings_stays_one_escaped_line(text: str) -> None:
    """The one function every comment and docstring string goes through: whatever it is given,
    what it returns is printable, has no quote or newline to end a comment or docstring, and a
    docstring holding it still parses to one statement."""
    import ast

    from dlagraph.base.errors import one_line

    shown = one_line(text)
    assert shown.isprintable() and '"' not in shown.replace('\\"', "")
    module = ast.parse(f'"""{shown}"""\n# {shown}\n')
    assert len(module.body) == 1


# ---- names, literals and tampered graphs ---------------------------------------------------------


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
    assert "\nimport os" not in src and "from x.yaml\\nimport os (sha256" in src


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


# ---- one source for generated names ---------------------------------------------------------------


def _snake(name: str) -> str:
    """The spec name whose class name is ``name``: ``DeformConv`` -> ``deform_conv``, ``DCN`` ->
    ``d_c_n``; a function's own name otherwise."""
    if name[:1].islower() or name.startswith("_"):
        return name.strip("_")
    return "_".join(c.lower() for c in re.findall(r"[A-Z][a-z0-9]*", name))


def test_specs_named_after_every_library_name_generate_classes_that_construct() -> None:
    """A spec named after any class or helper a generated file defines (``deform_conv`` once
    generated two ``class DeformConv``) gets a class name of its own, and the file constructs and
    computes what the interpreter does."""
    from dlagraph.backends.codegen.sources import generated_names, library_names

    levels = [{"channels": 4}, {"channels": 4}, {"channels": 64, "depth": 1},
              {"channels": 64, "depth": 1}]  # fmt: skip
    heads = [{"type": "classifier", "num_classes": 3},
             {"type": "centernet", "heads": {"hm": 2}, "down_ratio": 2, "head_conv": 4},
             {"type": "dla_up", "num_classes": 3, "base_classes": 0}]  # fmt: skip
    x = torch.randn(1, 3, 32, 32)
    for name in sorted(library_names()):
        # a file that defines the name: each block type and each head, until one does
        candidates = [
            {"name": _snake(name), "block": {"type": t}, "levels": levels, "head": h}
            for t in dlagraph.registered_blocks()
            for h in heads
        ]
        spec, src = next(
            (c, s) for c in candidates if name in re.findall(
                r"^(?:class|def) (\w+)", s := generate_source(c, fold_bn=True), re.M)
        )  # fmt: skip
        defined = re.findall(r"^(?:class|def) (\w+)", src, re.M)
        assert len(defined) == len(set(defined)), (name, defined)
        cls = exec_generated(src)
        assert cls.__name__ not in generated_names()
        torch.manual_seed(0)
        ref = build_module(spec).eval()
        gen = cls().eval()
        gen.load_state_dict(ref.state_dict())
        assert type(ref).__name__ == cls.__name__
        with torch.no_grad():
            a, b = ref(x), gen(x)
        a, b = (a["hm"], b["hm"]) if isinstance(a, dict) else (a, b)
        a, b = (a[0], b[0]) if isinstance(a, tuple) else (a, b)
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5), name  # fold_bn's forward: channels_last


def test_a_helper_the_library_lacks_is_an_error_not_an_omission() -> None:
    from dlagraph.backends.codegen.sources import in_library_order

    assert in_library_order({"fold_into", "DlaRoot"}) == ["DlaRoot", "fold_into"]
    with pytest.raises(CodegenError, match="the module library defines no 'nowhere'"):
        in_library_order({"DlaRoot", "nowhere"})
