"""Progress of long calls (``export``, ``optimize(backend="auto")``, ``bench``): one stderr line
per step, shown on a terminal and quiet when piped or captured."""

from __future__ import annotations

import sys

__all__ = ["Steps", "steps_on_a_terminal"]


class Steps:
    """Progress of a long command, one stderr line per step: its name when it starts, its time
    when it ends."""

    def __call__(self, step: str, seconds: float | None) -> None:
        if seconds is None:
            print(f"  {step} ...", end="", file=sys.stderr, flush=True)
        elif seconds != seconds:  # NaN: the step failed
            print(" failed", file=sys.stderr, flush=True)
        else:
            print(f" {seconds:.1f} s", file=sys.stderr, flush=True)


def steps_on_a_terminal() -> Steps | None:
    """:class:`Steps` when stderr is a terminal; quiet when piped or captured."""
    return Steps() if sys.stderr.isatty() else None
