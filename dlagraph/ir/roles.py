"""The roles a node plays in the paper's equations (its ``meta["role"]``), named once.

The compiler writes them (``role=AGGREGATION``; a head, below the IR, writes the string);
everything that reads them asks these predicates (re-exported by :mod:`dlagraph.ir.graph`), so
no other module compares role strings (``tests/test_architecture.py`` checks it):

* ``N``: an aggregation node (eq. 1-5); ``L1`` / ``L2``: a tree's two blocks or subtrees (eq. 2);
* ``S``: S(x), a level root's pooled input (eq. 5);
* ``P``: a projection to the aggregation width, ``U``: an upsampling (IDA, eq. 1);
* ``stem``: the first conv.

Each predicate takes a node's ``meta`` (``g.nodes[n]["meta"]``, or an op's ``v.meta``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "AGGREGATION",
    "L1",
    "L2",
    "SX",
    "PROJECTION",
    "UPSAMPLING",
    "STEM",
    "ROLES",
    "role",
    "is_aggregation",
    "is_block",
    "is_sx",
    "is_projection",
    "is_upsampling",
    "is_stem",
]

AGGREGATION, L1, L2, SX, PROJECTION, UPSAMPLING, STEM = "N", "L1", "L2", "S", "P", "U", "stem"
ROLES = frozenset({AGGREGATION, L1, L2, SX, PROJECTION, UPSAMPLING, STEM})


def role(meta: Mapping[str, Any]) -> str:
    """The node's role, ``""`` where it has none."""
    return str(meta.get("role", ""))


def is_aggregation(meta: Mapping[str, Any]) -> bool:
    """An aggregation node N (eq. 1-5)."""
    return meta.get("role") == AGGREGATION


def is_block(meta: Mapping[str, Any]) -> bool:
    """One of a tree's two blocks, L1 or L2 (eq. 2)."""
    return meta.get("role") in (L1, L2)


def is_sx(meta: Mapping[str, Any]) -> bool:
    """S(x), the pooled input a level root aggregates (eq. 5)."""
    return meta.get("role") == SX


def is_projection(meta: Mapping[str, Any]) -> bool:
    """P, a projection to the aggregation width (IDA, eq. 1)."""
    return meta.get("role") == PROJECTION


def is_upsampling(meta: Mapping[str, Any]) -> bool:
    """U, an upsampling (IDA, eq. 1)."""
    return meta.get("role") == UPSAMPLING


def is_stem(meta: Mapping[str, Any]) -> bool:
    """The stem, the network's first conv."""
    return meta.get("role") == STEM
