"""``dlagraph diff A B``: two networks side by side, per level and tensor by tensor.

Either side is a preset name, a spec file or a checkpoint (whose spec is inferred). The levels are
compared from the static analysis (channels, depth, blocks, parameters, MACs, with deltas); the
tensors from the state dicts (a checkpoint's own, a spec's built on the meta device): the same, the
reshaped (why a strict load says "size mismatch"), the added and removed, and the renamed (the
same tensor under another path: a ``base.`` prefix, or a projection the official layout keeps
elsewhere), grouped by level or head module.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..base.errors import clip, one_line
from ..base.io import CHECKPOINT_SUFFIXES
from ..heads import get_head_type, registered_heads
from ..ir.analysis import default_input_size, summarize
from ..ir.compile import compile_spec
from ..spec import Spec, load_spec
from ..views.html import DiffMarks
from .infer import Shapes, expected_shapes, infer_checkpoint

__all__ = [
    "Side",
    "load_side",
    "diff_levels",
    "diff_tensors",
    "diff_text",
    "first_difference",
    "diff_marks",
    "CHECKPOINT_SUFFIXES",
]

_GROUPS = 40  # module groups the report lists; the rest are counted


@dataclass
class Side:
    """One side of a diff: its spec, its tensors, and how it was read."""

    label: str
    spec: Spec
    shapes: Shapes
    assumptions: list[str] = field(default_factory=list)


def load_side(source: str, name: str | None = None) -> Side:
    """A preset name, a spec file, or a checkpoint (its spec inferred, named ``name`` or after its
    file)."""
    path = Path(source)
    if path.suffix.lower() in CHECKPOINT_SUFFIXES:
        inf = infer_checkpoint(path, name=name)  # reads the file once: the shapes come along
        return Side(f"{_echo(source)} (checkpoint)", inf.spec, inf.shapes, inf.assumptions)
    spec = load_spec(source)
    return Side(_echo(source), spec, expected_shapes(spec))


def _echo(text: str) -> str:
    """A name from a file or a checkpoint, as the report shows it: one line, bounded."""
    return clip(one_line(text), 100)


def _group(key: str) -> str:
    """A tensor's group in the report: its top-level module, or the module under it for the
    containers a head declares (``base.level3``, ``dla_up.ida_0``)."""
    parts = key.split(".")
    containers = {c for n in registered_heads() for c in get_head_type(n).containers}
    return ".".join(parts[:2]) if parts[0] in containers else parts[0]


def _canonical(key: str) -> str:
    """The key with what a rename may change taken out: the ``base.`` prefix, and the subtree a
    projection sits in (the official layout keeps it where it was created)."""
    key = key.removeprefix("base.")
    return re.sub(r"^(level\d+)\.(?:tree[12]\.)*(project\.)", r"\1.\2", key)


@dataclass
class TensorDiff:
    same: list[str] = field(default_factory=list)
    reshaped: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    renamed: list[tuple[str, str]] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # only in A
    added: list[str] = field(default_factory=list)  # only in B


def diff_tensors(a: Shapes, b: Shapes) -> TensorDiff:
    d = TensorDiff()
    for k, s in a.items():
        if k not in b:
            d.removed.append(k)
        elif b[k] == s:
            d.same.append(k)
        else:
            d.reshaped.append((k, s, b[k]))
    pending: dict[tuple[str, tuple[int, ...]], list[str]] = {}
    for k in d.removed:
        pending.setdefault((_canonical(k), a[k]), []).append(k)
    for k, s in b.items():
        if k in a:
            continue
        match = pending.get((_canonical(k), s))
        if match:
            d.renamed.append((match.pop(0), k))
        else:
            d.added.append(k)
    gone = {old for old, _ in d.renamed}
    d.removed = [k for k in d.removed if k not in gone]
    return d


def common_size(a: Spec, b: Spec, size: tuple[int, int] | None = None) -> tuple[int, int]:
    """The one input size both sides are costed at: ``size`` if given; else the ``input_size``
    a side states (A's, then B's) where the other takes it, else A's or B's smallest from 224,
    else the smallest square from 224 both total strides divide. (Each side at its own size made
    an unchanged stem differ by its MACs.)"""
    if size is not None:
        return tuple(size)  # type: ignore[return-value]
    ga, gb = compile_spec(a), compile_spec(b)
    sa, sb = ga.graph["total_stride"], gb.graph["total_stride"]
    # a size a spec states first (A's, then B's), then the defaults from 224
    sides = [(g, other) for g, other in ((ga, sb), (gb, sa)) if g.graph.get("input_size")]
    sides += [(g, other) for g, other in ((ga, sb), (gb, sa)) if not g.graph.get("input_size")]
    for g, other in sides:
        own = default_input_size(g)
        if all(side % other == 0 for side in own):
            return own
    step = math.lcm(sa, sb)
    side = -(-224 // step) * step
    return side, side


def diff_levels(a: Spec, b: Spec, size: tuple[int, int] | None = None) -> list[str]:
    """The per-level table: channels, depth, blocks, parameters and MACs of A and B, and deltas,
    both at :func:`common_size`."""
    rows = diff_level_rows(a, b, size)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for j, r in enumerate(rows):
        out.append(
            "  ".join(
                c.ljust(w) if i < 4 else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            ).rstrip()
        )
        if j == 0:
            out.append("  ".join("-" * w for w in widths))
    return out


def diff_level_rows(a: Spec, b: Spec, size: tuple[int, int] | None = None) -> list[tuple[str, ...]]:
    """:func:`diff_levels`' table as rows of cells, the header first."""
    at = common_size(a, b, size)
    sa, sb = (summarize(s, at) for s in (a, b))
    la, lb = {lv.module: lv for lv in sa.levels}, {lv.module: lv for lv in sb.levels}
    order = list(la) + [m for m in lb if m not in la]
    rows = [
        (
            "module",
            "channels",
            "depth",
            "blocks",
            "params A",
            "params B",
            "Δ params",
            "MACs A",
            "MACs B",
            "Δ MACs",
        )
    ]

    def pair(x: object, y: object) -> str:
        x, y = ("-" if v is None else v for v in (x, y))
        return f"{x}" if x == y else f"{x} -> {y}"

    for m in order:
        x, y = la.get(m), lb.get(m)
        pa, pb = (x.params if x else 0), (y.params if y else 0)
        ma, mb = (x.macs if x else 0), (y.macs if y else 0)
        rows.append(
            (
                m,
                pair(x and x.channels, y and y.channels),
                pair(x and x.depth, y and y.depth),
                pair(x and x.blocks, y and y.blocks),
                f"{pa:,}",
                f"{pb:,}",
                f"{pb - pa:+,}",
                _short(ma),
                _short(mb),
                _signed(mb - ma),
            )
        )
    rows.append(
        (
            "total",
            "",
            "",
            "",
            f"{sa.params:,}",
            f"{sb.params:,}",
            f"{sb.params - sa.params:+,}",
            _short(sa.macs),
            _short(sb.macs),
            _signed(sb.macs - sa.macs),
        )
    )
    return rows


