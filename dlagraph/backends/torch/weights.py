"""Loading checkpoints into compiled models, with a per-level report and layout conversion.

timm moved the official code's ``project`` layers to where they are used, so official checkpoints
carry extra, never-used projection tensors (ground truth §3). ``load_weights`` converts between the
two layouts by name: it drops those tensors for a timm-layout model and, for an official-layout
model, keeps the model's own values for them when a timm checkpoint lacks them (they never affect
the output). Checkpoints are read without executing pickled code.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...errors import WeightsError, clip, one_line, safe_repr
from ...system import available_memory
from .modules import assign_state

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
            "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                      for i, (c, w) in enumerate(zip(r, widths, strict=True)))
            for r in rows
        ]  # fmt: skip
        return lines + _more(len(order), "modules")

    def __str__(self) -> str:
        if self.transfer:
            left = len(self.missing) + len(self.mismatched) + len(self.unfit)
            return "\n".join([
                f"transferred {len(self.matched)} tensors; left at init {left} ("
                f"{len(self.missing)} missing, {len(self.mismatched)} reshaped, {len(self.unfit)} "
                f"unusable in the checkpoint); {len(self.unexpected) + len(self.dropped)} "
                "checkpoint tensors have no place in the model",
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
        levels = [(m, r) for m, r in self.by_level().items() if any(
            v for k, v in r.items() if k != "matched")]  # fmt: skip
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


def _regular_file(path: Path) -> int:
    """The size of checkpoint ``path``, refused unless it is a regular file (a FIFO would block
    the reader, a device such as ``/dev/zero`` never ends)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise WeightsError(f"{_name(path)}: no such checkpoint file") from None
    except OSError as e:  # a path too long, a loop of links, no permission …
        raise WeightsError(f"{_name(path)}: cannot read: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise WeightsError(f"{_name(path)}: is a folder, not a checkpoint file")
    if not stat.S_ISREG(st.st_mode):
        raise WeightsError(
            f"{_name(path)}: is not a regular file (a FIFO, socket or device); not reading it"
        )
    if st.st_size == 0:
        raise WeightsError(f"{_name(path)}: is empty, not a checkpoint")
    return st.st_size


def _name(path: Path) -> str:
    """A file name for a message: one line, bounded."""
    return clip(str(path), 160)


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {clip(text[0], 120)}" if text else type(e).__name__


def _is_safetensors(path: Path) -> bool:
    """A safetensors file starts with its header's length (8 bytes, little-endian) and the header's
    JSON object; a torch.save file is a zip archive (``PK``) or a legacy pickle (``\\x80``)."""
    with open(path, "rb") as f:
        head = f.read(9)
    return path.suffix == ".safetensors" or (len(head) == 9 and head[8:9] == b"{")


def _read_file(path: Path) -> tuple[Any, bool]:
    """The object in a checkpoint file, and whether its tensors own their memory.

    Only the maintained readers read checkpoints: the ``safetensors`` library (its ``pread``
    backend: tensors of their own, never a view of the file) and ``torch.load(weights_only=True)``
    (memory-mapped: its tensors are views of the file, which loading copies). Every failure of
    either becomes one :class:`WeightsError` line naming the file.
    """
    _regular_file(path)
    if _is_safetensors(path):
        from safetensors.torch import load_file

        try:
            return load_file(path, backend="pread"), True
        except Exception as e:  # SafetensorError, OSError, MemoryError …
            raise WeightsError(
                f"{_name(path)}: not a readable safetensors file ({_reason(e)})"
            ) from None
    try:
        try:  # memory-mapped (twice as fast): loading copies the tensors out of it
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True), False
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            # files from before torch 1.6 (the official DLA checkpoints) cannot be mapped
            return torch.load(path, map_location="cpu", weights_only=True), False
    except Exception as e:  # pickle.UnpicklingError, RuntimeError, EOFError, MemoryError …
        raise WeightsError(
            f"{_name(path)}: not loaded: it is not a readable checkpoint of plain tensors "
            f"({_reason(e)}); dlagraph never unpickles code"
        ) from None


