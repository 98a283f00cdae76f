"""From a checkpoint back to a spec: ``infer_spec``.

Every tensor's name is a module path of the layout and its shape holds channels, kernels and
groups, so the architecture can be read off the state dict: the backbone prefix from the top-level
names, the levels from ``level{i}`` (conv levels by their convs, tree levels by how deep
``tree1``/``tree2`` nest), the aggregation kernel and whether a level root takes S(x) (eq. 5) from
the roots' convs. The block and the head are whatever registered type recognises them: the first
block type whose ``recognise`` reads the first block of each tree level (a grouped 3x3 conv gives
the cardinality), the first head type whose ``recognise`` reads the tensors outside the backbone.
The candidate is then built on the meta device and its state dict must equal the checkpoint's
names and shapes exactly, in one layout or the other (the official layout's unused projections
tell them apart). What weights cannot show (a residual root, dropout, a name) is taken from the
defaults and reported as an assumption, or set with ``overrides``.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..backends.torch.interpret import build_module
from ..base.errors import DlagraphError, clip, safe_repr
from ..base.limits import MAX_TREE_LEVELS
from ..base.shapes import Shapes, echo, foreign, get
from ..blocks import BlockShapes, get_block_type, registered_blocks
from ..checkpoints.read import read_checkpoint
from ..heads import get_head_type, registered_heads
from ..ir.compile import compile_spec
from ..spec import Spec, load_spec
from ..spec.overrides import apply_overrides
from ..spec.schema import SHADOWED_MODULES

__all__ = ["infer_spec", "infer_checkpoint", "Inference", "expected_shapes", "apply_overrides"]


@dataclass
class Inference:
    """An inferred spec, what the weights could not show (``field: value taken, why``), the
    checkpoint's tensor names and shapes (in its order), and whether the spec is the one the
    checkpoint carries."""

    spec: Spec
    assumptions: list[str] = field(default_factory=list)
    shapes: Shapes = field(default_factory=dict)
    carried: bool = False  # the spec the checkpoint carries, not one read off its tensors


def expected_shapes(spec: Spec | str | Path | Mapping[str, Any]) -> Shapes:
    """The state dict names and shapes a spec's module has (built on the meta device)."""
    with torch.device("meta"):
        model = build_module(spec, init=False)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def infer_spec(
    checkpoint: str | Path | Mapping[str, Any],
    overrides: Mapping[str, Any] | None = None,
) -> Spec:
    """The spec of a DLA checkpoint (a state dict, or a file read as safely as ``load_weights``
    reads it). See :func:`infer_checkpoint` for the assumptions it makes.

    Raises:
        DlagraphError: for a checkpoint that is not a DLA, naming the first tensor that fits none.
        SpecError: when ``overrides`` make the spec invalid.
    """
    return infer_checkpoint(checkpoint, overrides).spec


def infer_checkpoint(
    checkpoint: str | Path | Mapping[str, Any],
    overrides: Mapping[str, Any] | None = None,
    name: str | None = None,
) -> Inference:
    """:func:`infer_spec` with the assumptions it made: each field the weights cannot show and
    ``overrides`` (dotted paths) does not set, with the value taken."""
    sd, stored = read_checkpoint(checkpoint)
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    if not shapes:
        raise DlagraphError("not a DLA checkpoint: it holds no tensors")
    found, why_not = _stored(stored, shapes, overrides, name)
    if found is not None:
        return found
    data, assumed = _infer(shapes)
    if why_not:
        assumed["spec"] = why_not
    if name is None:
        name, why = _name_from(checkpoint)
        assumed["name"] = f"{name!r}, {why}"
    data["name"] = name
    overrides = dict(overrides or {})
    data = apply_overrides(data, overrides)
    spec = load_spec(data)
    layout, note = _match_layout(spec, shapes, "layout" in overrides)
    if layout != spec.layout:
        spec = spec.model_copy(update={"layout": layout})
    if note:
        assumed["layout"] = note
    notes = [f"{k}: {v}" for k, v in sorted(assumed.items()) if not _overridden(k, overrides)]
    return Inference(spec, notes, shapes)


