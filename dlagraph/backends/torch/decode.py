"""Decoding CenterNet outputs into boxes (CenterNet's ``ctdet_decode``, in input pixels)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch.nn import functional as F

from ...errors import DlagraphError

__all__ = ["centernet_decode"]


def _gather(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``t`` (B, C, H, W) at flat positions ``index`` (B, K) -> (B, K, C)."""
    b, c = t.shape[:2]
    flat = t.reshape(b, c, -1)
    return flat.gather(2, index.unsqueeze(1).expand(b, c, index.shape[1])).permute(0, 2, 1)


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

    Raises:
        DlagraphError: if ``hm`` or ``wh`` is missing or the maps disagree in size.
    """
    if "hm" not in outputs or "wh" not in outputs:
        raise DlagraphError(f"centernet_decode needs `hm` and `wh` outputs (got {list(outputs)})")
    hm, wh = outputs["hm"], outputs["wh"]
    reg = outputs.get("reg")
    if wh.shape[1] not in (2, 4) or wh.shape[2:] != hm.shape[2:]:
        raise DlagraphError(f"`wh` must be (B, 2 or 4, H, W) like `hm`; got {tuple(wh.shape)}")
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
