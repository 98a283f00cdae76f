"""Reading a ``.safetensors`` file straight into tensors the caller owns.

``safetensors.torch.load_file`` returns views of a memory-mapped file: loading them into a model
costs a second copy, and keeping them would tie the model to the file (a later write to the same
path would pull the memory from under it). The format is simple (an 8-byte little-endian header
length, a JSON header of ``{name: {dtype, shape, data_offsets}}``, the raw bytes), so each tensor is
allocated once and filled by one ``readinto``. Every field is checked before anything is read.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import torch

__all__ = ["read_safetensors"]

DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
MAX_HEADER = 100 * 2**20  # safetensors' own limit


def _entry(name: str, v: Any, data_size: int) -> tuple[torch.dtype, list[int], int, int]:
    """A header entry, checked: dtype, shape, start and end of its bytes."""
    if not isinstance(v, dict) or set(v) != {"dtype", "shape", "data_offsets"}:
        raise ValueError(f"header entry {name!r} is not {{dtype, shape, data_offsets}}")
    dtype, shape, offsets = DTYPES.get(v["dtype"]), v["shape"], v["data_offsets"]
    if dtype is None:
        raise ValueError(f"{name!r}: dtype {v['dtype']!r} is not one of {', '.join(DTYPES)}")
    if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
        raise ValueError(f"{name!r}: shape {shape!r} is not a list of sizes")
    if not (
        isinstance(offsets, list)
        and len(offsets) == 2
        and all(type(o) is int for o in offsets)
        and 0 <= offsets[0] <= offsets[1] <= data_size
    ):
        raise ValueError(f"{name!r}: data_offsets {offsets!r} are not within the file")
    nbytes = math.prod(shape) * dtype.itemsize
    if offsets[1] - offsets[0] != nbytes:
        raise ValueError(f"{name!r}: {offsets[1] - offsets[0]} bytes for {nbytes} of data")
    return dtype, shape, offsets[0], offsets[1]


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file, in memory of their own on the CPU.

    Raises:
        ValueError: the file is not a well-formed safetensors file (the reason, one line).
        OSError: it cannot be read.
    """
    if sys.byteorder != "little":  # the format is little-endian; let safetensors convert
        from safetensors.torch import load_file

        return {k: v.clone() for k, v in load_file(str(path)).items()}
    with open(path, "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        if len(head) < 8:
            raise ValueError("shorter than the 8-byte header length")
        n = int.from_bytes(head, "little")
        if n > min(size - 8, MAX_HEADER):
            raise ValueError(f"header length {n} is beyond the file ({size} bytes)")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"header is not JSON ({e})") from None
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
        header.pop("__metadata__", None)
        base = 8 + n
        entries = [(_entry(k, v, size - base), k) for k, v in header.items()]
        out: dict[str, torch.Tensor] = {}
        # in file order: one forward pass over the bytes
        for (dtype, shape, start, end), name in sorted(entries, key=lambda e: e[0][2]):
            t = torch.empty(shape, dtype=dtype)
            if end > start:
                f.seek(base + start)
                buf = (ctypes.c_char * (end - start)).from_address(t.data_ptr())
                if f.readinto(buf) != end - start:
                    raise ValueError(f"{name!r}: the file ends inside its data")
            out[name] = t
        return {k: out[k] for k in header}  # the header's order
