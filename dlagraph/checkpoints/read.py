"""Reading checkpoint files: only the maintained readers, every failure one line.

``torch.load(weights_only=True, mmap=True)`` reads ``torch.save`` files (a file that needs to
unpickle code is refused; legacy files from before torch 1.6 are read without the map) and the
``safetensors`` library reads safetensors files (recognised by content, whatever the suffix).
Both are audited by their projects; dlagraph keeps no reader of its own. Around them, dlagraph
refuses what a careful loader must: a path that is not a regular file (before opening it), a
tensor that views more bytes than its storage holds, copies that do not fit in memory. Training
checkpoints are unwrapped once (``{"state_dict": …}``, ``{"model": …}``, DDP's ``module.``).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..base.errors import WeightsError, clip, safe_repr
from ..base.system import available_memory

__all__ = ["read_state_dict", "read_owned", "unfit", "WRAPPERS"]


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
    _check_archive(path)
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


def _check_archive(path: Path) -> None:
    """Refuse a ``torch.save`` archive by its directory, before anything is inflated: torch.save
    stores its entries uncompressed (and they are memory-mapped, so their sizes cost no memory
    until copied, which :func:`unfit` checks), so a compressed entry (a few KiB that inflate to
    gigabytes) is not one of its files. A legacy (pre-zip) file has no directory to check."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as z:
            entries = z.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise WeightsError(
            f"{_name(path)}: not a readable checkpoint archive ({_reason(e)})"
        ) from None
    for info in entries:
        if info.compress_type != zipfile.ZIP_STORED:
            raise WeightsError(
                f"{_name(path)}: entry {safe_repr(info.filename, 60)} is compressed "
                f"({info.compress_size:,} bytes declared to inflate to {info.file_size:,}); "
                "torch.save archives are not, so this is not one; not reading it"
            )


def read_state_dict(source: str | Path | Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """A state dict from a mapping, a ``.safetensors`` file or a ``torch.save`` file.

    ``torch.load`` runs with ``weights_only=True``: a file that needs pickled code is refused.
    Common wrappers (``{"state_dict": …}``, ``{"model": …}``, DDP's ``module.`` prefix) are undone.

    Raises:
        WeightsError: for anything that is not a mapping of string names to tensors.
    """
    return _state_dict(source)[0]


def read_checkpoint(
    source: str | Path | Mapping[str, Any],
) -> tuple[dict[str, torch.Tensor], Any]:
    """:func:`read_state_dict`, and the ``spec`` entry beside the weights where the checkpoint
    holds one (``{"model": ..., "spec": {...}}``, as dlagraph's training examples write)."""
    sd, _, _, stored = _state_dict(source, with_spec=True)
    return sd, stored


def _state_dict(source: str | Path | Mapping[str, Any], with_spec: bool = False) -> Any:
    """:func:`read_state_dict`, whether its tensors own their memory (the safetensors reader's
    do; torch.load's memory-mapped ones and a caller's mapping do not), and what to call it
    (and, ``with_spec``, its ``spec`` entry or None)."""
    sd: Any
    if isinstance(source, Mapping):
        sd, owned, where = dict(source), False, "checkpoint"
    else:
        sd, owned = _read_file(Path(source))
        where = _name(Path(source))
    # a wrapper's "spec" entry (a bare state dict's keys are tensor names)
    wrapped = isinstance(sd, Mapping) and any(k in sd for k in WRAPPERS)
    stored = sd.get("spec") if wrapped else None
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
    return (dict(sd), owned, where, stored) if with_spec else (dict(sd), owned, where)


WRAPPERS = ("state_dict", "model", "model_state")


def _unwrap(obj: Any) -> Any:
    """The state dict inside a training checkpoint: ``{"state_dict": …}``, ``{"model": …}`` or
    ``{"model_state": …}`` (nested ones too, in that order)."""
    for key in WRAPPERS:
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    return obj


def unfit(v: torch.Tensor, own: torch.Tensor) -> str | None:
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
    copied = {k for k, v in sd.items() if unfit(v, v) is None}
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
