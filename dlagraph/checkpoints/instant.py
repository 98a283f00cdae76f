"""Building on the meta device without paying for torch's random init, for a model whose every
value a checkpoint will replace: torch's own layers skip their ``reset_parameters`` (and the
BatchNorms' ``reset_running_stats``) in this thread while the modules are built."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from torch import nn

__all__ = ["skipped_init"]


_SKIP_INIT = threading.local()
_SKIP_LOCK = threading.Lock()
_SKIP_USERS = 0  # builders inside _torch_init_skipped, in any thread
_INIT_METHODS = (
    (nn.modules.conv._ConvNd, "reset_parameters"),
    (nn.Linear, "reset_parameters"),
    (nn.modules.batchnorm._NormBase, "reset_parameters"),
    (nn.modules.batchnorm._NormBase, "reset_running_stats"),
)


def _skippable(method: Any) -> Any:
    def wrapper(self: nn.Module) -> Any:
        if getattr(_SKIP_INIT, "active", False):
            return None
        return method(self)

    wrapper.__wrapped__ = method  # type: ignore[attr-defined]
    return wrapper


@contextlib.contextmanager
def skipped_init() -> Iterator[None]:
    """torch's own layers skip their random init in this thread while modules are built on the
    meta device (the checkpoint replaces every value; the init ops alone were a sixth of a dla169
    build). Other threads are unaffected: the wrapped methods check a thread-local flag."""
    global _SKIP_USERS
    with _SKIP_LOCK:
        if _SKIP_USERS == 0:  # the first builder in: wrap (torch is left as it was afterwards)
            for cls, name in _INIT_METHODS:
                setattr(cls, name, _skippable(cls.__dict__[name]))
        _SKIP_USERS += 1
    _SKIP_INIT.active = True
    try:
        yield
    finally:
        _SKIP_INIT.active = False
        with _SKIP_LOCK:
            _SKIP_USERS -= 1
            if _SKIP_USERS == 0:
                for cls, name in _INIT_METHODS:
                    setattr(cls, name, cls.__dict__[name].__wrapped__)
