"""The spec layer: a DLA network as data (pydantic schema), read from YAML with line-accurate errors.

Style anchors: timm's ``byobnet`` configs (an architecture as data) and Equinox's error messages
(name the field, show the value, state the rule). Imports nothing of dlagraph but the block registry,
the error types and the reserved names; nothing here needs torch.
"""

from .jsonschema import json_schema as json_schema
from .load import load_spec as load_spec
from .load import presets as presets
from .load import resolve_spec_path as resolve_spec_path
from .load import spec_to_yaml as spec_to_yaml
from .schema import (
    Aggregation as Aggregation,
)
from .schema import (
    CenterNetHead as CenterNetHead,
)
from .schema import (
    ClassifierHead as ClassifierHead,
)
from .schema import (
    ConvLevel as ConvLevel,
)
from .schema import (
    DlaUpHead as DlaUpHead,
)
from .schema import (
    FeaturesHead as FeaturesHead,
)
from .schema import (
    SegmentationHead as SegmentationHead,
)
from .schema import (
    Spec as Spec,
)
from .schema import (
    TreeLevel as TreeLevel,
)

__all__ = [
    "Aggregation",
    "CenterNetHead",
    "ClassifierHead",
    "ConvLevel",
    "DlaUpHead",
    "FeaturesHead",
    "SegmentationHead",
    "Spec",
    "TreeLevel",
    "json_schema",
    "load_spec",
    "presets",
    "resolve_spec_path",
    "spec_to_yaml",
]