def _short(n: int) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


def _signed(n: int) -> str:
    return ("+" if n > 0 else "") + _short(n) if n else "0"


def first_difference(a: Spec, b: Spec) -> tuple[str, str] | None:
    """The first module (in forward order) whose computation differs between two specs, and why;
    None when the backbones are the same. Everything before it computes the same function of the
    same weights (what a ``transfer=True`` load keeps bit-identical)."""
    if a.in_channels != b.in_channels:
        return "base_layer", f"in_channels: {a.in_channels} -> {b.in_channels}"
    da, db = _dilated(a), _dilated(b)
    for i, (x, y) in enumerate(zip(a.levels, b.levels, strict=False)):
        module = "base_layer" if i == 0 else f"level{i}"
        if x != y:
            return module, f"levels[{i}]: {_plain(x)} -> {_plain(y)}"
        if (i in da) != (i in db):
            return module, f"dilated instead of strided in {'A' if i in da else 'B'} only"
        if i == 1:  # tree levels start here: the block and the nodes are theirs
            for what in ("block", "aggregation"):
                if getattr(a, what) != getattr(b, what):
                    return "level2", (
                        f"{what}: {_plain(getattr(a, what))} -> {_plain(getattr(b, what))}"
                    )
    if len(a.levels) != len(b.levels):
        n = min(len(a.levels), len(b.levels))
        return f"level{n}", f"levels: {len(a.levels)} -> {len(b.levels)}"
    return None


def _dilated(spec: Spec) -> set[int]:
    """The levels the head runs dilated at stride 1 (a segmentation head's last two)."""
    return set(get_head_type(spec.head.type).dilations(spec.head, len(spec.levels)))


def _plain(x: object) -> str:
    data = x.model_dump(exclude_none=True) if hasattr(x, "model_dump") else x
    return ", ".join(f"{k} {v}" for k, v in data.items()) if isinstance(data, dict) else str(data)


