"""Static activation memory: the peak bytes of live activations in inference and the bytes saved
for backward in training, from the DAG and the ops' :meth:`~dlagraph.ir.ops.Op.memory`, without
torch.

Inference follows the order the built modules run in (and the generated forward): the backbone
step by step (the stem, each conv level, each tree level as one call, whose input its caller holds
until it returns), each step's nodes in topological order, every tensor freed after its last
reader; the caller holds the input image throughout. Counted are tensor storages, as a
``TorchDispatchMode`` sees them (the kernels' own scratch space is not). Training counts each
storage autograd saves once: the ops' intermediate tensors, and a node's output when the node
saves it (a ReLU) or any reader does (a conv).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import networkx as nx

from ..spec import Spec
from .analysis import Summary, summarize
from .compile import compile_spec
from .graph import inputs, op, stages, topo_order, view
from .ops import Mem

__all__ = ["ActivationMemory", "activation_memory", "DTYPE_BYTES", "format_bytes"]

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
Dtype = Literal["float32", "bfloat16", "float16"]


@dataclass(frozen=True)
class ActivationMemory:
    """Bytes of activations for ``batch`` images of ``input_size`` in ``dtype``."""

    batch: int
    input_size: tuple[int, int]
    dtype: str
    inference_peak: int  # the most bytes of live activations at once, input included
    training_saved: int  # the bytes autograd saves for backward (parameters not included)

    def describe(self) -> str:
        h, w = self.input_size
        return (
            f"activation memory at batch {self.batch}, {h}x{w}, {self.dtype}: inference peak "
            f"{format_bytes(self.inference_peak)}, saved for backward in training {format_bytes(self.training_saved)}"
        )


def format_bytes(n: int) -> str:
    """``9.8 MiB``, ``1.2 GiB``: bytes in the largest binary unit from MiB."""
    for unit, shift in (("PiB", 50), ("TiB", 40), ("GiB", 30)):
        if n >= 2**shift:
            return f"{n / 2**shift:,.1f} {unit}"
    return f"{n / 2**20:,.1f} MiB"


def activation_memory(
    spec: Spec | str | Path | dict[str, Any] | nx.DiGraph,
    batch: int = 1,
    input_size: tuple[int, int] | None = None,
    dtype: Dtype = "float32",
    summary: Summary | None = None,
) -> ActivationMemory:
    """The static activation memory of a network (see the module docstring): a spec, a preset
    name, a spec file or mapping, or a compiled graph; ``input_size`` as for :func:`summarize`.

    Raises:
        SpecError: for an invalid spec.
        InputSizeError: for an ``input_size`` the network cannot take.
        ValueError: for a batch below 1 or an unknown dtype.
    """
    if batch < 1:
        raise ValueError(f"batch must be at least 1 (got {batch})")
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPE_BYTES)} (got {dtype!r})")
    g = spec if isinstance(spec, nx.DiGraph) else compile_spec(spec)
    s = summary or summarize(g, input_size)
    info = {ni.name: ni for ni in s.nodes}
    skip = set(g.graph["unused"])
    mem: dict[str, Mem] = {}
    size: dict[str, int] = {}
    stats = 0  # each training BN saves its batch mean and inverse std: 2 x C, whatever the batch
    for n in topo_order(g):
        if n in skip:
            continue
        out = math.prod(info[n].shape) if n != g.graph["output"] else 0
        hws = [_hw(info[u].shape) for u in inputs(g, n)] or [s.input_size]
        v = view(g, n, hws)
        mem[n] = op(g, n).memory(v, out)
        stats += sum(2 * x.out_channels for x in op(g, n).layers(v) if x.kind == "bn")
        size[n] = 0 if mem[n].alias else out
    peak = _inference_peak(g, mem, size, skip)
    saved, index = _training_saved(g, mem, size)
    unit = DTYPE_BYTES[dtype]
    return ActivationMemory(
        batch,
        s.input_size,
        dtype,
        batch * peak * unit,
        batch * (saved * unit + index * 8) + stats * 4,
    )


def _hw(shape: tuple[int, ...]) -> tuple[int, int]:
    return (shape[1], shape[2]) if len(shape) == 3 else (1, 1)


def _inference_peak(g: nx.DiGraph, mem: dict[str, Mem], size: dict[str, int], skip: set) -> int:
    src = g.graph["input"]
    steps = stages(g)
    inside = {n for st in steps for n in st["nodes"]}
    # the top level: the backbone steps, then the head's nodes, in the order the modules run them
    top: list[tuple[str, list[str]]] = [(st["output"], st["nodes"]) for st in steps]
    top += [(n, [n]) for n in topo_order(g) if n not in inside and n != src and n not in skip]
    reads = {name: _step_reads(g, nodes) for name, nodes in top}
    last = {}
    for i, (name, _) in enumerate(top):
        for u in reads[name]:
            last[u] = i
    live = {src: size[src]}  # the caller holds the image throughout
    peak = size[src]
    for i, (name, nodes) in enumerate(top):
        held = sum(live.values())
        peak = max(peak, held + _step_peak(g, [n for n in nodes if n not in skip], mem, size))
        live[name] = size[name]
        for u in reads[name]:
            if last[u] == i and u != src:
                live.pop(u, None)
    return peak


def _step_reads(g: nx.DiGraph, nodes: list[str]) -> set[str]:
    inner = set(nodes)
    return {u for n in nodes for u in inputs(g, n) if u not in inner}


def _step_peak(g: nx.DiGraph, nodes: list[str], mem: dict[str, Mem], size: dict[str, int]) -> int:
    """The peak of one step beyond what its caller holds: its nodes in order, each output freed
    after its last reader inside the step (the step's output is handed back)."""
    inner = set(nodes)
    last = {}
    for i, n in enumerate(nodes):
        for u in inputs(g, n):
            if u in inner:
                last[u] = i
    live = peak = 0
    for i, n in enumerate(nodes):
        peak = max(peak, live + mem[n].peak)
        live += size[n]
        live -= sum(size[u] for u in set(inputs(g, n)) if u in inner and last.get(u) == i)
    return peak


def _training_saved(g: nx.DiGraph, mem: dict[str, Mem], size: dict[str, int]) -> tuple[int, int]:
    saved = index = 0
    for n, m in mem.items():
        saved += m.saved
        index += m.index
        # a reader saves what reaches its first port (a block's shortcut, at port 1, is added)
        firsts = [v for v in g.successors(n) if v in mem and g.edges[n, v]["port"] == 0]
        if m.saves_output or any(mem[v].saves_input for v in firsts):
            saved += size[n]
    return saved, index
