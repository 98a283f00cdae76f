"""Spec -> DAG: the backbone (eq. 1, 2, 5), then the head, then the facts every backend reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import networkx as nx

from ..base.errors import DlagraphError, SpecError, clip
from ..heads import get_head_type
from ..spec import Spec, TreeLevel, load_spec
from .backbone import conv_levels, ida
from .builder import Builder
from .graph import IR_VERSION, check, reduction

__all__ = ["compile_spec"]


def compile_spec(spec: Spec | dict[str, Any] | str | Path, lint: bool = True) -> nx.DiGraph:
    """Compile a spec into the DAG IR and lint it (``lint=False``: trust the compiler, a third of
    the time of a small network's compile; ``dlagraph fit`` lints the designs it writes).

    Returns a ``networkx.DiGraph``. Its graph attributes are the facts every backend reads, computed
    once here: ``name``, ``paper_name``, ``reference``, ``layout``, ``in_channels``,
    ``num_classes`` (None for features and CenterNet heads), ``init`` (``dla``: the official
    normal init; ``pytorch``: PyTorch's defaults, as CenterNet's code), ``total_stride`` (the input side divisor),
    ``levels`` (one entry per level still built: index, kind, channels, depth, dilation, module,
    output node), ``modules`` (registration order), ``unused`` (checkpoint-only nodes),
    ``official_only`` (projections official checkpoints hold and never use), ``input``/``output``
    and ``spec`` (the spec as data). Deterministic: compiling twice gives identical graphs.

    Raises:
        SpecError: if the spec is invalid.
        GraphError: if the compiled graph breaks an IR invariant (a dlagraph bug, or a registered
            block type whose contract is inconsistent).

    Example:
        >>> g = compile_spec({"name": "tiny", "block": {"type": "basic"},
        ...                   "levels": [{"channels": 8}, {"channels": 16},
        ...                              {"channels": 32, "depth": 1}, {"channels": 64, "depth": 1}]})
        >>> from dlagraph.ir.graph import inputs
        >>> inputs(g, "level3.root")
        ['level3.tree2', 'level3.tree1', 'level3.downsample']
    """
    spec = load_spec(spec)
    head = get_head_type(spec.head.type)
    dilations = _call(head, "dilations", head.dilations, spec.head, len(spec.levels))
    b = Builder(spec, dilations=dilations)
    x = b.add("input", "input", [], {"channels": spec.in_channels}, spec_path="in_channels")
    b.prefix = head.backbone_prefix  # the official DLASegs hold the classifier network as `base`
    x = conv_levels(b, x)
    x = ida(b, x)
    # the backbone's modules: a head adds none inside them (the official layout's `base` itself
    # holds the classifier the official code keeps there: `base.fc`)
    b.sealed = frozenset(b.containers) - {b.prefix.rstrip(".")}
    b.prefix = ""
    _call(head, "build", head.build, b, x, spec.head)
    g = b.g
    g.graph.setdefault("classifier", False)  # a classifier head: timm's model API applies
    g.graph.update(
        ir_version=IR_VERSION,
        name=spec.name,
        paper_name=spec.paper_name,
        reference=spec.reference,
        layout=spec.layout,
        in_channels=spec.in_channels,
        num_classes=_call(head, "num_classes", head.num_classes, spec.head),
        init=head.init,
        levels=[
            {
                "index": i,
                "kind": "tree" if isinstance(lv, TreeLevel) else "conv",
                "channels": lv.channels,
                "depth": lv.depth if isinstance(lv, TreeLevel) else None,
                "dilation": dilations.get(i, 1),
                "module": f"level{i}",
                "output": out,
            }
            for i, lv in enumerate(spec.levels)
            if (out := b.level_outputs.get(i)) is not None
        ],
        official_only=b.official_only,
        input="input",
        output="output",
        modules=b.modules,
        spec=spec.to_dict(),
    )
    g.graph["unused"] = (
        check(g) if lint else [n for n, a in g.nodes(data=True) if a["layout"].get("unused")]
    )
    stride = max(reduction(g, n) for n in g.nodes if n not in g.graph["unused"])
    g.graph["total_stride"] = stride
    g.graph["input_size"] = tuple(spec.input_size) if spec.input_size else None
    if spec.input_size and any(side % stride for side in spec.input_size):
        h, w = spec.input_size
        raise SpecError(
            f"input_size: {h}x{w}: both sides must be multiples of the network's total stride "
            f"{stride}"
        )
    return g


def _call(head: Any, what: str, fn: Any, *args: Any) -> Any:
    """A head type's function; a user's that fails is one line naming it (a built-in's errors
    are dlagraph's own and pass as they are)."""
    try:
        return fn(*args)
    except DlagraphError:
        raise
    except Exception as e:
        if head.builtin:
            raise
        raise SpecError(
            f"head: head type {head.name!r}: its {what} raised {type(e).__name__}: "
            f"{clip(str(e), 120)}"
        ) from None
