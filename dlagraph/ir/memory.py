"""Static activation memory: the peak bytes of live activations in inference and the bytes saved
for backward in training, from the DAG and the ops' :meth:`~dlagraph.ir.ops.Op.memory`, without
torch.

Inference follows the order the built modules run in (and the generated forward): the backbone
step by step (the stem, each conv level, each tree level as one call, whose input its caller holds
until it returns), each step's nodes in topological order, every tensor freed after its last
reader; the caller holds the input image throughout. The steps and the head's nodes run in the
order :func:`run_order` chooses to keep the fewest activations alive. Counted are tensor storages, as a
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

__all__ = ["ActivationMemory", "activation_memory", "DTYPE_BYTES", "format_bytes", "run_order"]

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
    mem, size, stats = _node_memory(g, s)
    peak = _inference_peak(g, _top(g, mem, size), mem, size)
    saved, index = _training_saved(g, mem, size)
    unit = DTYPE_BYTES[dtype]
    return ActivationMemory(
        batch,
        s.input_size,
        dtype,
        batch * peak * unit,
        batch * (saved * unit + index * 8) + stats * 4,
    )


def run_order(g: nx.DiGraph, summary: Summary | None = None) -> list[str]:
    """The order a built network runs its top-level steps in: each backbone step (named by its
    output node, as :func:`~dlagraph.ir.graph.stages` gives them) and each head node, the graph's
    output last.

    Of all topological orders it is one with the lowest inference peak (computed at the spec's
    input size, or ``summary``'s), and among those the one closest to creation order. The
    official segmentation heads project and upsample every level before the first aggregation
    node; interleaving them (``node_i`` right after ``up_i``) keeps 12-27% fewer bytes alive at
    the peak in the segmentation presets. Classifiers and CenterNet keep creation order (their
    peak is in the stem, where no order helps).
    """
    s = summary or summarize(g)
    mem, size, _ = _node_memory(g, s)
    return [name for name, _ in _top(g, mem, size)]


def _node_memory(g: nx.DiGraph, s: Summary) -> tuple[dict[str, Mem], dict[str, int], int]:
    """Per node: its op's memory and its output's elements (0 for a view); and the BN statistics
    training saves."""
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
    return mem, size, stats


def _hw(shape: tuple[int, ...]) -> tuple[int, int]:
    return (shape[1], shape[2]) if len(shape) == 3 else (1, 1)


Step = tuple[str, list[str]]  # a top-level step: its output node, its nodes in order

# the most downsets the order search visits before it keeps creation order (a head far wider
# than any DLA's; the segmentation presets visit a few hundred)
MAX_ORDER_STATES = 200_000


def _top(g: nx.DiGraph, mem: dict[str, Mem], size: dict[str, int]) -> list[Step]:
    """The top-level steps (the backbone's, then the head's nodes) in :func:`run_order`."""
    src, out = g.graph["input"], g.graph["output"]
    steps = stages(g)
    inside = {n for st in steps for n in st["nodes"]}
    top: list[Step] = [(st["output"], [n for n in st["nodes"] if n in mem]) for st in steps]
    top += [(n, [n]) for n in topo_order(g) if n not in inside and n not in (src, out) and n in mem]
    peaks = [_step_peak(g, nodes, mem, size) for _, nodes in top]
    order = _min_peak_order(g, top, peaks, size)
    return [top[i] for i in order] + [(out, [out])]


def _min_peak_order(
    g: nx.DiGraph, top: list[Step], peaks: list[int], size: dict[str, int]
) -> list[int]:
    """Indices of ``top`` in a topological order of least peak, the earliest-created step first
    wherever that keeps the least peak.

    Exact: a search over the downsets of the step graph (the steps done so far), whose live
    bytes are the outputs some later step (or the output node) still reads. networkx has
    topological orders but no min-peak one, and torch's schedulers (inductor's
    ``reorder_for_peak_memory``) work on compiled kernels, not on the modules we build."""
    index = {name: i for i, (name, _) in enumerate(top)}
    reads = [{index[u] for u in _step_reads(g, nodes) if u in index} for _, nodes in top]
    need = [sum(1 << j for j in r) for r in reads]
    out = g.graph["output"]
    # a step is live until every step reading it is done; what the output reads, to the end
    readers = [0] * len(top)
    for i, r in enumerate(reads):
        for j in r:
            readers[j] |= 1 << i
    read_by_output = set(inputs(g, out))
    final = [name in read_by_output for name, _ in top]
    full = (1 << len(top)) - 1
    memo: dict[int, int] = {}

    def live(done: int) -> int:
        return sum(
            size[top[i][0]]
            for i in range(len(top))
            if done >> i & 1 and (final[i] or readers[i] & ~done)
        )

    def ready(done: int) -> list[int]:
        return [i for i in range(len(top)) if not done >> i & 1 and need[i] & done == need[i]]

    def rest(done: int) -> int:
        """The least peak (beyond the image) of finishing from ``done``."""
        if done == full:
            return 0
        if done not in memo:
            if len(memo) >= MAX_ORDER_STATES:
                raise OverflowError
            held = live(done)
            memo[done] = min(max(held + peaks[i], rest(done | 1 << i)) for i in ready(done))
        return memo[done]

    try:
        best = rest(0)
    except (OverflowError, RecursionError):
        return list(range(len(top)))
    order: list[int] = []
    done = 0
    while done != full:
        held = live(done)
        i = next(i for i in ready(done) if max(held + peaks[i], rest(done | 1 << i)) <= best)
        order.append(i)
        done |= 1 << i
    return order


def _inference_peak(
    g: nx.DiGraph, top: list[Step], mem: dict[str, Mem], size: dict[str, int]
) -> int:
    src = g.graph["input"]
    reads = {name: _step_reads(g, nodes) for name, nodes in top}
    last = {}
    for i, (name, _) in enumerate(top):
        for u in reads[name]:
            last[u] = i
    live = {src: size[src]}  # the caller holds the image throughout
    peak = size[src]
    for i, (name, nodes) in enumerate(top):
        held = sum(live.values())
        peak = max(peak, held + _step_peak(g, nodes, mem, size))
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


def check_fits(
    g: nx.DiGraph,
    summary: Summary,
    batch: int,
    *,
    models: int = 1,
    images: int = 0,
    hint: str = "use a smaller --batch or --size",
) -> None:
    """Refuse, before torch allocates anything, a run this machine cannot hold: ``models``
    float32 copies of the weights, ``images`` input images, and a batch's node outputs alive at
    once (:func:`~dlagraph.ir.analysis.live_peak`) times four for what lives inside the nodes and
    the compiled graphs' or runtimes' buffers (an estimate, the one ``bench``, ``export`` and
    ``fit --measure`` make).

    Raises:
        DlagraphError: one line with the estimate, what is available, and ``hint``.
    """
    from ..base.errors import DlagraphError
    from ..base.system import available_memory
    from .analysis import live_peak

    h, w = summary.input_size
    need = 4 * (models * summary.params + 4 * batch * live_peak(g, summary))
    need += 4 * images * g.graph["in_channels"] * h * w
    free = available_memory()
    if free is not None and need > free:
        raise DlagraphError(
            f"batch {batch} at {h}x{w} needs about {need / 2**30:,.1f} GiB (weights of {models} "
            f"models{', images' if images else ''} and activations), but "
            f"{free / 2**30:,.1f} GiB is available; {hint}"
        )