def _stored(
    stored: Mapping[str, Any] | None,
    shapes: Shapes,
    overrides: Mapping[str, Any] | None,
    name: str | None,
) -> tuple[Inference | None, str]:
    """The spec a checkpoint carries beside its weights (dlagraph's training examples write
    one), with ``overrides`` and ``name``, where it loads and its state dict is the checkpoint's,
    names and shapes; else None and why (the spec is then inferred from the tensors)."""
    if stored is None:
        return None, ""
    why = "the one the checkpoint carries {}: inferred from the tensors instead"
    if not isinstance(stored, Mapping):
        return None, why.format(f"is not a mapping (a {type(stored).__name__})")
    try:
        data = apply_overrides(dict(stored), dict(overrides or {}))
        if name is not None:
            data["name"] = name
        spec = load_spec(data)
        want = expected_shapes(spec)
    except (DlagraphError, TypeError, ValueError, RecursionError) as e:  # not ours
        return None, why.format(f"does not load ({clip(str(e).splitlines()[0], 100)})")
    if want != shapes:
        first = next(
            (k for k in [*shapes, *want] if shapes.get(k) != want.get(k)), "?"
        )  # in the checkpoint's order, then the spec's
        return None, why.format(
            f"does not match its weights (first: {clip(safe_repr(first), 80)}, "
            f"{shapes.get(first, 'missing')} in the checkpoint, {want.get(first, 'missing')} in "
            "the spec)"
        )
    return Inference(spec, [], shapes, carried=True), ""


def _name_from(checkpoint: str | Path | Mapping[str, Any]) -> tuple[str, str]:
    """A spec name for a checkpoint, from its file name where that makes one, and why."""
    if isinstance(checkpoint, Mapping):
        return "inferred", "weights hold no name"
    stem = re.sub(r"[^a-z0-9_]+", "_", Path(checkpoint).stem.lower()).strip("_")[:48].strip("_")
    if not stem:
        return "inferred", "weights hold no name, nor does the file name"
    if stem[0].isdigit():
        stem = "dla_" + stem
    if keyword.iskeyword(stem) or keyword.issoftkeyword(stem) or stem in SHADOWED_MODULES:
        return f"{stem}_dla", f"from the file name ({stem!r} is a Python keyword or module name)"
    return stem, "from the file name"


def _overridden(key: str, overrides: Mapping[str, Any]) -> bool:
    return any(key == o or key.startswith(o + ".") for o in overrides)


def _match_layout(spec: Spec, shapes: Shapes, fixed: bool) -> tuple[str, str | None]:
    """The layout whose state dict equals the checkpoint's names and shapes (and, when both do,
    their order), else the first difference as an error.

    The spec's own layout is built on the meta device first; the other one only when that does
    not settle it. The compiled DAGs tell, without building, whether the two layouts hold the same
    modules in the same order (then they have exactly the same tensors and compute the same)."""
    other = "official" if spec.layout == "timm" else "timm"
    layouts = [spec.layout] if fixed else [spec.layout, other]
    same = not fixed and _modules(spec) == _modules(spec.model_copy(update={"layout": other}))
    fits, first = [], None
    for layout in layouts:
        want = expected_shapes(spec.model_copy(update={"layout": layout}))
        if want == shapes:
            fits.append((layout, list(want) == list(shapes)))
            if fits[-1][1] and not same:  # in order, and the other layout's modules differ
                return layout, None
        elif first is None:
            first = _difference(want, shapes)
        if same:  # the other layout would give exactly these tensors again
            break
    if not fits:
        raise DlagraphError(
            f"the checkpoint looks like a DLA but no spec reproduces it exactly: {first}"
        )
    ordered = [layout for layout, same_order in fits if same_order]
    if not same and (len(fits) == 1 or len(ordered) == 1):
        return (ordered or [fits[0][0]])[0], None
    return fits[0][0], (
        f"{fits[0][0]} (both layouts have exactly these tensors here, and their order does not "
        "tell them apart; they compute the same)"
    )


def _modules(spec: Spec) -> list[str]:
    """The module paths of a spec's layout, in registration (state_dict) order."""
    g = compile_spec(spec)
    return [g.nodes[n]["layout"]["module"] for n in g.graph["modules"]]