def diff_text(a: Side, b: Side, examples: int = 3, size: tuple[int, int] | None = None) -> str:
    """The report ``dlagraph diff`` prints; MACs of both at :func:`common_size`."""
    lines = [
        f"A: {a.label}: {a.spec.name}, layout {a.spec.layout}",
        f"B: {b.label}: {b.spec.name}, layout {b.spec.layout}",
    ]
    for tag, side in (("A", a), ("B", b)):
        lines += [f"  {tag} assumed {x}" for x in side.assumptions]
    h, w = at = common_size(a.spec, b.spec, size)
    lines += ["", f"levels (MACs at {h}x{w}):", *diff_levels(a.spec, b.spec, at), ""]
    first = first_difference(a.spec, b.spec)
    if first is None:
        lines.append("the backbones compute the same function (only heads or names differ)")
    else:
        lines.append(
            f"first module that differs: {first[0]} ({first[1]}); the modules before it "
            "compute the same, so weights transferred into them give identical outputs"
        )
    lines.append("")
    d = diff_tensors(a.shapes, b.shapes)
    lines.append(
        f"tensors: {len(d.same)} the same, {len(d.renamed)} renamed, {len(d.reshaped)} reshaped, "
        f"{len(d.removed)} only in A, {len(d.added)} only in B"
    )
    groups: dict[str, list[tuple[str, str]]] = {}

    def put(key: str, kind: str, text: str) -> None:
        groups.setdefault(_group(key), []).append((kind, text))

    for k, s, t in d.reshaped:
        put(k, "reshaped", f"reshaped  {_echo(k)}: {list(s)} -> {list(t)}")
    for old, new in d.renamed:
        put(new, "renamed", f"renamed   {_echo(old)} -> {_echo(new)}")
    for k in d.removed:
        put(k, "only in A", f"only in A {_echo(k)} {list(a.shapes[k])}")
    for k in d.added:
        put(k, "only in B", f"only in B {_echo(k)} {list(b.shapes[k])}")
    shown = list(groups.items())
    for g, items in shown[:_GROUPS]:
        kinds: dict[str, int] = {}
        for kind, _ in items:
            kinds[kind] = kinds.get(kind, 0) + 1
        lines.append(f"  {_echo(g)}: " + ", ".join(f"{n} {k}" for k, n in kinds.items()))
        lines += [f"    {t}" for _, t in items[:examples]]
        if len(items) > examples:
            lines.append(f"    … {len(items) - examples} more")
    if len(shown) > _GROUPS:
        lines.append(f"  … and {len(shown) - _GROUPS:,} more modules")
    if not groups:
        lines.append("  the same tensors, names and shapes")
    return "\n".join(lines)


def diff_marks(a: Side, b: Side, size: tuple[int, int] | None = None) -> DiffMarks:
    """What ``dlagraph diff A B --format html`` marks on B's view: each node of B whose tensors
    A lacks (added), reshapes (changed) or holds under another name (renamed), or whose op or
    options differ from A's node of the same name; the level table; the tensors only A has."""
    d = diff_tensors(a.shapes, b.shapes)
    status: dict[str, str] = {}
    for kind, keys in (
        ("renamed", [new for _, new in d.renamed]),
        ("changed", [k for k, _, _ in d.reshaped]),
        ("added", d.added),
    ):  # the strongest mark wins: added over changed over renamed
        for k in keys:
            status[k] = kind
    ga, gb = compile_spec(a.spec), compile_spec(b.spec)
    marks: dict[str, str] = {}
    rank = {"renamed": 0, "changed": 1, "added": 2}
    for n, attrs in gb.nodes(data=True):
        module = attrs["layout"].get("module")
        found = [
            status[k] for k in b.shapes if module and k.startswith(module + ".") and k in status
        ]
        if n not in ga:
            found.append("added")
        elif (ga.nodes[n]["op"], ga.nodes[n].get("rec")) != (attrs["op"], attrs.get("rec")):
            found.append("changed")
        if found:
            marks[n] = max(found, key=rank.__getitem__)
    notes = [f"A assumed {x}" for x in a.assumptions] + [f"B assumed {x}" for x in b.assumptions]
    first = first_difference(a.spec, b.spec)
    if first is not None:
        notes.append(f"first module that differs: {first[0]} ({first[1]})")
    return DiffMarks(
        against=a.label,
        nodes=marks,
        levels=[list(r) for r in diff_level_rows(a.spec, b.spec, size)],
        removed=sorted(d.removed),
        notes=notes,
    )
