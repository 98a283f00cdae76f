"""The IR layer: ops (:mod:`.ops`), the graph and its lint (:mod:`.graph`), the builder, the
backbone (eq. 1, 2, 5), the heads, the compiler and the static analysis.

Style anchors: torch.fx's IR (a closed op vocabulary, ordered arguments, a lint, one definition of
each op's semantics that both its interpreter and its code generator read) and networkx's small,
documented graph algorithms. Nothing here imports torch.
"""

from .analysis import Summary as Summary
from .analysis import summarize as summarize
from .compile import compile_spec as compile_spec
from .memory import ActivationMemory as ActivationMemory
from .memory import activation_memory as activation_memory

__all__ = ["ActivationMemory", "Summary", "activation_memory", "compile_spec", "summarize"]