def _difference(want: Shapes, got: Shapes) -> str:
    for k, s in got.items():
        if k not in want:
            return f"tensor {echo(k)} {list(s)} has no place in the inferred network"
        if want[k] != s:
            return f"tensor {echo(k)} is {list(s)}, the inferred network's is {list(want[k])}"
    missing = [k for k in want if k not in got]
    return f"the inferred network also has {missing[0]} (and {len(missing) - 1} more)"


# ---- reading the architecture off the names and shapes ------------------------------------------


def _infer(shapes: Shapes) -> tuple[dict[str, Any], dict[str, str]]:
    keys = list(shapes)
    prefixes = sorted({get_head_type(n).backbone_prefix for n in registered_heads()}, key=len)
    p = next((p for p in reversed(prefixes) if p + "base_layer.0.weight" in shapes), None)
    if p is None:
        k = next((k for k in keys if not k.startswith(("level", "base"))), keys[0])
        raise foreign(k, shapes[k], "fits no DLA module (a DLA starts with base_layer.0.weight)")
    for k, sh in shapes.items():
        if 0 in sh:
            raise foreign(k, sh, "is empty (a dimension of size 0)")
    stem = get(shapes, p + "base_layer.0.weight", 4)
    if stem[2:] != (7, 7):
        raise foreign(p + "base_layer.0.weight", stem, "is not the 7x7 stem conv of a DLA")
    assumed: dict[str, str] = {}
    levels = _levels(shapes, p)
    block, extra = _block(shapes, p, levels)
    assumed.update(extra)
    data: dict[str, Any] = {
        "block": block,
        "levels": levels,
        "aggregation": {"kernel_size": _root_kernel(shapes, p), "residual": False},
        "in_channels": stem[1],
        "layout": "official" if p else "timm",
    }
    assumed["aggregation.residual"] = (
        "False (eq. 4's residual add has no weights; timm's dla102, dla102x, dla102x2 and dla169 "
        "use it: --set aggregation.residual=true)"
    )
    data["head"], extra = _head(shapes, p, levels)
    assumed.update(extra)
    return data, assumed


def _recognised(who: str, recognise: Any, *args: Any) -> tuple[dict[str, Any], dict] | None:
    """A type's ``recognise``: ``(options, notes)`` or None; a user's that raises or answers
    anything else is one line naming it."""
    try:
        found = recognise(*args)
    except DlagraphError:
        raise
    except Exception as e:
        raise DlagraphError(
            f"{who}: its recognise raised {type(e).__name__}: {clip(str(e), 120)}"
        ) from None
    ok = found is None or (
        isinstance(found, tuple)
        and len(found) == 2
        and isinstance(found[0], dict)
        and isinstance(found[1], dict)
    )
    if not ok:
        raise DlagraphError(
            f"{who}: its recognise must return (options, notes), two dicts, or None "
            f"(got {safe_repr(found)})"
        )
    return found


def _head(shapes: Shapes, p: str, levels: list[dict[str, Any]]) -> tuple[dict[str, Any], dict]:
    """The head: the first registered head type (with this backbone prefix) that recognises the
    tensors outside the backbone."""
    backbone = re.compile(re.escape(p) + r"(base_layer|level\d+)\.")
    rest = {k: s for k, s in shapes.items() if not backbone.match(k)}
    for name in registered_heads():
        ht = get_head_type(name)
        if ht.backbone_prefix == p and ht.recognise is not None:
            found = _recognised(f"head type {name!r}", ht.recognise, rest, levels)
            if found is not None:
                return found
    k = next(iter(rest))
    raise foreign(
        k,
        rest[k],
        f"fits no DLA module (no registered head type has it: {', '.join(registered_heads())})",
    )


def _under(shapes: Shapes, prefix: str) -> Shapes:
    return {k[len(prefix) :]: s for k, s in shapes.items() if k.startswith(prefix)}


def _by_level(shapes: Shapes, p: str) -> dict[int, Shapes]:
    """The tensors of each ``level<i>`` module, keyed by what follows its name (one pass)."""
    out: dict[int, Shapes] = {}
    pattern = re.compile(re.escape(p) + r"level(\d{1,6})\.(.+)")
    for k, s in shapes.items():
        if (m := pattern.fullmatch(k)) is not None:
            out.setdefault(int(m.group(1)), {})[m.group(2)] = s
    return out


