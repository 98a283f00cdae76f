"""Reading specs: YAML (safe, no object tags, no duplicate keys) -> :class:`Spec`, or a SpecError.

Every problem becomes one line ``<file>:<line>: <field path>: <message>``; the line is looked up in
the YAML node tree, so it points at the offending key or value. Hostile input is bounded before it
is expanded: the file size, the nesting depth (checked on the event stream, which needs no
recursion), the digits of an integer, and the number of problems reported (the first
:data:`MAX_PROBLEMS` in document order, then a count of the rest).
"""

from __future__ import annotations

import difflib
import functools
import importlib.resources
import re
import stat
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ..base.errors import DlagraphWarning, SpecError, clip, safe_repr, users_stacklevel
from ..base.io import CHECKPOINT_SUFFIXES, is_checkpoint_file
from ..blocks import get_block_type, registered_blocks
from ..heads import get_head_type, registered_heads
from .errors import Loc, flatten_errors, format_loc, problem_message
from .schema import Aggregation, ConvLevel, Spec, TreeLevel

__all__ = [
    "load_spec",
    "spec_to_yaml",
    "presets",
    "resolve_spec_path",
    "MAX_PROBLEMS",
    "MAX_NESTING",
]

MAX_SPEC_BYTES = 1 << 18  # a spec is a few hundred bytes; 256 KiB is refused before parsing
MAX_NESTING = 32  # a spec nests 4 deep; deeper input is refused before it is composed
MAX_INT_DIGITS = 30  # no field takes more than 7 digits; Python refuses str() past 4,300
MAX_PROBLEMS = 20  # problems listed; the rest are counted
_MERGE_TAG = "tag:yaml.org,2002:merge"


# libyaml's parser when PyYAML has it (about 5x faster on a hostile megabyte), else pure Python
_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_BaseLoader):  # type: ignore[misc,valid-type]
    """SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one) and huge ints,
    and supports merge keys (``<<: *anchor``)."""


