"""Loading checkpoints into compiled models, with a per-level report and layout conversion.

timm moved the official code's ``project`` layers to where they are used, so official checkpoints
carry extra, never-used projection tensors (ground truth §3). ``load_weights`` converts between the
two layouts by name: it drops those tensors for a timm-layout model and, for an official-layout
model, keeps the model's own values for them when a timm checkpoint lacks them (they never affect
the output). Files are read by :mod:`.read`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..base.errors import WeightsError, clip, one_line
from ..nn.modules import assign_state
from .read import read_state_dict, unfit

__all__ = ["load_weights", "assign_weights", "LoadReport"]


@dataclass
class LoadReport:
    """What a load matched, and what it could not."""

    matched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # official-only unused projections
    kept: list[str] = field(default_factory=list)  # official-layout keys the checkpoint lacked
    unfit: list[tuple[str, str]] = field(default_factory=list)  # key, why (sparse, meta …)
    converted: list[tuple[str, str, str]] = field(default_factory=list)  # key, from, to dtype
    transfer: bool = False  # a transfer load: what did not fit stays at init
    modules: list[str] = field(default_factory=list)  # the model's top-level modules, in order

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched or self.unfit)

    def by_level(self) -> dict[str, dict[str, int]]:
        """Counts per top-level module (``base_layer``, ``level0`` … ``fc``)."""
        out: dict[str, dict[str, int]] = {}
        groups = {
            "matched": self.matched,
            "missing": self.missing,
            "unexpected": self.unexpected,
            "mismatched": [k for k, _, _ in self.mismatched],
            "dropped": self.dropped,
            "kept": self.kept,
            "unfit": [k for k, _ in self.unfit],
            "converted": [k for k, _, _ in self.converted],
        }
        for kind, keys in groups.items():
            for k in keys:
                row = out.setdefault(k.split(".")[0], dict.fromkeys(groups, 0))
                row[kind] += 1
        return out

    def transfer_table(self) -> list[str]:
        """Per top-level module: the model's tensors transferred and left at init (missing from the
        checkpoint, reshaped, or unusable there: each model tensor counted once), and the
        checkpoint's tensors that have no place in the model. At most 20 modules, then a count."""
        rows = [("module", "transferred", "left at init", "no place in the model")]
        table = self.by_level()
        order = [m for m in self.modules if m in table] + [
            m for m in table if m not in self.modules
        ]
        for level in order[:_SHOWN]:
            row = table[level]
            kept = row["missing"] + row["mismatched"] + row["unfit"]
            nowhere = row["unexpected"] + row["dropped"]  # dropped: official-only projections
            rows.append((_echo(level), str(row["matched"]), str(kept), str(nowhere)))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = [
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
            for r in rows
        ]
        return lines + _more(len(order), "modules")

    def __str__(self) -> str:
        if self.transfer:
            left = len(self.missing) + len(self.mismatched) + len(self.unfit)
            return "\n".join(
                [
                    f"transferred {len(self.matched)} tensors; left at init {left} ("
                    f"{len(self.missing)} missing, {len(self.mismatched)} reshaped, {len(self.unfit)} "
                    f"unusable in the checkpoint); {len(self.unexpected) + len(self.dropped)} "
                    "checkpoint tensors have no place in the model",
                    *self.transfer_table(),
                ]
            )
        lines = [
            f"matched {len(self.matched)}, missing {len(self.missing)}, unexpected "
            f"{len(self.unexpected)}, shape-mismatched {len(self.mismatched)}"
            + (f", dropped {len(self.dropped)} unused official projections" if self.dropped else "")
            + (f", kept {len(self.kept)} model values for unused projections" if self.kept else "")
            + (f", unusable {len(self.unfit)}" if self.unfit else "")
            + (f", dtype-converted {len(self.converted)}" if self.converted else "")
        ]
        levels = [
            (m, r)
            for m, r in self.by_level().items()
            if any(v for k, v in r.items() if k != "matched")
        ]
        for level, row in levels[:_SHOWN]:
            bad = {k: v for k, v in row.items() if v and k != "matched"}
            lines.append(f"  {_echo(level)}: " + ", ".join(f"{k} {v}" for k, v in bad.items()))
        lines += _more(len(levels), "modules")
        lines += [f"  missing: {_echo(k)}" for k in self.missing[:_SHOWN]]
        lines += _more(len(self.missing), "missing")
        lines += [f"  unexpected: {_echo(k)}" for k in self.unexpected[:_SHOWN]]
        lines += _more(len(self.unexpected), "unexpected")
        for k, a, b in self.mismatched[:_SHOWN]:
            lines.append(f"  shape: {_echo(k)}: checkpoint {list(a)}, model {list(b)}")
        lines += _more(len(self.mismatched), "shape-mismatched")
        lines += [f"  unusable: {_echo(k)}: {why}" for k, why in self.unfit[:_SHOWN]]
        lines += _more(len(self.unfit), "unusable")
        for k, a, b in self.converted[:_SHOWN]:
            lines.append(f"  dtype: {_echo(k)}: checkpoint {a}, model {b} (converted)")
        lines += _more(len(self.converted), "dtype-converted")
        return "\n".join(lines)


_SHOWN = 20  # names a report lists per kind; the rest are counted


