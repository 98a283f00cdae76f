"""The exceptions dlagraph raises. Every user-facing problem is a ``DlagraphError``."""

from __future__ import annotations

__all__ = ["DlagraphError", "SpecError", "GraphError", "CodegenError", "WeightsError"]


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


class GraphError(DlagraphError):
    """The DAG broke an invariant; the message names the node and the spec path that produced it."""


class CodegenError(DlagraphError):
    """Source generation or writing generated files failed."""


class WeightsError(DlagraphError):
    """A checkpoint does not fit a model (missing, unexpected or mis-shaped keys, or unsafe content)."""
