"""Loading checkpoints into compiled models, with a per-level report and layout conversion.

timm moved the official code's ``project`` layers to where they are used, so official checkpoints
carry extra, never-used projection tensors (ground truth §3). ``load_weights`` converts between the
two layouts by name: it drops those tensors for a timm-layout model and, for an official-layout
model, keeps the model's own values for them when a timm checkpoint lacks them (they never affect
the output). Checkpoints are read without executing pickled code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...errors import WeightsError, clip, safe_repr
from .modules import assign_state
from .pth_read import read_pth
from .safetensors_read import read_safetensors

__all__ = ["load_weights", "assign_weights", "LoadReport", "read_owned", "read_state_dict"]


@dataclass
class LoadReport:
    """What a load matched, and what it could not."""

    matched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # official-only unused projections
    kept: list[str] = field(default_factory=list)  # official-layout keys the checkpoint lacked
    unfit: list[str] = field(default_factory=list)  # sparse, meta, quantized or complex tensors
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
            "unfit": [k.split(":")[0] for k in self.unfit],
            "converted": [k for k, _, _ in self.converted],
        }
        for kind, keys in groups.items():
            for k in keys:
                row = out.setdefault(k.split(".")[0], dict.fromkeys(groups, 0))
                row[kind] += 1
        return out

    def transfer_table(self) -> list[str]:
        """Per top-level module: tensors transferred, left at init (missing or reshaped) and
        checkpoint tensors not used."""
        rows = [("module", "transferred", "left at init", "unused from checkpoint")]
        table = self.by_level()
        order = [m for m in self.modules if m in table] + [
            m for m in table if m not in self.modules
        ]
        for level in order:
            row = table[level]
            kept = row["missing"] + row["mismatched"]
            unused = row["unexpected"] + row["mismatched"] + row["unfit"]
            rows.append((level, str(row["matched"]), str(kept), str(unused)))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        return [
            "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                      enumerate(zip(r, widths, strict=True)))
            for r in rows
        ]  # fmt: skip

    def __str__(self) -> str:
        if self.transfer:
            return "\n".join([
                f"transferred {len(self.matched)} tensors; left at init {len(self.missing)} "
                f"missing and {len(self.mismatched)} reshaped; {len(self.unexpected)} checkpoint "
                f"tensors have no place in the model",
                *self.transfer_table(),
            ])  # fmt: skip
        lines = [
            f"matched {len(self.matched)}, missing {len(self.missing)}, unexpected "
            f"{len(self.unexpected)}, shape-mismatched {len(self.mismatched)}"
            + (f", dropped {len(self.dropped)} unused official projections" if self.dropped else "")
            + (f", kept {len(self.kept)} model values for unused projections" if self.kept else "")
            + (f", unusable {len(self.unfit)}" if self.unfit else "")
            + (f", dtype-converted {len(self.converted)}" if self.converted else "")
        ]
        for level, row in self.by_level().items():
            bad = {k: v for k, v in row.items() if v and k != "matched"}
            if bad:
                lines.append(f"  {level}: " + ", ".join(f"{k} {v}" for k, v in bad.items()))
        for k in self.missing[:20]:
            lines.append(f"  missing: {k}")
        for k in self.unexpected[:20]:
            lines.append(f"  unexpected: {k}")
        for k, a, b in self.mismatched[:20]:
            lines.append(f"  shape: {k}: checkpoint {list(a)}, model {list(b)}")
        for why in self.unfit[:20]:
            lines.append(f"  unusable: {why}")
        for k, a, b in self.converted[:20]:
            lines.append(f"  dtype: {k}: checkpoint {a}, model {b} (converted)")
        return "\n".join(lines)


def _read_file(path: Path) -> tuple[Any, bool]:
    """The object in a checkpoint file, and whether its tensors own their memory: ``.safetensors``
    files and ``torch.save`` files of plain tensors (:mod:`.pth_read`) are read by dlagraph into
    tensors of their own; other ``torch.save`` files go through ``torch.load(weights_only=True)``
    (memory-mapped where possible)."""
    if path.is_dir():
        raise WeightsError(f"{path}: is a folder, not a checkpoint file")
    if not path.exists():
        raise WeightsError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        try:
            return read_safetensors(path), True
        except (ValueError, OSError) as e:  # truncated, garbage or empty files
            raise WeightsError(
                f"{path}: not a readable safetensors file ({type(e).__name__}: "
                f"{clip(str(e).splitlines()[0] if str(e) else '', 120)})"
            ) from None
    fast = read_pth(path)
    if fast is not None:
        return fast, True
    try:
        try:  # memory-mapped (twice as fast): loading copies the tensors out of it
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True), False
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            # files from before torch 1.6 (the official DLA checkpoints) cannot be mapped
            return torch.load(path, map_location="cpu", weights_only=True), False
    except Exception as e:  # pickle.UnpicklingError, EOFError, IndexError on empty files …
        raise WeightsError(
            f"{path}: not loaded: it is not a plain tensor checkpoint ({type(e).__name__}: "
            f"{clip(str(e).splitlines()[0] if str(e) else 'empty or truncated', 120)}); "
            f"dlagraph never unpickles code"
        ) from None


def read_state_dict(source: str | Path | Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """A state dict from a mapping, a ``.safetensors`` file or a ``torch.save`` file.

    ``torch.load`` runs with ``weights_only=True``: a file that needs pickled code is refused.
    Common wrappers (``{"state_dict": …}``, ``{"model": …}``, DDP's ``module.`` prefix) are undone.

    Raises:
        WeightsError: for anything that is not a mapping of string names to tensors.
    """
    return _state_dict(source)[0]


def _state_dict(source: str | Path | Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], bool]:
    """:func:`read_state_dict`, and whether its tensors own their memory (read from a file by
    dlagraph's own readers), so that loading may keep them without a copy."""
    sd: Any
    sd, owned = (dict(source), False) if isinstance(source, Mapping) else _read_file(Path(source))
    for key in ("state_dict", "model", "model_state"):
        if isinstance(sd, Mapping) and key in sd and isinstance(sd[key], Mapping):
            sd = sd[key]
    if not isinstance(sd, Mapping):
        raise WeightsError(
            f"checkpoint is not a mapping of names to tensors (got {type(sd).__name__})"
        )
    for k, v in sd.items():
        if not isinstance(k, str):
            raise WeightsError(f"checkpoint key {safe_repr(k)} is not a string")
        if not isinstance(v, torch.Tensor):
            raise WeightsError(
                f"checkpoint entry {safe_repr(k)} is a {type(v).__name__}, not a tensor"
            )
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return dict(sd), owned


def _unfit(k: str, v: torch.Tensor, own: torch.Tensor) -> str | None:
    """Why checkpoint tensor ``v`` cannot be copied into the model's ``own``, or None."""
    if v.layout != torch.strided:
        return f"{k}: checkpoint tensor is {str(v.layout).removeprefix('torch.')}, not dense"
    if v.is_meta:
        return f"{k}: checkpoint tensor has no data (meta device)"
    if v.is_quantized:
        return f"{k}: checkpoint tensor is quantized"
    if v.is_complex() and not own.is_complex():
        return f"{k}: checkpoint tensor is complex ({v.dtype}), the model's is {own.dtype}"
    return None


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


def read_owned(source: str | Path | Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """:func:`read_state_dict`, each tensor copied to memory of its own on the CPU (not a view of
    a memory-mapped file, nor of a caller's state dict). Tensors that cannot be loaded are left as
    they are, for the load's report to name."""
    sd, owned = _state_dict(source)
    if owned:
        return sd  # read into tensors of their own already
    return {
        k: v.detach().to("cpu", copy=True) if _unfit(k, v, v) is None else v for k, v in sd.items()
    }


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
    model: nn.Module, full: dict[str, torch.Tensor], sd: dict[str, torch.Tensor], strict: bool,
    prefix: str,
) -> tuple[LoadReport, dict[str, torch.Tensor]]:  # fmt: skip
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
        elif (why := _unfit(k, v, own[k])) is not None:
            report.unfit.append(why)
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