def _levels(shapes: Shapes, p: str) -> list[dict[str, Any]]:
    levels: list[dict[str, Any]] = []
    grouped = _by_level(shapes, p)
    if len(grouped) > MAX_TREE_LEVELS + 2:
        raise DlagraphError(
            f"not a DLA checkpoint: it has {len(grouped)} level modules, a DLA at most "
            f"{MAX_TREE_LEVELS + 2}"
        )
    gap = next((i for i in range(len(grouped)) if i not in grouped), None)
    if gap is not None:
        raise DlagraphError(
            f"not a DLA checkpoint: it has no level{gap} but levels after it "
            f"({', '.join(f'level{i}' for i in sorted(grouped)[:4])}…)"
        )
    for i in range(len(grouped)):
        sub = grouped[i]
        if i < 2:
            convs = [s for k, s in sub.items() if re.fullmatch(r"\d+\.weight", k) and len(s) == 4]
            if not convs or any(s[2:] != (3, 3) for s in convs):
                k = next(iter(sub))
                raise foreign(f"{p}level{i}.{k}", sub[k], "is not in a 3x3 conv level")
            levels.append({"channels": convs[0][0], "convs": len(convs)})
        else:
            level = _tree_level(sub, f"{p}level{i}.", levels[-1]["channels"])
            if level["aggregate_input"] == (
                i > 2
            ):  # the default: on for every tree level but the first
                del level["aggregate_input"]
            levels.append(level)
    if len(levels) < 3:
        raise DlagraphError(f"not a DLA checkpoint: it has {len(levels)} levels, a DLA at least 3")
    return levels


def _tree_level(sub: Shapes, where: str, c_prev: int) -> dict[str, Any]:
    depth = max(len(re.match(r"(?:tree[12]\.)*", k).group(0)) // 6 for k in sub)  # type: ignore[union-attr]
    roots = {k: get(sub, k, 4, under=where) for k in sub if _ROOT.fullmatch(k)}
    if depth == 0 or not roots:
        k = next(iter(sub))
        raise foreign(where + k, sub[k], "is in no HDA tree (no tree1/tree2 and root)")
    level_root = max(roots.values(), key=lambda s: s[1])
    channels, extra = level_root[0], level_root[1] - level_root[0] * (depth + 1)
    out: dict[str, Any] = {"channels": channels, "depth": depth}
    if extra not in (0, c_prev):
        raise foreign(where + "root", level_root, "aggregates inputs no DLA level root has")
    out["aggregate_input"] = extra == c_prev and extra > 0
    return out


_ROOT = re.compile(r"(?:tree[12]\.)*root\.conv\.weight")


def _root_kernel(shapes: Shapes, p: str) -> int:
    ks = {
        get(sub, k, 4, under=f"{p}level{i}.")[2]
        for i, sub in _by_level(shapes, p).items()
        for k in sub
        if _ROOT.fullmatch(k)
    }
    if len(ks) != 1:
        raise DlagraphError(f"aggregation nodes with different kernels {sorted(ks)}: not one DLA")
    return ks.pop()


def _block(shapes: Shapes, p: str, levels: list[dict[str, Any]]) -> tuple[dict[str, Any], dict]:
    """The block type and options: the first registered block type that recognises the first
    block of each tree level (Level 3's first)."""
    grouped = _by_level(shapes, p)
    blocks = []
    for i, level in enumerate(levels[2:], 2):
        within = "tree1." * level["depth"]
        sub = _under(grouped.get(i, {}), within)
        cin = levels[i - 1]["channels"]
        blocks.append(BlockShapes(sub, cin, level["channels"], f"{p}level{i}.{within}"))
    first = blocks[0]
    if not first.shapes:
        raise DlagraphError(f"not a DLA checkpoint: no block under {first.where}")
    for name in registered_blocks():
        bt = get_block_type(name)
        found = _recognised(f"block type {name!r}", bt.recognise, blocks) if bt.recognise else None
        if found is not None:
            options, notes = found
            return {"type": name, **options}, {f"block.{k}": v for k, v in notes.items()}
    k = next(iter(first.shapes))
    raise foreign(
        first.where + k,
        first.shapes[k],
        f"belongs to no registered block type ({', '.join(registered_blocks())})",
    )