def read_state_dict(source: str | Path | Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """A state dict from a mapping, a ``.safetensors`` file or a ``torch.save`` file.

    ``torch.load`` runs with ``weights_only=True``: a file that needs pickled code is refused.
    Common wrappers (``{"state_dict": …}``, ``{"model": …}``, DDP's ``module.`` prefix) are undone.

    Raises:
        WeightsError: for anything that is not a mapping of string names to tensors.
    """
    return _state_dict(source)[0]


def _state_dict(
    source: str | Path | Mapping[str, Any],
) -> tuple[dict[str, torch.Tensor], bool, str]:
    """:func:`read_state_dict`, whether its tensors own their memory (the safetensors reader's
    do; torch.load's memory-mapped ones and a caller's mapping do not), and what to call it."""
    sd: Any
    if isinstance(source, Mapping):
        sd, owned, where = dict(source), False, "checkpoint"
    else:
        sd, owned = _read_file(Path(source))
        where = _name(Path(source))
    sd = _unwrap(sd)
    if not isinstance(sd, Mapping):
        raise WeightsError(f"{where}: not a mapping of names to tensors (got {type(sd).__name__})")
    for k, v in sd.items():
        if not isinstance(k, str):
            raise WeightsError(f"{where}: key {safe_repr(k)} is not a string")
        if not isinstance(v, torch.Tensor):
            raise WeightsError(
                f"{where}: entry {safe_repr(k)} is a {type(v).__name__}, not a tensor"
            )
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return dict(sd), owned, where


WRAPPERS = ("state_dict", "model", "model_state")


def _unwrap(obj: Any) -> Any:
    """The state dict inside a training checkpoint: ``{"state_dict": …}``, ``{"model": …}`` or
    ``{"model_state": …}`` (nested ones too, in that order)."""
    for key in WRAPPERS:
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    return obj


def _unfit(v: torch.Tensor, own: torch.Tensor) -> str | None:
    """Why checkpoint tensor ``v`` cannot be copied into the model's ``own``, or None."""
    if v.layout != torch.strided:
        return f"checkpoint tensor is {str(v.layout).removeprefix('torch.')}, not dense"
    if v.is_meta:
        return "checkpoint tensor has no data (meta device)"
    if v.is_quantized:
        return "checkpoint tensor is quantized"
    if v.is_complex() and not own.is_complex():
        return f"checkpoint tensor is complex ({v.dtype}), the model's is {own.dtype}"
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
    they are, for the load's report to name.

    Raises:
        WeightsError: for a tensor that views more elements than its storage holds (a stride-0
            view: a few bytes on disk that a copy would blow up), or copies that would not fit in
            the available memory, before anything is copied.
    """
    sd, owned, where = _state_dict(source)
    if owned:
        return sd  # read into tensors of their own already
    copied = {k for k, v in sd.items() if _unfit(v, v) is None}
    need = 0
    for k in copied:
        v = sd[k]
        size = v.numel() * v.element_size()
        if (
            v.numel()
            and size > v.untyped_storage().nbytes() - v.storage_offset() * v.element_size()
        ):
            raise WeightsError(
                f"{where}: tensor {safe_repr(k, 80)} {list(v.shape)} views {size:,} bytes of a "
                f"{v.untyped_storage().nbytes():,}-byte storage (overlapping or broadcast "
                "strides); not copying it"
            )
        need += size
    free = available_memory()
    if free is not None and need > free:
        raise WeightsError(
            f"{where}: its tensors need {need / 2**30:,.2f} GiB of memory, only "
            f"{free / 2**30:,.2f} GiB is available"
        )
    return {
        k: v.detach().clone(memory_format=torch.contiguous_format) if k in copied else v
        for k, v in sd.items()
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
        elif (why := _unfit(v, own[k])) is not None:
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
