"""Shared test helpers: a tiny spec, and loading Python files (examples, generated code)."""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

TINY: dict[str, Any] = {
    "name": "tiny",
    "block": {"type": "basic"},
    "levels": [
        {"channels": 8},
        {"channels": 16},
        {"channels": 32, "depth": 1},
        {"channels": 64, "depth": 2},
    ],
}


TINY_YAML = """\
name: tiny
block: {type: basic}
levels: [{channels: 8}, {channels: 16}, {channels: 32, depth: 1}]
"""


def bf16_warning() -> contextlib.AbstractContextManager:
    """What ``optimize(..., "bf16")`` says here: a DlagraphWarning where the CPU emulates bf16."""
    import pytest

    from dlagraph import DlagraphWarning, native_bf16

    if native_bf16():
        return contextlib.nullcontext()
    return pytest.warns(DlagraphWarning, match="without native bf16")


def import_file(path: Path, name: str) -> ModuleType:
    """Import a ``.py`` file as module ``name`` (registered, so dataclasses and pickling work)."""
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def exec_generated(src: str) -> type:
    """The model class of generated source, executed in a fresh namespace."""
    ns: dict[str, Any] = {}
    exec(compile(src, "<generated>", "exec"), ns)  # noqa: S102 - dlagraph's own output
    return ns[ns["__all__"][0]]


def trained_bn(model: Any, seed: int = 0) -> Any:
    """``model`` in eval mode with trained-looking BatchNorm statistics and affine parameters, so
    that a rewrite or a fold that mishandled them (or a padded channel that leaked) would show."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.rand(c, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.rand(c, generator=g) - 0.5)
    return model.eval()


def on_a_terminal(args: list[str], timeout: float = 300) -> tuple[int, str, bytes]:
    """Run a command with stderr a terminal (a pseudo-terminal, as in an interactive shell):
    its exit status, its stdout, and all it wrote to the terminal."""
    import os
    import pty
    import subprocess

    leader, follower = pty.openpty()
    with subprocess.Popen(args, stderr=follower, stdout=subprocess.PIPE, text=True) as proc:
        os.close(follower)
        seen = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal closed: the command ended
                break
            if not chunk:
                break
            seen += chunk
        os.close(leader)
        out = proc.stdout.read() if proc.stdout else ""
        rc = proc.wait(timeout)
    return rc, out, seen
