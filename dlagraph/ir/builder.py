"""Building the DAG: the one way nodes enter it, shared by the backbone and the heads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from ..base.errors import SpecError
from ..base.names import attribute_clash, var_name
from ..spec import Spec
from .graph import channels, inputs, reduction
from .ops import NodeView, op_of

__all__ = ["Builder"]


@dataclass
class Builder:
    """A DAG under construction, with what the compiler tracks besides the nodes.

    ``modules`` is the layout's registration order (the state_dict order), ``prefix`` the module
    path prefix of backbone nodes (the official DLASeg nests them under ``base.``),
    ``level_outputs`` maps ``levels[i]`` to the node producing its output, and ``official_only``
    lists the module paths of projections the official layout holds but never runs.
    """

    spec: Spec
    g: nx.DiGraph = field(default_factory=nx.DiGraph)
    modules: list[str] = field(default_factory=list)
    prefix: str = ""
    level_outputs: dict[int, str] = field(default_factory=dict)
    official_only: list[str] = field(default_factory=list)
    dilations: dict[int, int] = field(default_factory=dict)  # levels[i] run dilated (the head's)
    variables: dict[str, str] = field(default_factory=dict)  # forward's local name -> node
    owned: set[str] = field(default_factory=set)  # module paths of the nodes' own modules
    containers: dict[str, str] = field(default_factory=dict)  # a path holding modules -> one
    sealed: frozenset[str] = frozenset()  # the backbone's containers, closed to the head

    def add(
        self,
        node: str,
        op: str,
        ins: list[str],
        rec: dict[str, Any],
        *,
        register: bool = True,
        unused: bool = False,
        symbols: dict[str, str] | None = None,
        **meta: Any,
    ) -> str:
        """Add node ``node`` computing ``op`` over ``ins`` (in port order) and return its id.

        ``meta`` holds provenance (``spec_path``, ``level``, ``role``, ``eq``…); the node's
        ``reduction`` is derived from its inputs by the op.
        """
        self._check_name(node, meta.get("spec_path", "<spec>"))
        definition = op_of(op)
        meta["reduction"] = definition.reduction(
            NodeView(node, rec, reds=tuple(self.reduction(u) for u in ins))
        )
        layout: dict[str, Any] = {}
        if definition.owns_module:
            layout["module"] = path = self.prefix + node
            self.owned.add(path)
            parts = path.split(".")
            for i in range(1, len(parts)):
                self.containers.setdefault(".".join(parts[:i]), path)
            if register:
                self.modules.append(node)
        if unused:
            layout["unused"] = True
        if symbols:
            layout["symbols"] = symbols
        index = self.g.number_of_nodes()
        self.g.add_node(node, op=op, index=index, rec=rec, meta=meta, layout=layout)
        for port, u in enumerate(ins):
            self.g.add_edge(u, node, port=port)
        return node

    def _check_name(self, node: str, where: str) -> None:
        """A node's id is a module path and a local variable of the generated forward: it must be
        new, its variable too (``x`` and ``x_``, ``ida_up.node_1`` and ``ida_up_node_1`` would
        share one), and a top-level module must not take the name of a module attribute."""
        if node in self.g:
            raise SpecError(f"{where}: {node!r} is the name of another node of the network")
        var = var_name(node)
        if var in self.variables:
            raise SpecError(
                f"{where}: {node!r} and {self.variables[var]!r} would share the variable {var!r} "
                "of the generated forward; rename one"
            )
        path = self.prefix + node
        top = path.split(".")[0]
        if (why := attribute_clash(top)) is not None:
            raise SpecError(f"{where}: {why}")
        # a module path of the layout is one thing: a node's module, or a container of others
        # (``level3`` holds the backbone's level; a head module there would replace it)
        if path in self.owned or path in self.containers:
            holds = self.containers.get(path, path)
            raise SpecError(
                f"{where}: {node!r} is the name of a module the network already has (it holds "
                f"{holds!r}); rename it"
            )
        parts = path.split(".")
        for i in range(1, len(parts)):
            if (outer := ".".join(parts[:i])) in self.owned:
                raise SpecError(
                    f"{where}: {node!r} would sit inside the module of node {outer!r}; rename it"
                )
            if outer in self.sealed:
                raise SpecError(
                    f"{where}: {node!r} would sit inside the backbone's module {outer!r}; rename it"
                )
        self.variables[var] = node

    def channels(self, n: str) -> int:
        return channels(self.g, n)

    def reduction(self, n: str) -> int:
        return reduction(self.g, n)

    def mark_unused(self, n: str) -> None:
        self.g.nodes[n]["layout"]["unused"] = True

    def paper_order(self, n: str, ports: list[int]) -> None:
        """The paper's argument position of each input of aggregation node ``n`` (eq. 1, 2, 5),
        kept on the edges beside the call's own ``port``."""
        for u, port in zip(inputs(self.g, n), ports, strict=True):
            self.g.edges[u, n]["paper_port"] = port

    def keep_levels_until(self, index: int) -> None:
        """Drop every node of the levels after ``levels[index]`` (timm's
        ``prune_intermediate_layers``: a head that reads no deeper level does not build them)."""
        drop = {n for n, m in self.g.nodes(data="meta") if m.get("level", 0) > index + 1}
        self.g.remove_nodes_from(drop)
        self.modules[:] = [m for m in self.modules if m not in drop]
        self.level_outputs = {i: n for i, n in self.level_outputs.items() if n not in drop}

    def mark_classifier(self) -> None:
        self.g.graph["classifier"] = True
