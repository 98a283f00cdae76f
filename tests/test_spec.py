"""Spec schema: every error names its field path and value; YAML is read safely."""

from __future__ import annotations

import copy
import json
import textwrap
import time
from pathlib import Path

import pytest
import yaml

import dlagraph
from dlagraph import SpecError, load_spec, spec_to_yaml
from dlagraph.spec import json_schema
from dlagraph.spec.load import MAX_PROBLEMS

from .conftest import SPEC_PATHS, spec_ids
from .helpers import TINY, TINY_YAML


def mutate(path: str, value: object) -> dict:
    spec = copy.deepcopy(TINY)
    node: object = spec
    keys = path.replace("[", ".").replace("]", "").split(".")
    for k in keys[:-1]:
        node = node[int(k)] if k.isdigit() else node[k]  # type: ignore[index]
    last = keys[-1]
    if value is KeyError:
        del node[last]  # type: ignore[attr-defined]
    else:
        node[int(last) if last.isdigit() else last] = value  # type: ignore[index]
    return spec


def problems(spec: dict) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    return info.value.problems


@pytest.mark.parametrize("path", spec_ids())
def test_presets_load(path: str) -> None:
    spec = load_spec(f"specs/{path}.yaml")
    assert spec.name == path


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("levels[3].channels", -3, "levels[3].channels: must be greater than 0 (got -3)"),
        ("levels[3].channels", 0, "levels[3].channels: must be greater than 0 (got 0)"),
        ("levels[2].depth", 0, "levels[2].depth: must be at least 1 (got 0)"),
        ("levels[2].depth", "2", "levels[2].depth: must be an integer (got '2')"),
        ("levels[2].depth", 2.0, "levels[2].depth: must be an integer (got 2.0)"),
        ("levels[0].convs", True, "levels[0].convs: must be an integer (got True)"),
        ("name", "Dla", "name: must match"),
        ("name", "def", "name: must not be a Python keyword (got 'def')"),
        ("name", "9x", "name: must match"),
        ("paper_name", "a\nb", "paper_name: may hold only letters, digits"),
        ("paper_name", 'x"""; import os', "paper_name: may hold only letters, digits"),
        ("reference", "timm:dla34\nimport os", "reference: must match"),
        ("layout", "offical", "layout: must be one of 'timm' or 'official' (got 'offical')"),
        ("block.type", "bottle", "block.type: unknown block type 'bottle'; registered: basic"),
        ("block.type", KeyError, "block.type: missing required key"),
        ("levels", KeyError, "levels: missing required key"),
        ("levels[2].depth", 40, "levels[2].depth: depth 40 would expand to 2^40 blocks"),
        ("levels[2].depth", 10**12, "levels[2].depth: must be at most 1000 (got 1000000000000)"),
        ("levels", [{"channels": 8}, {"channels": 8}], "levels: must have at least 3 items"),
        ("in_channels", 0, "in_channels: must be greater than 0"),
        ("aggregation", {"kernel_size": 2}, "aggregation.kernel_size: must be odd"),
        ("aggregation", {"residual": "yes"}, "aggregation.residual: must be true or false"),
        ("head", {"type": "classifer"}, "head.type: unknown head type 'classifer'"),
        ("head", {"type": "classifier", "num_classes": -1}, "head.num_classes: must be greater"),
        (
            "head",
            {"type": "features", "out_indices": [1, 9]},
            "head.out_indices[1]: level index 9 is out of range 0..3",
        ),
        ("head", {"type": "features", "out_indices": [1, 1]}, "head.out_indices: indices must"),
    ],
)
def test_schema_errors_name_the_path(path: str, value: object, expected: str) -> None:
    found = problems(mutate(path, value))
    assert any(expected in p for p in found), found


def test_unknown_keys_are_named_with_a_suggestion() -> None:
    spec = mutate("block", {"type": "split", "cardnality": 32})
    assert problems(spec) == ["<spec>: block.cardnality: unknown key (did you mean 'cardinality'?)"]
    spec = mutate("levels[2].colour", 1)
    assert problems(spec) == [
        "<spec>: levels[2].colour: unknown key; "
        "a tree level (Levels 3 and up) takes: channels, depth, aggregate_input"
    ]


def test_hostile_keys_are_quoted_on_one_line() -> None:
    spec = mutate("levels[2].colour", 1)
    spec["a\nb"] = 1
    spec["x" * 500] = 1
    found = problems(spec)
    assert any(p.startswith("<spec>: ['a\\nb']: unknown key") for p in found)
    assert all("\n" not in p and len(p) < 200 for p in found)


