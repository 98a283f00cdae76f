"""Reading a ``torch.save`` checkpoint of plain tensors without torch's pure-Python unpickler.

``torch.load(weights_only=True)`` walks the pickle opcode by opcode in Python: for dla169's 1,010
tensors that alone takes about 45 ms, more than building the model on the meta device. The file is
a zip archive (``<name>/data.pkl``, one uncompressed ``<name>/data/<key>`` entry per storage), and a
state dict's pickle uses a handful of globals. This reader unpickles ``data.pkl`` with the C
unpickler restricted to exactly those globals (``collections.OrderedDict``, ``torch._utils.
_rebuild_tensor_v2`` and the typed storage names, each mapped to a function of this module: no
other callable can be reached), and reads each storage once into memory the caller owns.

Anything else (legacy pre-1.6 files, big-endian data, compressed entries, parameters, other
globals) makes :func:`read_pth` return ``None``, and the caller falls back to
``torch.load(weights_only=True)``, which reads or refuses the file with its own rules.
"""

from __future__ import annotations

import collections
import ctypes
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any

import torch

from .safetensors_read import DTYPES

__all__ = ["read_pth"]

# torch.save's typed storage names, in the order of the safetensors reader's dtype table
STORAGES = {
    f"{kind}Storage": dtype
    for kind, dtype in zip(
        ("Double", "Float", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool"),
        DTYPES.values(),
        strict=True,
    )
}


class _Unsupported(Exception):
    """The file needs more than this reader does: fall back to torch.load."""


class _Loaded(torch.Tensor):
    """What the unpickler hands out while it runs. The pickle ``BUILD`` opcode calls an object's
    ``__setstate__``, and a plain tensor's would ``set_`` it onto any storage, offset and size;
    this one refuses. Made plain tensors again once the pickle is read."""

    __torch_function__ = torch._C._disabled_torch_function_impl

    def __setstate__(self, state: Any) -> None:
        raise _Unsupported("BUILD on a tensor")


class _StorageType:
    __slots__ = ("dtype",)

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


def _ordered_dict(*args: Any) -> collections.OrderedDict:
    if args:  # torch.save pickles OrderedDict() with no arguments, then SETITEMS
        raise _Unsupported("OrderedDict with arguments")
    return collections.OrderedDict()


def _rebuild_tensor(
    storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any, hooks: Any, *rest: Any
) -> torch.Tensor:
    ints = (offset, *size, *stride) if isinstance(size, tuple) and isinstance(stride, tuple) else ()
    if (
        not isinstance(storage, torch.Tensor)
        or not ints
        or not all(type(i) is int and i >= 0 for i in ints)
        or len(size) != len(stride)
        or requires_grad is not False
        or (hooks is not None and (not isinstance(hooks, dict) or hooks))
    ):
        raise _Unsupported("an unusual tensor record")
    end = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True)) if all(size) else 0
    if end >= max(storage.numel(), 1) and all(size):
        raise _Unsupported("a tensor outside its storage")
    return storage.as_strided(size, stride, offset).as_subclass(_Loaded)


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: Any, load_storage: Any) -> None:
        super().__init__(file)
        self._load_storage = load_storage

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return _ordered_dict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in STORAGES:
            return _StorageType(STORAGES[name])
        raise _Unsupported(f"global {module}.{name}")

    def persistent_load(self, pid: Any) -> torch.Tensor:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise _Unsupported("a persistent id that is not a storage")
        _, kind, key, _location, numel = pid
        if not isinstance(kind, _StorageType) or not isinstance(key, str) or type(numel) is not int:
            raise _Unsupported("a storage record")
        return self._load_storage(key, kind.dtype, numel)


def read_pth(path: str | Path) -> Any | None:
    """The object a ``torch.save`` file of tensors holds (each tensor in memory of its own), or
    ``None`` when the file needs ``torch.load`` (see the module doc)."""
    try:
        with open(path, "rb") as f, zipfile.ZipFile(f) as archive:
            return _read(f, archive)
    except (_Unsupported, zipfile.BadZipFile, pickle.UnpicklingError, EOFError, ValueError,
            KeyError, OSError, struct.error, TypeError, RuntimeError):  # fmt: skip
        return None


def _read(f: Any, archive: zipfile.ZipFile) -> Any:
    infos = {i.filename: i for i in archive.infolist()}
    pkls = [n for n in infos if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pkls) != 1:
        raise _Unsupported("not one data.pkl")
    root = pkls[0][: -len("data.pkl")]
    order = infos.get(root + "byteorder")
    if order is not None and archive.read(order) != b"little":
        raise _Unsupported("big-endian data")
    seen: dict[str, torch.Tensor] = {}

    def load_storage(key: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
        if key in seen:
            if seen[key].dtype != dtype:
                raise _Unsupported("one storage read as two dtypes")
            return seen[key]
        info = infos.get(f"{root}data/{key}")
        itemsize = torch.empty((), dtype=dtype).element_size()
        if info is None or info.compress_type != zipfile.ZIP_STORED:
            raise _Unsupported("a missing or compressed storage")
        if info.file_size != numel * itemsize:
            raise _Unsupported("a storage of the wrong size")
        f.seek(info.header_offset)
        local = f.read(30)
        if local[:4] != b"PK\x03\x04":
            raise _Unsupported("a bad local header")
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        f.seek(info.header_offset + 30 + name_len + extra_len)
        out = torch.empty(numel, dtype=dtype)
        if numel:
            buf = (ctypes.c_char * info.file_size).from_address(out.data_ptr())
            if f.readinto(buf) != info.file_size:
                raise _Unsupported("a truncated storage")
        seen[key] = out.as_subclass(_Loaded)
        return seen[key]

    obj = _Unpickler(archive.open(infos[pkls[0]]), load_storage).load()
    return _own(obj)


def _own(obj: Any) -> Any:
    """Plain tensors again, and tensors that share a storage (views) become copies, so that every
    tensor owns its memory (a model assigned them must not alias two parameters)."""
    if isinstance(obj, torch.Tensor):
        return obj.as_subclass(torch.Tensor)
    if not isinstance(obj, dict):
        return obj
    used: set[int] = set()
    out = collections.OrderedDict()
    for k, v in obj.items():
        if isinstance(v, torch.Tensor):
            v = v.as_subclass(torch.Tensor)
            base = v.untyped_storage().data_ptr()
            whole = v.is_contiguous() and v.storage_offset() == 0
            whole = whole and v.numel() * v.element_size() == v.untyped_storage().nbytes()
            if base in used or not whole:
                v = v.clone()
            used.add(base)
        elif isinstance(v, dict):
            v = _own(v)
        out[k] = v
    return out
