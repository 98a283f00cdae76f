"""The bounds a spec is held to, so that a typo cannot ask for a network no machine can build."""

from __future__ import annotations

__all__ = ["MAX_BLOCKS", "MAX_TREE_LEVELS", "MAX_CHANNELS", "MAX_INPUT_SIDE", "IDENT"]

MAX_BLOCKS = 4096  # total blocks in a network: dla169 has 40, depth 10 in one level gives 1024
MAX_TREE_LEVELS = 16
MAX_CHANNELS = 65536
MAX_INPUT_SIDE = 65536  # pixels per side of a spec's input_size: larger is a typo, not an image
IDENT = r"^[a-z_][a-z0-9_]*$"  # names that become Python identifiers and module paths
