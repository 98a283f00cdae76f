"""The head registry: every head type a spec can name, with what the compiler and tools need.

A head is what a network computes after the backbone: a classifier, multi-scale features, a
segmentation decoder, CenterNet's neck and task heads, or a user's own. One head type is one
pydantic options model (the spec's ``head:`` keys, with ``type: Literal[name]``) plus one
:class:`HeadType` record:

* ``build(b, x, head)``: add the head's DAG nodes after backbone output ``x`` through the
  :class:`HeadBuilder` ``b``, ending in the node ``output``;
* ``check(spec, head)``: problems only the whole spec shows (``[(path, message)]``);
* ``dilations(head, n_levels)``: backbone levels run dilated instead of strided;
* ``backbone_prefix``: the module path the backbone nests under (``base.`` for a DLASeg);
* ``init``: ``dla`` (the official normal init) or ``pytorch`` (PyTorch's defaults);
* ``classifier``: it is timm's classification head (global pool, dropout, fc, flatten), so the
  model gets timm's classifier API and registers with timm;
* ``num_classes(head)``: the generated class's ``num_classes`` argument (None: none);
* ``recognise(shapes, levels)``: ``infer``'s reading of the head from the tensors outside the
  backbone (None when they are not this head's);
* ``containers``: top-level modules whose children ``diff`` lists apart.

Nothing here imports torch, the IR or the backends: a head module imports this registry and
pydantic, and reaches the DAG only through the builder it is handed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, get_args

from pydantic import BaseModel, ConfigDict

from ..base.errors import RegistryError
from ..base.registry import Registry, check_options_model
from ..base.shapes import Shapes

__all__ = [
    "HeadOptions",
    "HeadBuilder",
    "HeadType",
    "Shapes",
    "Problems",
    "register_head",
    "unregister_head",
    "get_head_type",
    "registered_heads",
]

Problems = list[tuple[tuple[str | int, ...], str]]  # (path under the spec, message)


class HeadOptions(BaseModel):
    """A convenient base for a head's options model: frozen, strict, unknown keys refused (a
    subclass adds ``type: Literal[name]`` and its options)."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, ser_json_inf_nan="constants"
    )


class HeadBuilder(Protocol):
    """What a head's ``build`` may use of the DAG under construction."""

    spec: Any  # the validated Spec
    level_outputs: dict[int, str]  # levels[i] -> the node producing its output

    def add(
        self,
        node: str,
        op: str,
        ins: list[str],
        rec: dict[str, Any],
        *,
        register: bool = True,
        unused: bool = False,
        symbols: dict[str, str] | None = None,
        **meta: Any,
    ) -> str:
        """Add ``node`` computing ``op`` over ``ins`` (in port order); ``meta`` holds
        ``spec_path``, ``role``, ``eq`` …"""
        ...

    def channels(self, n: str) -> int: ...

    def reduction(self, n: str) -> int: ...

    def paper_order(self, n: str, ports: list[int]) -> None:
        """The paper's argument position of each input of aggregation node ``n``."""
        ...

    def keep_levels_until(self, index: int) -> None:
        """Drop every level after ``levels[index]`` (a head that reads no deeper level)."""
        ...

    def mark_classifier(self) -> None:
        """The head is timm's classifier (the model gets timm's classifier API)."""
        ...


def _no_problems(spec: Any, head: Any) -> Problems:
    return []


def _no_dilation(head: Any, n_levels: int) -> dict[int, int]:
    return {}


def _num_classes(head: Any) -> int | None:
    value = getattr(head, "num_classes", None)
    return value if isinstance(value, int) else None


@dataclass(frozen=True)
class HeadType:
    """A registered head type (see the module docstring for each field)."""

    name: str
    options: type[BaseModel]
    build: Callable[[HeadBuilder, str, Any], None]
    check: Callable[[Any, Any], Problems] = _no_problems
    dilations: Callable[[Any, int], dict[int, int]] = _no_dilation
    backbone_prefix: str = ""
    init: Literal["dla", "pytorch"] = "dla"
    classifier: bool = False
    num_classes: Callable[[Any], int | None] = _num_classes
    recognise: (
        Callable[[Shapes, list[dict[str, Any]]], tuple[dict, dict[str, str]] | None] | None
    ) = None
    containers: frozenset[str] = frozenset()
    description: str = ""
    builtin: bool = False


