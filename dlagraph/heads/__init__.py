"""Heads: what a network computes after its backbone, one module per head type, registered in
:mod:`.registry` (``dlagraph.register_head`` adds a user's own). Nothing here imports torch or
the IR: a head adds its nodes through the builder it is handed."""

# isort: off
# the built-ins register themselves when imported, in the order messages and the schema list them
from . import classifier, features, segmentation, dla_up, centernet  # noqa: F401

# isort: on
from .centernet import CenterNetHead as CenterNetHead
from .classifier import ClassifierHead as ClassifierHead
from .dla_up import DlaUpHead as DlaUpHead
from .features import FeaturesHead as FeaturesHead
from .registry import HeadBuilder as HeadBuilder
from .registry import HeadOptions as HeadOptions
from .registry import HeadType as HeadType
from .registry import Problems as Problems
from .registry import Shapes as Shapes
from .registry import get_head_type as get_head_type
from .registry import register_head as register_head
from .registry import registered_heads as registered_heads
from .registry import unregister_head as unregister_head
from .segmentation import SegmentationHead as SegmentationHead

__all__ = [
    "CenterNetHead",
    "ClassifierHead",
    "DlaUpHead",
    "FeaturesHead",
    "HeadBuilder",
    "HeadOptions",
    "HeadType",
    "Problems",
    "SegmentationHead",
    "Shapes",
    "get_head_type",
    "register_head",
    "registered_heads",
    "unregister_head",
]
