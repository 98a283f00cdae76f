"""One small registry shape for everything users can add: blocks, heads, ops, runtimes, formats.

Each kind keeps its own entry type and its own checks of what an entry must hold; what they
share is here: a name rule, built-ins that cannot be replaced or removed, ``replace=True`` for a
user's own, the one-line "unknown ...; registered: ..." error, and a listing with the built-ins
first, in registration order (the order messages, schemas and ``--help`` show them in). Block and
head types also share :func:`check_options_model`: what a spec's keys are validated with.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Iterator
from typing import Generic, TypeVar

from pydantic import BaseModel

from .errors import RegistryError, safe_repr

__all__ = ["Registry", "NAME", "check_options_model"]

T = TypeVar("T")
NAME = re.compile(r"[a-z_][a-z0-9_]*\Z")


class Registry(Generic[T]):
    """Named entries of one ``kind`` ("block type", "head type", "runtime", ...).

    Reads like a mapping (``reg[name]``, ``name in reg``, iteration over the names, ``del
    reg[name]``); ``get`` is the lookup whose error lists what is registered."""

    def __init__(self, kind: str, pattern: re.Pattern[str] = NAME) -> None:
        self.kind = kind
        self._pattern = pattern
        self._entries: dict[str, T] = {}
        self._builtin: set[str] = set()

    def check(self, name: object, *, replace: bool = False) -> None:
        """Raise what :meth:`add` would raise for ``name``, before a kind checks its entry (so
        that a bad name or a taken one is the error, not the entry built for it)."""
        if not isinstance(name, str) or not self._pattern.match(name):
            raise RegistryError(
                f"{self.kind} name {safe_repr(name)} must match {self._pattern.pattern[:-2]}"
            )
        if name in self._entries:
            if name in self._builtin:
                raise RegistryError(f"{self.kind} {name!r} is built in and cannot be replaced")
            if not replace:
                raise RegistryError(
                    f"{self.kind} {name!r} is already registered (pass replace=True)"
                )

    def add(self, name: str, entry: T, *, replace: bool = False, builtin: bool = False) -> T:
        """Register ``entry`` as ``name``; a built-in one is never replaced, a user's own only
        with ``replace=True``."""
        self.check(name, replace=replace)
        self._entries[name] = entry
        if builtin:
            self._builtin.add(name)
        return entry

    def remove(self, name: str) -> None:
        """Remove a user's entry (absent: nothing to do); built-ins stay."""
        if not isinstance(name, str):
            raise RegistryError(f"unregister: give a {self.kind}'s name (got {safe_repr(name)})")
        if name in self._builtin:
            raise RegistryError(f"{self.kind} {name!r} is built in and cannot be removed")
        self._entries.pop(name, None)

    def get(self, name: object) -> T:
        try:
            return self._entries[name]  # type: ignore[index]
        except (KeyError, TypeError):
            raise RegistryError(
                f"unknown {self.kind} {safe_repr(name)}; registered: {', '.join(self.names())}"
            ) from None

    def is_builtin(self, name: str) -> bool:
        return name in self._builtin

    def names(self) -> list[str]:
        """Every name, built-ins first, each group in registration order."""
        return sorted(self._entries, key=lambda n: n not in self._builtin)

    def items(self) -> list[tuple[str, T]]:
        return [(n, self._entries[n]) for n in self.names()]

    def values(self) -> list[T]:
        return [self._entries[n] for n in self.names()]

    def __getitem__(self, name: str) -> T:
        return self._entries[name]  # a KeyError, as a mapping's

    def __delitem__(self, name: str) -> None:
        if name not in self._entries:
            raise KeyError(name)
        self.remove(name)

    def __contains__(self, name: object) -> bool:
        try:
            return name in self._entries
        except TypeError:  # an unhashable value (a list read from a .graph.json) is no name
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)


def check_options_model(kind: str, name: str, model: object) -> type[BaseModel]:
    """``model`` as the options model of ``kind`` ``name``: a pydantic model class that refuses
    unknown keys (a typo in a spec is an error, not an option silently ignored)."""
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise RegistryError(f"{kind} {name!r}: options must be a pydantic model class")
    if model.model_config.get("extra") != "forbid":
        raise RegistryError(f"{kind} {name!r}: its options model must set extra='forbid'")
    for field_name, info in model.model_fields.items():
        # options are keyword arguments of the generated source's constructors
        for key in {field_name, info.alias or field_name}:
            if not key.isidentifier() or keyword.iskeyword(key) or key.startswith("__"):
                raise RegistryError(
                    f"{kind} {name!r}: option {safe_repr(key)} is not a name generated code can "
                    "pass as a keyword argument (a Python keyword, or not an identifier)"
                )
    return model
