"""The exceptions dlagraph raises, and how it echoes user values in messages.

Every user-facing problem is a ``DlagraphError``; the CLI prints it as ``error:`` lines and exits 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

_PACKAGE = str(Path(__file__).resolve().parents[1])  # dlagraph/


def users_stacklevel() -> int:
    """The ``stacklevel`` that points a warning raised inside dlagraph at the user's line: the
    first frame outside the package (a fixed stacklevel is right for one call path only)."""
    frame = sys._getframe(1)  # the function about to warn: stacklevel 1
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level


__all__ = [
    "DlagraphError",
    "SpecError",
    "RegistryError",
    "InputSizeError",
    "GraphError",
    "CodegenError",
    "WeightsError",
    "DlagraphWarning",
    "users_stacklevel",
    "clip",
    "DeployError",
    "one_line",
    "safe_repr",
]


class DlagraphError(Exception):
    """Base class of every error dlagraph raises on purpose."""


class SpecError(DlagraphError, ValueError):
    """A spec is invalid; ``problems`` holds one line per problem, each naming its field path."""

    def __init__(self, problems: list[str] | str, source: str | None = None) -> None:
        if isinstance(problems, str):
            problems = [problems]
        self.problems: list[str] = list(problems)
        self.source = source
        super().__init__("\n".join(self.problems))


class RegistryError(DlagraphError, ValueError):
    """A block type was registered, replaced or removed in a way the registry does not allow."""


class InputSizeError(DlagraphError, ValueError):
    """An input size the network cannot take (sides must be multiples of its total stride)."""


class GraphError(DlagraphError):
    """The DAG broke an invariant; the message names the node and the spec path that produced it."""


class CodegenError(DlagraphError):
    """Source generation or writing generated files failed."""


class WeightsError(DlagraphError):
    """A checkpoint does not fit a model (missing, unexpected or mis-shaped keys, or unsafe content)."""


class DeployError(DlagraphError, ValueError):
    """A deployment request (``optimize``, ``export``) that cannot be carried out as given: a bad
    argument, a precision a runtime or format lacks, a missing runtime, a bad batch."""


class DlagraphWarning(UserWarning):
    """Something works but not as well as it could here (bf16 on a CPU that emulates it)."""


def one_line(text: str) -> str:
    """``text`` for a comment or a docstring of generated source: as it is when it is printable
    and holds no quote or backslash, else escaped (``\\n``, ``\\"``, ``\\x..``): it can never end
    a comment's line, close a docstring or start an escape of its own."""
    if text.isprintable() and not set(text) & {'"', "\\"}:
        return text
    return ascii(text)[1:-1].replace('"', '\\"')


def clip(text: str, limit: int = 60) -> str:
    """``text`` on one line and at most ``limit`` characters (an ellipsis marks the cut), every
    character a terminal would act on (newlines, escapes, other controls) shown escaped, so a
    hostile name can neither forge a line nor recolour the terminal."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def safe_repr(value: Any, limit: int = 60) -> str:
    """A bounded ``repr`` of a user value: never huge, never multi-line, never raising."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        digits = int(value.bit_length() * 0.30103) + 1  # str() of such ints may be refused
        return f"an integer of about {digits:,} digits"
    if isinstance(value, str) and len(value) > 4 * limit:
        value = value[: 4 * limit]  # repr of the part that will be shown only
    try:
        text = repr(value)
    except Exception:  # a hostile __repr__, or Python's int-to-str limit
        text = f"<{type(value).__name__}>"
    return clip(text, limit)
