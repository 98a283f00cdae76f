"""The front's files: one YAML spec per design, ``front.md`` (the table ``fit`` prints) and a
plot of parameters against MACs (colour: activation memory) with the base spec and the paper's
presets marked, by matplotlib. The same study gives the same bytes."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import yaml

from .._version import __version__
from ..base.errors import DlagraphError
from ..base.io import MARKER
from ..ir.analysis import summarize
from ..ir.compile import compile_spec
from ..ir.memory import format_bytes as _mib
from ..spec import Spec, load_spec, presets
from .search import FitResult, Member
from .space import Budget

__all__ = ["table", "front_files"]


def _si(n: float, unit: str = "") -> str:
    for suffix, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.3g}{suffix}{unit}"
    return f"{n:.3g}{unit}"


def table(result: FitResult, base: Spec, budget: Budget) -> str:
    """The front as a Markdown table, the base spec's row first."""
    extra = ""
    if result.evaluated:
        extra += f" {result.evaluated} |"
    if result.measured:
        extra += f" latency ({result.measured}) |"
    rows = [
        f"| design | parameters | MACs | memory |{extra} width | depths | block | residual |",
        "|---|---:|---:|---:|" + "---:|" * extra.count("|") + "---:|---|---|---|",
    ]
    assert result.base is not None
    for m in [result.base, *result.front]:
        block = m.spec["block"]["type"] + (
            f" ({m.spec['block']['cardinality']})" if "cardinality" in m.spec["block"] else ""
        )
        cells = ""
        if result.evaluated:
            cells += " - |" if m.accuracy is None else f" {m.accuracy:.4f} |"
        if result.measured:
            cells += " - |" if m.latency is None else f" {m.latency * 1e3:.2f} ms |"
        name = f"{base.name} (base)" if m.trial < 0 else f"trial {m.trial}"
        rows.append(
            f"| {name} | {m.params:,} | {_si(m.macs)} | {_mib(m.memory)} |{cells} "
            f"{float(m.choices.get('width', 1)):g} | {_depths(m.spec)} | {block} | "
            f"{m.spec['aggregation']['residual']} |"
        )
    return "\n".join(rows)


def _objectives(result: FitResult) -> str:
    text = "more parameters, fewer MACs, less activation memory"
    if result.evaluated:
        text = f"a higher {result.evaluated}, fewer parameters, fewer MACs, less activation memory"
    if result.measured:
        text += f"; latency measured for the front: {result.measured}"
    return text


def _depths(data: dict[str, Any]) -> str:
    return ", ".join(str(lv["depth"]) for lv in data["levels"] if "depth" in lv)


def front_files(
    result: FitResult, base: Spec, budget: Budget, out: Path, plot: bool = True
) -> dict[Path, str | bytes]:
    """Every file of the front: ``front/<name>_t<trial>.yaml``, ``front.md``, ``front.png``
    and ``front.svg``."""
    files: dict[Path, str | bytes] = {}
    h, w = budget.size
    for m in result.front:
        compile_spec(m.spec)  # the IR's lint, which the search skipped
        name = f"{base.name}_t{m.trial}"
        data = {**m.spec, "name": name}
        head = (
            f"# {MARKER} {__version__}: dlagraph fit of {base.name}, trial {m.trial}; "
            f"parameters {m.params:,}, MACs at {h}x{w} {m.macs:,}, inference activation memory "
            f"at batch {budget.batch} {m.memory:,} bytes"
            + (f"; {result.evaluated} {m.accuracy:.4f}" if m.accuracy is not None else "")
            + (f"; latency {m.latency * 1e3:.2f} ms ({result.measured})" if m.latency else "")
            + "\n"
        )
        files[out / "front" / f"{name}.yaml"] = head + yaml.safe_dump(
            data, sort_keys=False, default_flow_style=None
        )
    limits = ", ".join(
        f"{n} <= {v:,}"
        for n, v in (
            ("parameters", budget.params),
            ("MACs", budget.macs),
            ("memory", budget.memory),
        )
        if v is not None
    )
    files[out / "front.md"] = (
        f"<!-- {MARKER} {__version__} -->\n# dlagraph fit: {base.name}\n\n"
        f"Budget: {limits} (at {h}x{w}, batch {budget.batch}); {result.trials} "
        f"trial{'s' * (result.trials != 1)}, "
        f"{result.feasible} within the budget, {len(result.front)} on the Pareto front "
        f"({_objectives(result)}).\n\n" + table(result, base, budget) + "\n"
    )
    if plot and result.points:
        files.update(_plots(result, base, budget, out))
    return files


_ATTR = {"latency": "measured", "accuracy": "evaluated"}