def test_every_problem_is_reported_once_per_line() -> None:
    spec = mutate("levels[3].channels", -3)
    spec["layout"] = "nope"
    spec["name"] = "X"
    found = problems(spec)
    assert len(found) == 3
    assert all("\n" not in p for p in found)


def test_level_kinds_by_position() -> None:
    spec = mutate("levels[1]", {"channels": 16, "depth": 1})
    assert any("levels[1]: Levels 1 and 2 are conv levels" in p for p in problems(spec))
    spec = mutate("levels[2]", {"channels": 16, "convs": 1})
    assert any("levels[2]: Levels 3 and up are HDA trees" in p for p in problems(spec))


def test_split_cardinality_must_divide_the_width() -> None:
    spec = mutate("block", {"type": "split", "cardinality": 32})
    spec["levels"][3]["channels"] = 48
    found = problems(spec)
    assert any(
        p.startswith("<spec>: levels[3].channels: a split block with cardinality 32") for p in found
    ), found
    spec["block"]["cardinality"] = 0
    assert any("block.cardinality: must be greater than 0" in p for p in problems(spec))


def test_total_size_is_bounded_before_expansion() -> None:
    spec = copy.deepcopy(TINY)
    spec["levels"] = spec["levels"][:2] + [{"channels": 8, "depth": 11}] * 3
    assert any("levels: the trees hold 6,144 blocks" in p for p in problems(spec))


def test_file_errors_carry_line_numbers(tmp_path: Path) -> None:
    p = tmp_path / "x.yaml"
    text = yaml.safe_dump(mutate("levels[3].channels", -3), sort_keys=False)
    p.write_text(text)
    (found,) = problems_of_file(p)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "-3" in t)
    assert found == f"{p}:{line}: levels[3].channels: must be greater than 0 (got -3)"


def problems_of_file(p: Path) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_spec(p)
    return info.value.problems


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: x\nblock: !!python/object/apply:os.system ['true']\n", "YAML tags are not allowed"),
        ("!!python/object:dlagraph.Spec {}\n", "YAML tags are not allowed"),
        ("name: x\nname: y\n", "2: invalid YAML: duplicate key 'name' (first on line 1)"),
        ("name: [x\n", "invalid YAML"),
        ("- 1\n- 2\n", "a spec must be a YAML mapping (got list)"),
        ("", "a spec must be a YAML mapping (got NoneType)"),
    ],
)
def test_yaml_is_read_safely(tmp_path: Path, text: str, expected: str) -> None:
    p = tmp_path / "x.yaml"
    p.write_text(text)
    (found,) = problems_of_file(p)
    assert expected in found


def test_non_utf8_and_huge_files(tmp_path: Path) -> None:
    p = tmp_path / "x.yaml"
    p.write_bytes(b"name: \xff\n")
    assert "not UTF-8" in problems_of_file(p)[0]
    p.write_text("# " + "x" * (2 << 20))
    assert "specs are at most" in problems_of_file(p)[0]


@pytest.mark.parametrize("path", SPEC_PATHS, ids=spec_ids())
def test_yaml_round_trip_is_identity(path: Path) -> None:
    spec = load_spec(path)
    again = load_spec(yaml.safe_load(spec_to_yaml(spec)))
    assert again == spec
    assert spec_to_yaml(again) == spec_to_yaml(spec)


def test_spec_is_immutable() -> None:
    spec = load_spec(TINY)
    with pytest.raises(Exception, match="frozen"):
        spec.name = "other"  # type: ignore[misc]


def test_aggregate_input_defaults_follow_the_official_code() -> None:
    spec = load_spec(TINY)
    assert [spec.aggregates_input(i) for i in (2, 3)] == [False, True]
    spec = load_spec(mutate("levels[2].aggregate_input", True))
    assert spec.aggregates_input(2)


def test_json_schema_lists_block_types() -> None:
    schema = json_schema()
    names = [v["properties"]["type"]["const"] for v in schema["properties"]["block"]["oneOf"]]
    assert names == dlagraph.registered_blocks()
    json.dumps(schema)  # serialisable


# ---- hostile and careless YAML -------------------------------------------------------------------


def problems_of(text: str, tmp_path: Path) -> list[str]:
    p = tmp_path / "spec.yaml"
    p.write_text(textwrap.dedent(text))
    with pytest.raises(SpecError) as info:
        load_spec(p)
    return info.value.problems


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


@pytest.mark.parametrize("depth", [40, 500, 5000])
def test_deep_nesting_is_refused_without_recursion_error(tmp_path: Path, depth: int) -> None:
    (found,) = problems_of(TINY_YAML + "x: " + "[" * depth + "]" * depth + "\n", tmp_path)
    # one line at the nesting's line; the words may be PyYAML's (6.0.4 has a nesting limit of
    # its own in the scanner, which can refuse before dlagraph's event check sees depth 33)
    assert found.startswith(f"{tmp_path / 'spec.yaml'}:4: ") and "\n" not in found
    if depth <= 40:
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