def _echo(name: str) -> str:
    """A tensor or module name from a checkpoint, as reports show it: one line, bounded."""
    return clip(one_line(name), 100)


def _more(total: int, what: str) -> list[str]:
    return [f"  … and {total - _SHOWN:,} more {what}"] if total > _SHOWN else []


_PROJECTION_KEYS = (
    "0.weight",
    "1.weight",
    "1.bias",
    "1.running_mean",
    "1.running_var",
    "1.num_batches_tracked",
)


def _unused_projection_keys(model: nn.Module) -> set[str]:
    """The keys of the projections official checkpoints hold and never use (the IR records where
    they are, in either layout)."""
    dag = getattr(model, "dag", None)
    if dag is None:
        return set()
    return {f"{p}.{s}" for p in dag.graph["official_only"] for s in _PROJECTION_KEYS}


def load_weights(
    model: nn.Module,
    source: str | Path | Mapping[str, Any],
    *,
    strict: bool = True,
    prefix: str = "",
    transfer: bool = False,
) -> LoadReport:
    """Load a checkpoint into ``model`` by name, converting between official and timm layouts.

    Returns a :class:`LoadReport`. With ``strict`` (the default), any missing, unexpected or
    mis-shaped key raises :class:`WeightsError` with the report and nothing is loaded; without it,
    the matching tensors are loaded and the report says what was not. ``prefix`` loads into a
    sub-tree: ``prefix="base."`` puts an ImageNet DLA checkpoint into a ``dla_up`` network's backbone
    (strictness then applies to that sub-tree).

    ``transfer=True`` seeds one network with another's weights (not strict): every tensor whose
    module path and shape the model shares is loaded, the rest of the model stays at its init, and
    the report gives, per level, what was transferred and what was left at init. Levels before the
    first level that differs then compute exactly what they computed in the source network.
    """
    full = model.state_dict()
    report, usable = _plan(model, full, read_state_dict(source), strict and not transfer, prefix)
    report.transfer = transfer
    try:  # converted up front: the copies below cannot fail half-way
        ready = {
            prefix + k: v.detach().to(device=full[prefix + k].device, dtype=full[prefix + k].dtype)
            for k, v in usable.items()
        }
    except (RuntimeError, TypeError) as e:
        raise WeightsError(f"checkpoint tensors cannot be converted: {clip(str(e), 200)}") from None
    merged = dict(full)  # the model keeps its own tensors wherever the checkpoint has none
    merged.update(ready)
    model.load_state_dict(merged, strict=True)
    return report


def assign_weights(model: nn.Module, owned: dict[str, torch.Tensor]) -> LoadReport:
    """Load ``owned`` (from :func:`read_owned`; its tensors become the model's) strictly into a
    model built on the meta device: no init before, no second copy (unless a dtype differs). What
    the checkpoint lacks (an official layout's unused projections) stays on the meta device for
    the caller to initialise: the report's ``kept``."""
    full = model.state_dict(keep_vars=True)
    report, usable = _plan(model, full, owned, True, "")
    try:
        ready = {k: v.to(full[k].dtype) for k, v in usable.items()}
    except (RuntimeError, TypeError) as e:
        raise WeightsError(f"checkpoint tensors cannot be converted: {clip(str(e), 200)}") from None
    # what the checkpoint lacks (the report's `kept`) stays as it is, on the meta device
    assign_state(model, {**{k: full[k] for k in report.kept}, **ready})
    return report


def _plan(
    model: nn.Module,
    full: dict[str, torch.Tensor],
    sd: dict[str, torch.Tensor],
    strict: bool,
    prefix: str,
) -> tuple[LoadReport, dict[str, torch.Tensor]]:
    """Match checkpoint ``sd`` against the model's state ``full`` (under ``prefix``): the report,
    and the checkpoint tensors to load by key (without the prefix). Raises if strict and unfit."""
    own = {k[len(prefix) :]: v for k, v in full.items() if k.startswith(prefix)}
    report = LoadReport(modules=list(dict.fromkeys(k.split(".")[0] for k in own)))
    dead = {k[len(prefix) :] for k in _unused_projection_keys(model) if k.startswith(prefix)}
    layout = getattr(model, "dag", None) and model.dag.graph["layout"]
    for k in list(sd):
        if k not in own and k in dead and layout == "timm":
            report.dropped.append(k)
            del sd[k]
    for k in own:
        if k not in sd and k in dead and layout == "official":
            report.kept.append(k)
    usable = {}
    for k, v in sd.items():  # everything is checked before anything is copied
        if k not in own:
            report.unexpected.append(k)
        elif (why := unfit(v, own[k])) is not None:
            report.unfit.append((k, why))
        elif tuple(v.shape) != tuple(own[k].shape):
            report.mismatched.append((k, tuple(v.shape), tuple(own[k].shape)))
        else:
            if v.dtype != own[k].dtype:
                report.converted.append((k, _dtype(v.dtype), _dtype(own[k].dtype)))
            usable[k] = v
            report.matched.append(k)
    report.missing = [k for k in own if k not in sd and k not in report.kept]
    if strict and not report.ok:
        raise WeightsError(f"checkpoint does not fit the model:\n{report}")
    return report, usable


def _dtype(d: torch.dtype) -> str:
    return str(d).removeprefix("torch.")