def _panel(ax: Any, kind: str, result: FitResult, base: Spec) -> None:
    """Latency against parameters, or the score against MACs, for the front and the base."""
    assert result.base is not None
    members = [m for m in result.front if getattr(m, kind) is not None]
    scale = 1e3 if kind == "latency" else 1.0

    def xy(m: Member) -> tuple[float, float]:
        value = getattr(m, kind) * scale
        return (value, m.params / 1e6) if kind == "latency" else (m.macs / 1e9, value)

    if members:
        xs, ys = zip(*map(xy, members), strict=True)
        ax.scatter(xs, ys, c="#1f77b4", s=30, label="Pareto front", zorder=3)
        for m, x, y in zip(members, xs, ys, strict=True):
            ax.annotate(
                f"t{m.trial}", (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points"
            )
    if getattr(result.base, kind) is not None:
        x, y = xy(result.base)
        ax.scatter([x], [y], marker="*", s=160, c="#d62728", label=f"base: {base.name}")
    if kind == "latency":
        ax.set_xlabel(f"latency, ms ({result.measured})")
        ax.set_ylabel("parameters (M)")
    else:
        ax.set_xlabel("MACs (G)")
        ax.set_ylabel(str(result.evaluated))
    ax.legend(fontsize=7, loc="best")


def _plots(result: FitResult, base: Spec, budget: Budget, out: Path) -> dict[Path, bytes]:
    try:
        import matplotlib
    except ImportError:
        raise DlagraphError(
            "dlagraph fit needs optuna and matplotlib: pip install 'dlagraph[fit]'"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "dlagraph"  # the same ids in every run
    extra = [k for k in ("latency", "accuracy") if getattr(result, _ATTR[k])]
    fig, axes = plt.subplots(
        1, 1 + len(extra), figsize=(7 + 4.5 * len(extra), 4.5), dpi=100, squeeze=False
    )
    ax = axes[0][0]
    pts = [p for p in result.points if p[3]]
    if pts:
        ax.scatter(
            [p[0] / 1e6 for p in pts],
            [p[1] / 1e9 for p in pts],
            s=6,
            c="#cccccc",
            label="designs within the budget",
        )
    front = result.front
    sc = ax.scatter(
        [m.params / 1e6 for m in front],
        [m.macs / 1e9 for m in front],
        c=[m.memory / 2**20 for m in front],
        cmap="viridis",
        s=30,
        label="Pareto front",
        zorder=3,
    )
    fig.colorbar(sc, ax=ax, label=f"inference activation memory, MiB (batch {budget.batch})")
    assert result.base is not None
    bp, bm = result.base.params, result.base.macs
    ax.scatter([bp / 1e6], [bm / 1e9], marker="*", s=160, c="#d62728", label=f"base: {base.name}")
    # the axes frame the budget region: the front, the designs within the budget, the base and
    # the budget's lines (the paper's large presets would stretch both axes into a corner)
    xs = [m.params / 1e6 for m in front] + [p[0] / 1e6 for p in pts] + [bp / 1e6]
    ys = [m.macs / 1e9 for m in front] + [p[1] / 1e9 for p in pts] + [bm / 1e9]
    xs += [budget.params / 1e6] if budget.params else []
    ys += [budget.macs / 1e9] if budget.macs else []
    xlim, ylim = (min(xs) / 1.4, max(xs) * 1.4), (min(ys) / 1.4, max(ys) * 1.4)
    star = (math.log10(bp / 1e6), math.log10(bm / 1e9))
    taken: list[tuple[float, float]] = []  # where labels are
    span = (math.log10(xlim[1] / xlim[0]), math.log10(ylim[1] / ylim[0]))

    def near(a: tuple[float, float], b: tuple[float, float]) -> bool:  # one label's size apart
        return abs(a[0] - b[0]) < 0.1 * span[0] and abs(a[1] - b[1]) < 0.04 * span[1]

    for path in presets().values():  # the paper's classification networks, where they fall inside
        g = compile_spec(path)
        if not (g.graph["paper_name"] and g.graph["classifier"] and g.graph["in_channels"] == 3):
            continue
        s = summarize(g, budget.size)
        x, y = s.params / 1e6, s.macs / 1e9
        if not (xlim[0] <= x <= xlim[1] and ylim[0] <= y <= ylim[1]):
            continue
        ax.scatter([x], [y], marker="^", s=25, c="#555555")
        here = (math.log10(x), math.log10(y))
        if not any(near(here, other) for other in taken):  # a label only where no other is
            taken.append(here)
            ax.annotate(
                load_spec(path).paper_name,
                (x, y),
                fontsize=7,
                xytext=(4, -10) if near(here, star) else (4, 3),  # below, clear of the star
                textcoords="offset points",
            )
    if budget.params:
        ax.axvline(budget.params / 1e6, ls="--", c="#888888", lw=0.8)
    if budget.macs:
        ax.axhline(budget.macs / 1e9, ls="--", c="#888888", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_xlabel("parameters (M)")
    ax.set_ylabel(f"MACs at {budget.size[0]}x{budget.size[1]} (G)")
    ax.set_title(f"dlagraph fit: {base.name}")
    ax.legend(fontsize=7, loc="lower right")
    for kind, side in zip(extra, axes[0][1:], strict=True):
        _panel(side, kind, result, base)
    fig.tight_layout()
    files: dict[Path, bytes] = {}
    for fmt, meta in (("png", {"Title": MARKER}), ("svg", {"Title": MARKER, "Date": None})):
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, metadata=meta)
        files[out / f"front.{fmt}"] = buf.getvalue()
    plt.close(fig)
    return files