def _no_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    # keys are compared as written (tag and text), without constructing them twice
    seen: dict[tuple[str, str], int] = {}
    for key_node, _ in node.value:
        if key_node.tag == _MERGE_TAG:
            continue  # `<<`: merged keys may be overridden by explicit ones, as YAML says
        if not isinstance(key_node, yaml.ScalarNode):
            raise yaml.constructor.ConstructorError(
                None, None, "mapping keys must be plain scalars", key_node.start_mark
            )
        key = (key_node.tag, key_node.value)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {safe_repr(key_node.value)} (first on line {seen[key]})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)  # flattens merge keys first


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def check_events(text: str, name: str) -> None:
    """Refuse deep nesting and huge integers from the event stream, before anything is composed
    (the composer and pydantic recurse; Python refuses str() of ints past 4,300 digits)."""
    depth = 0
    for event in yaml.parse(text, Loader=_BaseLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_NESTING:
                raise SpecError(
                    f"{name}:{event.start_mark.line + 1}: spec nests deeper than "
                    f"{MAX_NESTING} levels; a spec nests at most 4",
                    source=name,
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
        elif (
            isinstance(event, yaml.ScalarEvent)
            and len(event.value) > MAX_INT_DIGITS
            and event.implicit[0]
            and event.value.lstrip("+-").replace("_", "").isdigit()
        ):
            raise SpecError(
                f"{name}:{event.start_mark.line + 1}: an integer of {len(event.value):,} "
                f"digits is too large",
                source=name,
            )


def _check_nesting_data(data: Any, name: str) -> None:
    """The same bound for a mapping given from Python (iterative: cycles end at the bound)."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    seen = 0
    while stack:
        obj, depth = stack.pop()
        if not isinstance(obj, (dict, list, tuple)):
            continue
        seen += 1
        if depth > MAX_NESTING or seen > 1_000_000:
            raise SpecError(
                f"{name}: spec nests deeper than {MAX_NESTING} levels (or refers to itself)",
                source=name,
            )
        items = obj.values() if isinstance(obj, dict) else obj
        stack.extend((v, depth + 1) for v in items)


def _yaml_problem(e: yaml.YAMLError, name: str) -> SpecError:
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    where = f"{name}:{mark.line + 1}" if mark is not None else name
    what = str(getattr(e, "problem", None) or e).strip()
    if "could not determine a constructor for the tag" in what:
        tag = what.rsplit("tag", 1)[-1].strip(" '\"")
        what = (
            f"YAML tags are not allowed in specs (found {clip(tag, 60)}); "
            f"specs hold plain mappings, lists, strings and numbers"
        )
    elif "merging" in what:
        what = f"merge key `<<` must refer to a mapping or a list of mappings ({clip(what, 80)})"
    return SpecError(f"{where}: invalid YAML: {clip(what, 200)}", source=name)


def read_yaml(path: Path) -> tuple[Any, yaml.Node | None]:
    name = str(path)
    if path.is_dir():
        raise SpecError(
            f"{name}: is a folder, not a spec file (give a .yaml file, or a preset name)",
            source=name,
        )
    try:
        # stat first: opening a FIFO would block until a writer comes, a device never ends
        if path.exists() and not stat.S_ISREG(path.stat().st_mode):
            raise SpecError(
                f"{name}: is not a regular file (a FIFO, socket or device); not reading it",
                source=name,
            )
        with open(path, "rb") as f:
            raw = f.read(MAX_SPEC_BYTES + 1)
    except OSError as e:
        raise SpecError(f"{name}: cannot read spec: {e.strerror or e}", source=name) from None
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError(
            f"{name}: spec is over {MAX_SPEC_BYTES:,} bytes; specs are at most {MAX_SPEC_BYTES:,}",
            source=name,
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SpecError(f"{name}: spec is not UTF-8 text", source=name) from None
    try:
        check_events(text, name)
        loader = _StrictLoader(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()  # type: ignore[no-untyped-call]
    except yaml.YAMLError as e:
        raise _yaml_problem(e, name) from None
    except SpecError:
        raise
    except (RecursionError, ValueError, OverflowError) as e:  # belt and braces: never a traceback
        raise SpecError(f"{name}: invalid YAML: {clip(str(e), 120)}", source=name) from None
    return data, node


def _line_index(root: yaml.Node | None) -> dict[Loc, int]:
    """``{path: 1-based line}`` for every key and item of the YAML tree, built in one pass.

    Aliased nodes are entered once (an alias bomb stays linear); a merged key maps to the line
    where it was written in the anchor, and explicit keys override merged ones, as in YAML.
    """
    index: dict[Loc, int] = {}
    if root is None:
        return index
    index[()] = root.start_mark.line + 1
    stack: list[tuple[yaml.Node, Loc]] = [(root, ())]
    entered: set[int] = set()
    while stack:
        node, loc = stack.pop()
        if id(node) in entered:
            continue
        entered.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.tag == _MERGE_TAG:
                    continue
                key = (*loc, str(k.value))
                index[key] = k.start_mark.line + 1
                stack.append((v, key))
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                index[(*loc, i)] = v.start_mark.line + 1
                stack.append((v, (*loc, i)))
    return index


def _line_of(index: dict[Loc, int], loc: Loc) -> int | None:
    """The line of the deepest prefix of ``loc`` present in the YAML."""
    line = index.get(loc)
    if line is not None:
        return line
    key = tuple(p if isinstance(p, int) and not isinstance(p, bool) else str(p) for p in loc)
    for n in range(len(key), -1, -1):
        if key[:n] in index:
            return index[key[:n]]
    return None


# ---- unknown keys: what was meant, and what the place takes ------------------------------------


def _heads() -> dict[str, type[BaseModel]]:
    return {name: get_head_type(name).options for name in registered_heads()}


def _fields(model: type[BaseModel]) -> list[str]:
    return [k for k in model.model_fields if k != "type"]


def _places() -> list[tuple[str, set[str]]]:
    """Every place in a spec that takes keys, with its keys (for 'belongs to' hints)."""
    return [
        ("the top level", set(Spec.model_fields)),
        ("a conv level", set(_fields(ConvLevel))),
        ("a tree level", set(_fields(TreeLevel))),
        ("aggregation", set(_fields(Aggregation))),
        ("head", {k for m in _heads().values() for k in _fields(m)}),
        ("block", {k for n in registered_blocks() for k in get_block_type(n).options.model_fields}),
    ]


def _place_of(data: Any, parent: Loc) -> tuple[str, list[str]] | None:
    """The place at ``parent`` in the raw data, and the keys it takes."""
    if parent == ():
        return "the top level", list(Spec.model_fields)
    node: Any = data
    for p in parent:
        try:
            node = node[p]
        except (KeyError, IndexError, TypeError):
            return None
    if not isinstance(node, dict):
        return None
    if len(parent) == 2 and parent[0] == "levels":
        tree = "depth" in node or "aggregate_input" in node
        if tree:
            return "a tree level (Levels 3 and up)", _fields(TreeLevel)
        return "a conv level (Levels 1 and 2)", _fields(ConvLevel)
    if parent == ("aggregation",):
        return "aggregation", _fields(Aggregation)
    heads = _heads()
    if parent == ("head",) and node.get("type") in heads:
        return f"head (type {node['type']})", ["type", *_fields(heads[node["type"]])]
    if parent == ("block",) and isinstance(node.get("type"), str):
        try:
            opts = get_block_type(node["type"]).options
        except Exception:
            return None
        return f"block (type {node['type']})", ["type", *opts.model_fields]
    return None


def _normal(key: str) -> str:
    return key.strip().lower().replace("-", "_").replace(" ", "_")


def _unknown_key_message(data: Any, loc: Loc) -> str:
    key = str(loc[-1])
    here = _place_of(data, loc[:-1])
    if here is None:
        return "unknown key"
    what, keys = here
    if _normal(key) in keys and _normal(key) != key:
        return f"unknown key (did you mean '{_normal(key)}'?)"
    close = difflib.get_close_matches(_normal(key)[:64], keys, n=1, cutoff=0.75)
    if close and close[0] != key:
        return f"unknown key (did you mean '{close[0]}'?)"
    elsewhere = [p for p, ks in _places() if not what.startswith(p) and _normal(key) in ks]
    takes = f"{what} takes: {', '.join(keys)}"
    if elsewhere:
        return f"`{_normal(key)}` belongs to {' or '.join(elsewhere)}; {takes}"
    return f"unknown key; {takes}"


def presets() -> dict[str, Path]:
    """The packaged presets, ``{name: file}`` (``specs/`` in a checkout, ``dlagraph/presets`` in
    a wheel)."""
    try:
        folder = Path(str(importlib.resources.files("dlagraph.presets")))
    except ModuleNotFoundError:  # a source checkout on sys.path, not installed: its specs/
        folder = Path(__file__).resolve().parents[2] / "specs"
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def resolve_spec_path(source: str | Path) -> Path:
    """The file a spec argument names: an existing path, else a packaged preset of that name (a
    path wins when both exist: ``dla36`` is the preset unless a file ``./dla36`` exists).

    Raises:
        SpecError: when it is neither.
    """
    path = Path(source)
    text = str(source)
    if not text.strip():
        raise SpecError("give a spec file or a preset name (got an empty name)", source="<spec>")
    found = presets().get(text)
    try:
        exists = path.exists()
    except OSError as e:  # a name longer than the OS allows, a loop of links …
        shown = text if text.isprintable() else repr(text)
        raise SpecError(
            f"{clip(shown, 120)}: cannot read: {e.strerror or e}", source=shown
        ) from None
    if exists:
        if is_checkpoint_file(path):  # weights, not a spec: say where it goes
            raise SpecError(
                f"{clip(text, 120)}: a checkpoint, not a spec: `dlagraph infer {clip(text, 120)}` "
                "writes its spec; build_module(spec, weights=...) and load_weights load it; "
                "export takes it as it is",
                source=text,
            )
        if path.is_dir() and found is not None:  # the one collision a user meets: an output folder
            raise SpecError(
                f"{text}: is a folder here, and a path wins over the preset of the same name; "
                f"to use the preset, give its file: {found}",
                source=text,
            )
        return path
    if found is not None:
        return found
    alias = timm_names().get(text)
    if alias is not None:  # a timm user's name: the preset that equals it (load_spec says so)
        return presets()[alias]
    if path.suffix.lower() in CHECKPOINT_SUFFIXES:
        shown = text if text.isprintable() else repr(text)
        raise SpecError(f"{clip(shown, 120)}: no such checkpoint file", source=shown)
    names = ", ".join(presets())
    shown = text if text.isprintable() else repr(text)
    # a name's case is a typo too: DLA34 is dla34
    close = difflib.get_close_matches(text.lower(), [*presets(), *timm_names()], n=3, cutoff=0.75)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    raise SpecError(
        f"{clip(shown, 120)}: no such spec file, and no preset of that name ({hint}presets: "
        f"{names}; timm's names work too: {', '.join(timm_names())})",
        source=shown,
    )


@functools.lru_cache(maxsize=4)
def _timm_names(folder: Path) -> dict[str, str]:
    out = {}
    for name, path in sorted(presets().items()):
        m = re.search(r"^reference:\s*timm:(\S+)\s*$", path.read_text(), re.MULTILINE)
        if m and m[1] not in out and m[1] != name:  # a preset of timm's own name needs none
            out[m[1]] = name
    return dict(sorted(out.items()))


def timm_names() -> dict[str, str]:
    """timm's DLA model names, each with the packaged preset that equals it (the presets'
    ``reference: timm:NAME``): ``{"dla34": "dla36", "dla102x": "dla104_s", ...}``."""
    folder = next(iter(presets().values())).parent if presets() else Path(".")
    return _timm_names(folder)


def load_spec(source: str | Path | Mapping[str, Any] | Spec) -> Spec:
    """Load and validate a spec from a YAML file path, a preset name (``"dla104_s"``, see
    :func:`presets`), a mapping, or a :class:`Spec`.

    Raises:
        SpecError: listing every problem (the first :data:`MAX_PROBLEMS`, then a count), one line
            each: ``specs/x.yaml:12: levels[3].channels: must be greater than 0 (got -3)``.

    Example:
        >>> spec = load_spec({"name": "tiny", "block": {"type": "basic"},
        ...                   "levels": [{"channels": 8}, {"channels": 16},
        ...                              {"channels": 32, "depth": 1}]})
        >>> spec.levels[2].depth
        1
    """
    if isinstance(source, Spec):
        return source
    root: yaml.Node | None = None
    if isinstance(source, Mapping):
        data: Any = dict(source)
        name = "<spec>"
        _check_nesting_data(data, name)
    else:
        path = resolve_spec_path(source)
        if path.stem != Path(source).name and str(source) in timm_names():
            warnings.warn(
                f"{str(source)!r} is timm's name of the preset {path.stem!r} (they are equal)",
                DlagraphWarning,
                stacklevel=users_stacklevel(),
            )
        data, root = read_yaml(path)
        name = str(source) if str(source).isprintable() else repr(str(source))
    if not isinstance(data, dict):
        raise SpecError(
            f"{name}: a spec must be a YAML mapping (got {type(data).__name__})", source=name
        )
    # top-level `x-` keys are ignored, as in Docker Compose: a place for YAML anchors to merge
    data = {k: v for k, v in data.items() if not (isinstance(k, str) and k.startswith("x-"))}
    try:
        return Spec.model_validate(data)
    except ValidationError as e:
        raise _spec_error(e, data, root, name) from None
    except RecursionError:
        raise SpecError(f"{name}: spec nests too deeply", source=name) from None


def _spec_error(e: ValidationError, data: Any, root: yaml.Node | None, name: str) -> SpecError:
    index = _line_index(root)
    found = [(_line_of(index, loc), loc, msg) for loc, msg in flatten_errors(e)]
    found.sort(key=lambda t: t[0] or 0)  # document order (stable for equal lines)
    lines = []
    for line, loc, problem in found[:MAX_PROBLEMS]:
        msg = problem_message(problem)
        if msg == "unknown key":
            msg = _unknown_key_message(data, loc)
        where = f"{name}:{line}" if line is not None else name
        lines.append(f"{where}: {format_loc(loc) or '<root>'}: {msg}")
    if len(found) > MAX_PROBLEMS:
        rest = len(found) - MAX_PROBLEMS
        lines.append(f"{name}: … and {rest:,} more problem{'s' * (rest > 1)} not listed")
    return SpecError(lines, source=name)


def spec_to_yaml(spec: Spec | str | Path | Mapping[str, Any]) -> str:
    """The spec (a ``Spec``, a preset name, a spec file or a mapping) as YAML, every default
    written out; ``load_spec`` of it gives back an equal spec."""
    return yaml.safe_dump(load_spec(spec).to_dict(), sort_keys=False, default_flow_style=None)