@pytest.mark.parametrize("name", ["torch", "math", "typing", "os"])
def test_spec_named_like_a_module_it_would_shadow(name: str) -> None:
    (found,) = problems_of_mapping({**TINY, "name": name})
    assert f"name: must not be the name of a Python module ({name}.py would shadow" in found


def test_a_fifo_or_device_is_refused_before_it_is_opened(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "spec.yaml"
    os.mkfifo(fifo)  # opening it would wait for a writer forever
    for path in (fifo, Path("/dev/zero")):
        with pytest.raises(SpecError, match="is not a regular file"):
            load_spec(path)


# --- input_size: the size a network is meant for ------------------------------------------------


def test_input_size_is_checked_where_it_is_written(tmp_path: Path) -> None:
    """A size the network cannot take is refused by load_spec itself, at the file's line, with
    the total stride (2 per level after the first, but the levels a head dilates); the wrong
    number of sides, non-integers and huge sides are one line each; the JSON Schema says it is
    an array of two."""
    text = (Path(__file__).parents[1] / "specs" / "dla_tiny_digits.yaml").read_text()
    line = next(i for i, t in enumerate(text.splitlines(), 1) if t.startswith("input_size"))
    for value, want in (
        (
            "[30, 32]",
            "input_size: 30x32: both sides must be multiples of the network's total stride 16",
        ),
        ("[32]", "input_size: give [height, width]: 2 numbers (got 1)"),
        ("[32, 32, 3]", "input_size: give [height, width]: 2 numbers (got 3)"),
        ("[32.5, 32]", "input_size[0]: must be an integer"),
        ("[.inf, 32]", "input_size[0]: must be an integer"),
        ("[131072, 32]", "input_size[0]: must be at most 65536 (got 131072)"),
        ("32", "input_size: must be a list"),
    ):
        path = tmp_path / "s.yaml"
        path.write_text(text.replace("input_size: [32, 32]", f"input_size: {value}"))
        with pytest.raises(SpecError) as e:
            load_spec(path)
        assert str(e.value).startswith(f"{path}:{line}: {want}"), str(e.value)
    seg = load_spec("dla_tiny_seg").to_dict()  # its head dilates the last two levels: stride 8
    assert dlagraph.compile_spec(seg).graph["total_stride"] == 8
    assert load_spec({**seg, "input_size": [40, 56]}).input_size == (40, 56)
    schema = json_schema()["properties"]["input_size"]["anyOf"][0]
    assert (schema["type"], schema["minItems"], schema["maxItems"]) == ("array", 2, 2)


def test_a_checkpoint_given_as_a_spec_says_where_it_goes(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    path = tmp_path / "w.pth"
    torch.save(dlagraph.build_module(TINY).state_dict(), path)
    for call in (load_spec, dlagraph.summarize, dlagraph.build_module):
        with pytest.raises(SpecError) as e:
            call(path)
        assert str(e.value) == (
            f"{path}: a checkpoint, not a spec: `dlagraph infer {path}` writes its spec; "
            "build_module(spec, weights=...) and load_weights load it; export takes it as it is"
        )


def test_a_timm_names_note_points_at_the_users_line(tmp_path: Path) -> None:
    """The note that `dla34` is the preset `dla36` is attributed to the caller's line, from any
    entry point (it was raised deep inside dlagraph)."""
    import warnings

    for call in (load_spec, dlagraph.summarize, dlagraph.compile_spec, dlagraph.html_view):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            call("dla34")
        assert [w.filename for w in seen] == [__file__], call


def test_input_size_of_a_features_head_counts_the_levels_it_builds(tmp_path: Path) -> None:
    """A features head returning Levels 1-2 builds no later level: its stride is 2, and 8x8 is
    a size it takes (the spec's check once counted every level and refused it)."""
    data = load_spec("dla_tiny_digits").to_dict()
    data["head"] = {"type": "features", "out_indices": [0, 1]}
    spec = load_spec({**data, "input_size": [8, 8]})
    assert dlagraph.compile_spec(spec).graph["total_stride"] == 2
    assert dlagraph.summarize(spec).input_size == (8, 8)


def test_a_missing_checkpoint_is_said_as_one(tmp_path: Path) -> None:
    for name in ("nope.pth", "nope.safetensors"):
        with pytest.raises(SpecError, match=f"{name}: no such checkpoint file$"):
            load_spec(tmp_path / name)
