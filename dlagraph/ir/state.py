"""The state_dict of a compiled network's torch module, names and shapes, without building it.

Each module-owning node's op lists its tensors (:meth:`~dlagraph.ir.ops.Op.tensors`, from its
``layers``: a conv's weight and bias, a BatchNorm's weight, bias and buffers); the node's module
path (``layout.module``, under the official DLASeg's ``base.`` prefix where it has one) prefixes
them. The order is torch's: ``state_dict`` walks the module tree depth first, a module's own
tensors before its children, children in registration order; the backend registers the nodes in
the graph's ``modules`` order and creates each container (``level3``, ``level3.tree1``) as its
first node needs it, so the tree rebuilt here from the same paths in the same order is the
module's. A registered block without ``layers`` is read from a meta-device instance (torch,
imported for that block only).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx

from .graph import op
from .ops import NodeView

__all__ = ["state_shapes"]

Shape = tuple[int, ...]


@dataclass
class _Module:
    """One module of the tree: its own tensors, then its children, each in insertion order."""

    tensors: dict[str, Shape] = field(default_factory=dict)
    children: dict[str, _Module] = field(default_factory=dict)

    def add(self, path: list[str], shape: Shape) -> None:
        m = self
        for part in path[:-1]:
            m = m.children.setdefault(part, _Module())
        m.tensors[path[-1]] = shape

    def items(self, prefix: str = "") -> list[tuple[str, Shape]]:
        out = [(prefix + k, s) for k, s in self.tensors.items()]
        for name, child in self.children.items():
            out += child.items(f"{prefix}{name}.")
        return out


def state_shapes(g: nx.DiGraph) -> dict[str, Shape]:
    """The state_dict names and shapes of ``g``'s module, in the state_dict's order: what
    ``build_module(g).state_dict()`` holds, unused (checkpoint-only) modules included.

    Example:
        >>> from dlagraph.ir.compile import compile_spec
        >>> shapes = state_shapes(compile_spec("dla36"))
        >>> list(shapes)[:2], shapes["fc.weight"]
        (['base_layer.0.weight', 'base_layer.1.weight'], (1000, 512, 1, 1))
    """
    root = _Module()
    for n in g.graph["modules"]:
        a = g.nodes[n]
        module = a["layout"]["module"]
        for name, shape in op(g, n).tensors(NodeView(n, a["rec"])):
            root.add(f"{module}.{name}".split("."), shape)
    return dict(root.items())
