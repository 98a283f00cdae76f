"""dlagraph's presets as timm models: ``timm.create_model("dlagraph_dla104_s")``.

The counterpart of timm's own ``timm/models/dla.py``: :func:`register_timm_models` registers every
packaged classifier preset with timm's registry, with timm's dla configs (input 3x224x224, ImageNet
mean and std, crop 0.875, bilinear). Models are built by :func:`~dlagraph.build_module` through
``timm.models.build_model_with_cfg``, so timm's options work: ``num_classes``, ``in_chans``,
``drop_rate``, ``global_pool``, ``features_only`` / ``out_indices`` (timm's feature getter over
``forward_intermediates``), ``device`` and ``dtype``. Importing dlagraph does not import timm; this
module does, when called.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn

from ...heads import get_head_type
from ...ir.analysis import default_cfg
from ...ir.compile import compile_spec
from ...spec import load_spec, presets
from .interpret import build_module

__all__ = ["register_timm_models", "create_dla"]

default_cfgs: dict[str, Any] = {}  # timm's registry reads the configs of a module from here
_REGISTERED: list[str] = []


def create_dla(
    preset: str,
    *,
    num_classes: int | None = None,
    in_chans: int | None = None,
    drop_rate: float | None = None,
    global_pool: str | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """A preset with timm's model options applied. Unknown options are a TypeError, as timm's own
    constructors make them."""
    data = load_spec(preset).to_dict()
    if num_classes is not None:
        data["head"]["num_classes"] = max(num_classes, 1)  # 0: built, then reset below
    if in_chans is not None:
        data["in_channels"] = in_chans
    if drop_rate is not None:
        data["head"]["dropout"] = drop_rate
    with torch.device(device) if device is not None else _nothing():
        model = build_module(data)
    if num_classes == 0 or global_pool is not None:
        model.reset_classifier(
            num_classes if num_classes is not None else model.num_classes, global_pool
        )
    return model.to(dtype=dtype) if dtype is not None else model


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _entrypoint(preset: str, levels: int, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    from timm.models import build_model_with_cfg

    # timm's dla default: every level but the first (full resolution) one
    out_indices = tuple(range(1, levels))
    return build_model_with_cfg(
        partial(create_dla, preset),
        f"dlagraph_{preset}",
        pretrained,
        feature_cfg={"feature_cls": "getter", "out_indices": out_indices},
        **kwargs,
    )


def register_timm_models() -> list[str]:
    """Register every packaged classifier preset with timm as ``dlagraph_<preset>`` (again on a
    second call: nothing changes) and return the names. Presets with other heads (segmentation,
    CenterNet) are not registered: their outputs are not timm's classification contract."""
    from timm.models import generate_default_cfgs, register_model

    if _REGISTERED:
        return list(_REGISTERED)
    names = []
    for preset, path in presets().items():
        spec = load_spec(path)
        if not get_head_type(spec.head.type).classifier:
            continue
        name = f"dlagraph_{preset}"
        cfg = dict(default_cfg(compile_spec(spec)), license="bsd-3-clause")
        default_cfgs.update(generate_default_cfgs({name: cfg}))
        entry = _entrypoint_of(preset, len(spec.levels), name, spec.paper_name or preset)
        register_model(entry)
        names.append(name)
    _REGISTERED.extend(names)
    return names


def _entrypoint_of(preset: str, levels: int, name: str, title: str) -> Any:
    """A function named ``name`` in this module: timm's registry keys models by both."""

    def entry(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        return _entrypoint(preset, levels, pretrained, **kwargs)

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = f"dlagraph's {title} preset."
    return entry
