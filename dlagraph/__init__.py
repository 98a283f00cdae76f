"""dlagraph: a declarative graph compiler for Deep Layer Aggregation networks.

Paper: `Deep Layer Aggregation` (Yu, Wang, Darrell), https://arxiv.org/abs/1707.06484

Pipeline: YAML spec (:func:`load_spec`) -> networkx DAG (:func:`compile_spec`) -> a torch module
(:func:`build_module`) or standalone PyTorch source (:func:`generate_source`), plus static analysis
(:func:`summarize`) and diagrams (:func:`draw`). Only the torch backends import torch.
"""

from __future__ import annotations

from typing import Any

from ._version import __version__ as __version__
from .base.errors import CodegenError as CodegenError
from .base.errors import DeployError as DeployError
from .base.errors import DlagraphError as DlagraphError
from .base.errors import DlagraphWarning as DlagraphWarning
from .base.errors import GraphError as GraphError
from .base.errors import InputSizeError as InputSizeError
from .base.errors import RegistryError as RegistryError
from .base.errors import SpecError as SpecError
from .base.errors import WeightsError as WeightsError
from .base.system import native_bf16 as native_bf16
from .blocks import Layer as Layer
from .blocks import register_block as register_block
from .blocks import registered_blocks as registered_blocks
from .blocks import unregister_block as unregister_block
from .deploy.registry import Format as Format
from .deploy.registry import Runtime as Runtime
from .deploy.registry import register_format as register_format
from .deploy.registry import register_runtime as register_runtime
from .deploy.registry import registered_formats as registered_formats
from .deploy.registry import registered_runtimes as registered_runtimes
from .deploy.registry import unregister_format as unregister_format
from .deploy.registry import unregister_runtime as unregister_runtime
from .heads import HeadOptions as HeadOptions
from .heads import register_head as register_head
from .heads import registered_heads as registered_heads
from .heads import unregister_head as unregister_head
from .ir import ActivationMemory as ActivationMemory
from .ir import Summary as Summary
from .ir import activation_memory as activation_memory
from .ir import compile_spec as compile_spec
from .ir import summarize as summarize
from .spec import Spec as Spec
from .spec import load_spec as load_spec
from .spec import spec_to_yaml as spec_to_yaml

_LAZY = {
    "build_module": ("dlagraph.backends.torch.interpret", "build_module"),
    "fold_bn": ("dlagraph.backends.torch.interpret", "fold_bn"),
    "load_weights": ("dlagraph.checkpoints.load", "load_weights"),
    "generate_source": ("dlagraph.backends.codegen", "generate_source"),
    "draw": ("dlagraph.views.diagram", "draw"),
    "html_view": ("dlagraph.views.html", "html_view"),
    "centernet_decode": ("dlagraph.deploy.decode", "centernet_decode"),
    "register_timm_models": ("dlagraph.backends.torch.dla", "register_timm_models"),
    "infer_spec": ("dlagraph.inspect.infer", "infer_spec"),
    "infer_checkpoint": ("dlagraph.inspect.infer", "infer_checkpoint"),
    "optimize": ("dlagraph.deploy.optimize", "optimize"),
    "export": ("dlagraph.deploy.export", "export"),
}

__all__ = [
    "CodegenError",
    "DeployError",
    "DlagraphError",
    "DlagraphWarning",
    "GraphError",
    "HeadOptions",
    "InputSizeError",
    "ActivationMemory",
    "activation_memory",
    "Layer",
    "RegistryError",
    "Spec",
    "SpecError",
    "Summary",
    "WeightsError",
    "build_module",
    "centernet_decode",
    "compile_spec",
    "draw",
    "fold_bn",
    "generate_source",
    "html_view",
    "infer_checkpoint",
    "infer_spec",
    "load_spec",
    "load_weights",
    "native_bf16",
    "optimize",
    "export",
    "Format",
    "Runtime",
    "register_format",
    "register_runtime",
    "registered_formats",
    "registered_runtimes",
    "unregister_format",
    "unregister_runtime",
    "register_block",
    "register_head",
    "register_timm_models",
    "registered_blocks",
    "registered_heads",
    "spec_to_yaml",
    "summarize",
    "unregister_block",
    "unregister_head",
]


def __dir__() -> list[str]:
    # `help(dlagraph)` and tab completion list the lazy entry points too
    return sorted(set(globals()) | set(__all__))


def __getattr__(name: str) -> Any:
    # torch-backed entry points load on first use, so `import dlagraph` stays torch-free.
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(mod), attr)
    raise AttributeError(f"module 'dlagraph' has no attribute {name!r}")
