"""Decoding CenterNet outputs into boxes (CenterNet's ``ctdet_decode``, in input pixels)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch.nn import functional as F

from ..base.errors import DlagraphError, safe_repr

__all__ = ["centernet_decode"]


def _gather(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``t`` (B, C, H, W) at flat positions ``index`` (B, K) -> (B, K, C)."""
    b, c = t.shape[:2]
    flat = t.reshape(b, c, -1)
    return flat.gather(2, index.unsqueeze(1).expand(b, c, index.shape[1])).permute(0, 2, 1)


def _maps(
    outputs: Mapping[str, torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``hm``, ``wh`` and ``reg`` (or None), checked: (B, C, H, W) float maps of one batch and size,
    ``wh`` with 2 or 4 channels, ``reg`` with 2."""
    if not isinstance(outputs, Mapping):
        raise DlagraphError(
            f"outputs: give the network's dict of maps (got {type(outputs).__name__})"
        )
    if "hm" not in outputs or "wh" not in outputs:
        names = [safe_repr(k, 30) for k in list(outputs)[:10]]
        raise DlagraphError(f"outputs: centernet_decode needs `hm` and `wh` (got {names})")
    maps = {k: outputs[k] for k in ("hm", "wh", "reg") if k in outputs}
    for name, t in maps.items():
        if not isinstance(t, torch.Tensor) or t.dim() != 4 or not t.is_floating_point():
            got = f"{t.dtype} {list(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__
            raise DlagraphError(f"outputs[{name!r}]: must be a float (B, C, H, W) map (got {got})")
    hm = maps["hm"]
    if 0 in hm.shape[1:]:
        raise DlagraphError(f"outputs['hm']: has no classes or no positions ({list(hm.shape)})")
    channels = {"wh": (2, 4), "reg": (2,)}
    for name, t in maps.items():
        if name == "hm":
            continue
        if t.shape[0] != hm.shape[0] or t.shape[2:] != hm.shape[2:]:
            raise DlagraphError(
                f"outputs[{name!r}]: {list(t.shape)} disagrees with `hm` {list(hm.shape)} in "
                "batch or size"
            )
        if t.shape[1] not in channels[name]:
            want = " or ".join(map(str, channels[name]))
            raise DlagraphError(f"outputs[{name!r}]: must have {want} channels (got {t.shape[1]})")
    return hm, maps["wh"], maps.get("reg")


def centernet_decode(
    outputs: Mapping[str, torch.Tensor], k: int = 100, down_ratio: int = 4
) -> list[dict[str, torch.Tensor]]:
    """Boxes from a CenterNet network's raw outputs (``hm`` logits, ``wh``, optional ``reg``).

    The heatmap goes through a sigmoid; only its 3x3 local maxima are kept; the top ``k`` over
    classes x positions become detections. ``reg`` moves each center by its sub-pixel offset
    (+0.5 without it). ``wh`` holds (w, h) around the center, or FairMOT's 4-channel (left, top,
    right, bottom) distances. Coordinates are multiplied by ``down_ratio``: input pixels.

    Returns:
        One dict per image: ``boxes`` (k, 4) as x1, y1, x2, y2; ``scores`` (k,); ``classes`` (k,).

    An empty batch gives an empty list.

    Raises:
        DlagraphError: naming the argument: ``hm`` or ``wh`` missing, a map that is not a float
            (B, C, H, W) tensor, maps that disagree in batch or size, ``wh`` without 2 or 4
            channels, ``reg`` without 2, ``k`` or ``down_ratio`` not a whole number from 1.
    """
    hm, wh, reg = _maps(outputs)
    for name, value in (("k", k), ("down_ratio", down_ratio)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise DlagraphError(f"{name}: must be a whole number from 1 (got {safe_repr(value)})")
    if hm.shape[0] == 0:
        return []  # an empty batch has no images to decode
    b, classes, h, w = hm.shape
    heat = torch.sigmoid(hm)
    heat = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat)  # peaks only
    k = min(k, classes * h * w)
    scores, flat = heat.reshape(b, -1).topk(k)  # over classes x positions
    cls, pos = flat // (h * w), flat % (h * w)
    ys, xs = (pos // w).to(hm.dtype), (pos % w).to(hm.dtype)
    if reg is not None:
        offset = _gather(reg, pos)
        xs, ys = xs + offset[..., 0], ys + offset[..., 1]
    else:
        xs, ys = xs + 0.5, ys + 0.5
    size = _gather(wh, pos)
    if wh.shape[1] == 2:
        half_w, half_h = size[..., 0] / 2, size[..., 1] / 2
        boxes = torch.stack([xs - half_w, ys - half_h, xs + half_w, ys + half_h], dim=-1)
    else:
        boxes = torch.stack(
            [xs - size[..., 0], ys - size[..., 1], xs + size[..., 2], ys + size[..., 3]], dim=-1
        )
    boxes = boxes * down_ratio
    return [{"boxes": boxes[i], "scores": scores[i], "classes": cls[i]} for i in range(b)]
