"""The spec's JSON Schema, with the block and head fields expanded to every registered type."""

from __future__ import annotations

from typing import Any

from ..blocks import get_block_type, registered_blocks
from ..heads import get_head_type, registered_heads
from .schema import Spec

__all__ = ["json_schema"]


def json_schema() -> dict[str, Any]:
    """JSON Schema of a spec file (draft 2020-12), for editors and validators."""
    schema = Spec.model_json_schema(mode="validation")
    variants = []
    for name in registered_blocks():
        bt = get_block_type(name)
        opts = bt.options.model_json_schema()
        props = {
            "type": {"const": name, "description": bt.description},
            **opts.get("properties", {}),
        }
        variants.append(
            {
                "type": "object",
                "properties": props,
                "required": ["type"],
                "additionalProperties": False,
                "title": name,
            }
        )
    schema["properties"]["block"] = {
        "oneOf": variants,
        "description": "the block type (paper Fig. 3)",
    }
    schema.get("$defs", {}).pop("BlockSpec", None)
    heads = []
    for name in registered_heads():
        opts = get_head_type(name).options.model_json_schema()
        heads.append(opts)
        for key, value in opts.pop("$defs", {}).items():  # a head's nested models
            schema.setdefault("$defs", {})[key] = value
    schema["properties"]["head"] = {
        "oneOf": heads,
        "description": "what the network computes after the backbone (a registered head type)",
    }
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "dlagraph spec"
    return schema
