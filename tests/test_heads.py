"""The head registry: one module per head type, and every built-in head expressed through it."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict

import dlagraph
from dlagraph import RegistryError, SpecError
from dlagraph.heads import get_head_type, registered_heads

from .helpers import TINY


def _output_only(b, x, head) -> None:  # noqa: ANN001
    b.add("output", "output", [x], {"kind": "tensor", "names": []}, spec_path="head")


class Plain(dlagraph.HeadOptions):
    type: Literal["plain_test"]
    gain: int = 1


def test_the_built_in_heads_are_registered_in_order() -> None:
    assert registered_heads()[:5] == [
        "classifier",
        "features",
        "segmentation",
        "dla_up",
        "centernet",
    ]
    assert all(get_head_type(n).builtin for n in registered_heads()[:5])
    assert get_head_type("classifier").classifier and not get_head_type("features").classifier
    assert (
        get_head_type("centernet").backbone_prefix == "base."
        and get_head_type("centernet").init == "pytorch"
    )


def test_a_registered_head_is_a_spec_head_with_its_own_checks_and_schema() -> None:
    dlagraph.register_head("plain_test", build=_output_only)(Plain)
    try:
        spec = dlagraph.load_spec({**TINY, "head": {"type": "plain_test", "gain": 3}})
        assert isinstance(spec.head, Plain) and spec.head.gain == 3
        assert dlagraph.load_spec(spec.to_dict()) == spec  # round trip
        assert dlagraph.summarize(spec).output_shape == (64, 28, 28)
        with pytest.raises(SpecError, match=r"head.gain: must be an integer \(got '3'\)"):
            dlagraph.load_spec({**TINY, "head": {"type": "plain_test", "gain": "3"}})
        with pytest.raises(SpecError, match="head.oops: unknown key"):
            dlagraph.load_spec({**TINY, "head": {"type": "plain_test", "oops": 1}})
        schema = dlagraph.spec.json_schema()["properties"]["head"]["oneOf"]
        assert any(v.get("title") == "Plain" for v in schema)
        with pytest.raises(RegistryError, match="already registered"):
            dlagraph.register_head("plain_test", build=_output_only)(Plain)
    finally:
        dlagraph.unregister_head("plain_test")
    with pytest.raises(SpecError, match="head.type: unknown head type 'plain_test'; registered:"):
        dlagraph.load_spec({**TINY, "head": {"type": "plain_test"}})


@pytest.mark.parametrize(
    ("name", "options", "match"),
    [
        ("classifier", Plain, "built in and cannot be replaced"),
        ("Bad-Name", Plain, "must match"),
        ("plain_test", dict, "options must be a pydantic model class"),
        ("other", Plain, r"needs the field type: Literal\['other'\]"),
    ],
)
def test_registrations_that_cannot_work_are_refused(name: str, options: type, match: str) -> None:
    with pytest.raises(RegistryError, match=match):
        dlagraph.register_head(name, build=_output_only)(options)


def test_an_options_model_must_forbid_unknown_keys() -> None:
    class Loose(BaseModel):
        model_config = ConfigDict(frozen=True)
        type: Literal["loose"]

    with pytest.raises(RegistryError, match="extra='forbid'"):
        dlagraph.register_head("loose", build=_output_only)(Loose)


def test_built_in_heads_cannot_be_removed_or_replaced() -> None:
    with pytest.raises(RegistryError, match="built in and cannot be removed"):
        dlagraph.unregister_head("centernet")

    class Classifier(dlagraph.HeadOptions):
        type: Literal["classifier"]

    with pytest.raises(RegistryError, match="built in and cannot be replaced"):
        dlagraph.register_head("classifier", build=_output_only, replace=True)(Classifier)


@pytest.mark.parametrize(
    "node", ["level3", "level2", "base_layer", "level3.tree1", "level2.root.x"]
)
def test_a_head_node_named_like_a_backbone_module_is_refused(node: str) -> None:
    """``level3`` is no DAG node, but it is the module that holds the backbone's level 3: a head
    module there would replace it in the generated class (it once ran the backbone's Sequential
    as the head); a node inside another node's module would be set on it."""

    def build(b, x, head) -> None:  # noqa: ANN001
        y = b.add(node, "conv", [x], {"in_channels": 64, "out_channels": 8, "kernel_size": 1,
                                      "convs": 1, "stride": 1}, spec_path="head")  # fmt: skip
        b.add("output", "output", [y], {"kind": "tensor", "names": []}, spec_path="head")

    class Clash(dlagraph.HeadOptions):
        type: Literal["clash_test"]

    dlagraph.register_head("clash_test", build=build)(Clash)
    try:
        with pytest.raises(SpecError, match="is the name of a module the network already has|"
                                            "would sit inside the module of node|"
                                            "would sit inside the backbone's module|"
                                            "is the name of another node") as e:  # fmt: skip
            dlagraph.compile_spec({**TINY, "head": {"type": "clash_test"}})
        assert len(str(e.value).splitlines()) == 1
    finally:
        dlagraph.unregister_head("clash_test")


@pytest.mark.parametrize("option", ["class_", "lambda_", "ok"])
def test_options_that_generated_code_cannot_pass_are_refused(option: str) -> None:
    from pydantic import Field, create_model

    alias = option.rstrip("_")  # "class" and "lambda" are Python keywords
    model = create_model(
        "KwOptions",
        __config__=ConfigDict(extra="forbid", frozen=True),
        type=(Literal["kw_test"], ...),
        **{option: (int, Field(1, alias=alias))},
    )
    if option == "ok":
        dlagraph.register_head("kw_test", build=_output_only)(model)
        dlagraph.unregister_head("kw_test")
        return
    with pytest.raises(RegistryError, match=f"option '{alias}' is not a name generated code"):
        dlagraph.register_head("kw_test", build=_output_only)(model)


@pytest.mark.parametrize("node", ["level3.x", "level2.extra"])
def test_a_head_node_inside_a_backbone_module_is_refused(node: str) -> None:
    def build(b, x, head) -> None:  # noqa: ANN001
        y = b.add(node, "conv", [x], {"in_channels": b.channels(x), "out_channels": 8,
                                      "kernel_size": 1, "convs": 1, "stride": 1},
                  spec_path="head")  # fmt: skip
        b.add("output", "output", [y], {"kind": "tensor", "names": []}, spec_path="head")

    class Inner(dlagraph.HeadOptions):
        type: Literal["inner_test"]

    dlagraph.register_head("inner_test", build=build)(Inner)
    try:
        with pytest.raises(SpecError, match="would sit inside the backbone's module") as e:
            dlagraph.compile_spec({**TINY, "head": {"type": "inner_test"}})
        assert len(str(e.value).splitlines()) == 1
    finally:
        dlagraph.unregister_head("inner_test")


def test_a_user_heads_callback_that_fails_is_one_line() -> None:
    def build(b, x, head) -> None:  # noqa: ANN001
        raise ZeroDivisionError("oops")

    class Failing(dlagraph.HeadOptions):
        type: Literal["failing_test"]

    dlagraph.register_head("failing_test", build=build)(Failing)
    try:
        with pytest.raises(SpecError, match=r"head type 'failing_test': its build raised "
                                            r"ZeroDivisionError: oops"):  # fmt: skip
            dlagraph.compile_spec({**TINY, "head": {"type": "failing_test"}})
    finally:
        dlagraph.unregister_head("failing_test")
