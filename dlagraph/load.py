"""Reading specs: YAML (safe, no object tags, no duplicate keys) -> :class:`Spec`, or a SpecError.

Every problem becomes one line ``<file>:<line>: <field path>: <message>``; the line is looked up in
the YAML node tree, so it points at the offending key or value.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from .blocks import get_block_type, registered_blocks
from .errors import SpecError
from .spec import Spec
from .spec_errors import flatten_errors

__all__ = ["load_spec", "spec_to_yaml"]

MAX_SPEC_BYTES = 1 << 20  # a spec is a few hundred bytes; refuse megabyte inputs before parsing


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one)."""


def _no_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "mapping keys must be plain scalars", key_node.start_mark
            ) from None
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {key!r} (first on line {seen[key]})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def _known_keys() -> set[str]:
    keys: set[str] = set()

    def walk(model: type[BaseModel]) -> None:
        for name, f in model.model_fields.items():
            keys.add(name)
            for sub in getattr(f.annotation, "__args__", ()) or ():
                if isinstance(sub, type) and issubclass(sub, BaseModel):
                    walk(sub)

    from . import spec as s

    for m in (s.Spec, s.ConvLevel, s.TreeLevel, s.Aggregation, s.ClassifierHead, s.FeaturesHead):
        walk(m)
    for name in registered_blocks():
        keys.update(get_block_type(name).options.model_fields)
    return keys - {"options"}


def _hint(path: str, msg: str) -> str:
    if msg != "unknown key":
        return msg
    key = path.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(key, sorted(_known_keys()), n=1, cutoff=0.75)
    return f"unknown key (did you mean '{close[0]}'?)" if close else msg


def _line_of(root: yaml.Node | None, path: str) -> int | None:
    """1-based line of the YAML node at a dotted path like ``levels[3].channels``, if it exists."""
    node = root
    line = None if root is None else root.start_mark.line + 1
    for part in path.replace("[", ".[").split("."):
        if not part or node is None:
            continue
        if part.startswith("["):
            idx = int(part[1:-1])
            if not isinstance(node, yaml.SequenceNode) or idx >= len(node.value):
                break
            node = node.value[idx]
            line = node.start_mark.line + 1
        else:
            if not isinstance(node, yaml.MappingNode):
                break
            for k, v in node.value:
                if getattr(k, "value", None) == part:
                    node, line = v, k.start_mark.line + 1
                    break
            else:
                break
    return line


def _read(path: Path) -> tuple[Any, yaml.Node | None]:
    name = str(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise SpecError(f"{name}: cannot read spec: {e.strerror or e}", source=name) from None
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError(
            f"{name}: spec is {len(raw):,} bytes; specs are at most {MAX_SPEC_BYTES:,}", source=name
        )
    try:
        text = raw.decode("utf-8")
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except UnicodeDecodeError:
        raise SpecError(f"{name}: spec is not UTF-8 text", source=name) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        where = f"{name}:{mark.line + 1}" if mark is not None else name
        what = getattr(e, "problem", None) or str(e)
        if "could not determine a constructor" in str(what) or "tag" in str(what):
            what = f"YAML tags are not allowed in specs ({what.strip()})"
        raise SpecError(f"{where}: invalid YAML: {what}", source=name) from None
    return data, node


def load_spec(source: str | Path | Mapping[str, Any] | Spec) -> Spec:
    """Load and validate a spec from a YAML file path, a mapping, or a :class:`Spec`.

    Raises:
        SpecError: listing every problem, one line each: ``specs/x.yaml:12: levels[3].channels:
            must be greater than 0 (got -3)``.

    Example:
        >>> spec = load_spec({"name": "tiny", "block": {"type": "basic"},
        ...                   "levels": [{"channels": 8}, {"channels": 16},
        ...                              {"channels": 32, "depth": 1}]})
        >>> spec.levels[2].depth
        1
    """
    if isinstance(source, Spec):
        return source
    node: yaml.Node | None = None
    if isinstance(source, Mapping):
        data: Any = dict(source)
        name = "<spec>"
    else:
        path = Path(source)
        data, node = _read(path)
        name = str(source)
    if not isinstance(data, dict):
        raise SpecError(
            f"{name}: a spec must be a YAML mapping (got {type(data).__name__})", source=name
        )
    try:
        return Spec.model_validate(data)
    except ValidationError as e:
        found = []
        for path_, msg in flatten_errors(e):
            line = _line_of(node, path_)
            where = f"{name}:{line}" if line is not None else name
            found.append((line or 0, f"{where}: {path_ or '<root>'}: {_hint(path_, msg)}"))
        found.sort(key=lambda t: t[0])  # document order (stable for equal lines)
        raise SpecError([text for _, text in found], source=name) from None


def spec_to_yaml(spec: Spec) -> str:
    """The spec as YAML, every default written out; ``load_spec`` of it gives back an equal spec."""
    return yaml.safe_dump(spec.to_dict(), sort_keys=False, default_flow_style=None)
