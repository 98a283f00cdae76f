"""timm's model API on the interpreter's modules: the attributes, and the hooks of
:class:`~dlagraph.nn.modules.TimmModelAPI` (the same class generated files copy).

The backbone runs as a chain of steps (the stem, the conv levels, one GraphModule per tree level:
:func:`dlagraph.ir.graph.stages`). timm itself is not imported.
"""

from __future__ import annotations

from typing import Any

import networkx as nx
from torch import nn

from ..ir.analysis import default_cfg
from ..ir.graph import feature_info, inputs, stages
from .modules import TimmModelAPI

__all__ = ["InterpreterTimmAPI", "timm_attributes"]


def timm_attributes(g: nx.DiGraph) -> dict[str, Any]:
    """The attributes timm's API reads, from the graph's facts."""
    levels = feature_info(g)
    by_node = {f["node"]: f for f in levels}
    taps = [by_node[t] for t in inputs(g, g.graph["output"]) if t in by_node]
    classifier = g.graph["classifier"]
    cfg = default_cfg(g)
    return {
        "feature_info": levels if classifier or not taps else taps,
        "num_classes": (g.graph["num_classes"] or 0) if classifier else 0,
        "num_features": levels[-1]["num_chs"],
        "head_hidden_size": levels[-1]["num_chs"],
        "in_chans": g.graph["in_channels"],
        "pretrained_cfg": cfg,
        "default_cfg": cfg,
        "grad_checkpointing": False,
    }


class InterpreterTimmAPI(TimmModelAPI):
    """The hooks, for a module built from its DAG (``self.dag``)."""

    def _steps(self) -> list:
        return [(st["index"], self.get_submodule(st["module"])) for st in stages(self.dag)]  # type: ignore[attr-defined]

    def _prune_after(self, last: int) -> None:
        for st in stages(self.dag):  # type: ignore[attr-defined]
            if st["index"] > last:
                parent, _, leaf = st["module"].rpartition(".")
                owner = self.get_submodule(parent) if parent else self  # type: ignore[attr-defined]
                setattr(owner, leaf, nn.Identity())
