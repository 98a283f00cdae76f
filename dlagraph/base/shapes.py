"""Reading a checkpoint's tensor shapes safely: what ``infer`` and each block's and head's
``recognise`` use, so that any shape (another rank, an empty dimension, a missing companion) is a
one-line error naming the tensor, never an IndexError or KeyError."""

from __future__ import annotations

from .errors import DlagraphError, clip, one_line

__all__ = ["Shapes", "echo", "foreign", "get"]

Shapes = dict[str, tuple[int, ...]]  # a state dict's tensor names and shapes


def echo(key: str) -> str:
    """A tensor name from a checkpoint, as messages show it: one escaped line, bounded."""
    return clip(one_line(key), 100)


def foreign(key: str, shape: tuple[int, ...], why: str) -> DlagraphError:
    return DlagraphError(f"not a DLA checkpoint: tensor {echo(key)} {list(shape)} {why}")


def get(shapes: Shapes, key: str, rank: int, why: str = "", under: str = "") -> tuple[int, ...]:
    """The shape of tensor ``key`` (of the module at ``under``), which a DLA module of this kind
    has, with ``rank`` dimensions, none of them empty; otherwise the error names the tensor (or
    the one missing)."""
    if key not in shapes:
        raise DlagraphError(
            f"not a DLA checkpoint: it lacks tensor {echo(under + key)}"
            + (f", which {why} needs" if why else "")
        )
    s = shapes[key]
    if len(s) != rank:
        raise foreign(under + key, s, f"has {len(s)} dimensions where a DLA's has {rank}")
    if 0 in s:
        raise foreign(under + key, s, "is empty (a dimension of size 0)")
    return s