HEADS: Registry[HeadType] = Registry("head type")


def register_head(
    name: str,
    *,
    build: Callable[[HeadBuilder, str, Any], None],
    check: Callable[[Any, Any], Problems] | None = None,
    dilations: Callable[[Any, int], dict[int, int]] | None = None,
    backbone_prefix: str = "",
    init: Literal["dla", "pytorch"] = "dla",
    classifier: bool = False,
    num_classes: Callable[[Any], int | None] | None = None,
    recognise: Callable[[Shapes, list[dict[str, Any]]], tuple[dict, dict[str, str]] | None]
    | None = None,
    containers: frozenset[str] | set[str] = frozenset(),
    description: str = "",
    replace: bool = False,
    _builtin: bool = False,
) -> Callable[[type[BaseModel]], type[BaseModel]]:
    """Register a pydantic model as a head type that specs can name with ``head: {type: name}``.

    The model holds the spec's ``head:`` keys: ``type: Literal[name]`` and the head's options;
    it must set ``extra="forbid"``. ``build(b, x, head)`` adds the head's nodes after the backbone
    output ``x`` through ``b`` (:class:`HeadBuilder`: ``b.add(node, op, inputs, record, ...)`` with
    the IR's ops, ``b.level_outputs``, ``b.channels``) and ends in a node called ``output``. The
    other arguments are the facts of :class:`HeadType`; the defaults fit a head that reads the
    backbone as it is.

    Example:
        >>> from typing import Literal
        >>> from pydantic import BaseModel, ConfigDict
        >>> import dlagraph
        >>> def build(b, x, head):
        ...     b.add("output", "output", [x], {"kind": "tensor", "names": []}, spec_path="head")
        >>> @dlagraph.register_head("identity", build=build)
        ... class Identity(BaseModel):
        ...     model_config = ConfigDict(extra="forbid", frozen=True)
        ...     type: Literal["identity"]
        >>> dlagraph.summarize({"name": "t", "block": {"type": "basic"}, "head": {"type": "identity"},
        ...     "levels": [{"channels": 8}, {"channels": 8}, {"channels": 16, "depth": 1}]}).output_shape
        (16, 56, 56)
        >>> dlagraph.unregister_head("identity")
    """

    def deco(cls: type[BaseModel]) -> type[BaseModel]:
        HEADS.check(name, replace=replace)
        check_options_model("head type", name, cls)
        tag = cls.model_fields.get("type")
        if tag is None or get_args(tag.annotation) != (name,):
            raise RegistryError(
                f"head type {name!r}: its options model needs the field type: Literal[{name!r}]"
            )
        if backbone_prefix not in ("", "base."):
            raise RegistryError(f"head type {name!r}: backbone_prefix must be '' or 'base.'")
        ht = HeadType(
            name=name,
            options=cls,
            build=build,
            check=check or _no_problems,
            dilations=dilations or _no_dilation,
            backbone_prefix=backbone_prefix,
            init=init,
            classifier=classifier,
            num_classes=num_classes or _num_classes,
            recognise=recognise,
            containers=frozenset(containers),
            description=description or (cls.__doc__ or "").strip().split("\n")[0],
            builtin=_builtin,
        )
        HEADS.add(name, ht, replace=replace, builtin=_builtin)
        return cls

    return deco


def unregister_head(name: str) -> None:
    """Remove a user-registered head type (built-in types stay)."""
    HEADS.remove(name)


def get_head_type(name: str) -> HeadType:
    return HEADS.get(name)


def registered_heads() -> list[str]:
    """Names of every registered head type, built-ins first, in registration order."""
    return HEADS.names()
