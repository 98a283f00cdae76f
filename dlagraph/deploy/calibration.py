"""Calibration and check images for int8 (``--calibration digits|folder:PATH|random``): batches
at the network's input size, normalised by its ``pretrained_cfg`` (mean and std), and a separate
check batch that the export verifies on; and labelled images for int8's validation metric
(``--validation digits|folder:PATH``, :func:`labelled`)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from ..base.errors import DeployError, DlagraphWarning, clip, one_line

__all__ = ["Images", "images", "Labelled", "labelled", "IMAGE_SUFFIXES", "DIGITS"]

# each suffix decoded by its own Pillow plugin and no other: a ".png" holding PostScript is an
# unreadable PNG, never handed to Ghostscript
PILLOW_FORMATS = {
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".png": "PNG",
    ".bmp": "BMP",
    ".webp": "WEBP",
    ".ppm": "PPM",
    ".pgm": "PPM",
}
IMAGE_SUFFIXES = tuple(PILLOW_FORMATS)
MAX_IMAGE_PIXELS = 40_000_000  # a decompression bomb is refused, not decoded
DIGITS = 1797  # images in scikit-learn's digits


@dataclass
class Images:
    calibration: list[torch.Tensor]  # batches of ``batch`` images (the last may be smaller)
    check: torch.Tensor  # other images, for the exported model's check against PyTorch
    source: str


def images(
    source: str,
    channels: int,
    size: tuple[int, int],
    cfg: dict[str, Any],
    count: int = 256,
    batch: int = 32,
    check: int = 32,
) -> Images:
    """``count`` calibration images and ``check`` others from ``source``: ``digits``
    (scikit-learn's, shipped with it), ``folder:PATH`` (image files under PATH, sorted by name),
    or ``random`` (a timing run: int8 accuracy from random inputs means nothing).

    Raises:
        DlagraphError: an unknown source, an empty folder, an image that cannot be read.
    """
    if not 0 <= count <= 100_000:  # 0: the check images alone (no int8)
        raise DeployError(f"calibration images: give 1 to 100,000 (got {count})")
    if source == "random":
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(count + check, channels, *size, generator=gen)
    elif source == "digits":
        x = _digits(count + check, size)
    elif source.startswith("folder:"):
        x = _folder(Path(source[7:]).expanduser(), count + check, channels, size)
    else:
        raise DeployError(
            f"calibration: give digits, folder:PATH or random (got {clip(one_line(source), 80)!r})"
        )
    if source != "random":
        x = _normalised(x, channels, cfg)
    n_check = min(check, max(1, len(x) // 5)) if len(x) < count + check else check
    calib, held = x[: len(x) - n_check], x[len(x) - n_check :]
    if count and len(x) < count + check:  # fewer than asked: said, with how they are used
        warnings.warn(
            f"calibration: {len(x)} images from {clip(one_line(source), 80)} ({count} + {check} "
            f"asked): {len(calib)} calibrate, {len(held)} check the artifact",
            DlagraphWarning,
            stacklevel=3,
        )
    return Images(list(calib.split(batch)), held.contiguous(), source)


@dataclass
class Labelled:
    """Labelled images for int8's top-1 check: ``items`` (``[(images, labels), ...]``) and the
    class names the labels index."""

    items: list[tuple[torch.Tensor, torch.Tensor]]
    classes: list[str]

    def __len__(self) -> int:
        return sum(len(y) for _, y in self.items)


def labelled(
    source: str,
    channels: int,
    size: tuple[int, int],
    cfg: dict[str, Any],
    count: int = 256,
    batch: int = 64,
    calibration: str | None = None,
    num_classes: int | None = None,
) -> Labelled:
    """``count`` labelled images in batches of ``batch``, for int8's top-1 check: ``digits``
    (scikit-learn's, from the end of the set: calibration reads from its start) or
    ``folder:PATH`` (one folder of images per class, as torchvision's ``ImageFolder``: the classes
    in name order are labels 0, 1, ...; the images taken from each class in turn, so a few hundred
    cover every class). ``calibration`` (its source) is checked for overlap; fewer images than
    ``count`` are used with a warning.

    Raises:
        DlagraphError: an unknown source, a folder without class folders, more classes than the
            network's ``num_classes``, an empty class, an image that cannot be read, too few
            images.
    """
    if not 1 <= count <= 100_000:
        raise DeployError(f"validation images: give 1 to 100,000 (got {count})")
    if source == "digits":
        x, y = _digits(DIGITS, size, labels=True)
        x, y = x[-count:], y[-count:]
        classes = [str(i) for i in range(10)]
    elif source.startswith("folder:"):
        root = Path(source[7:]).expanduser()
        classes = _class_names(root, channels)
        where = clip(one_line(str(root)), 120)
        if num_classes is not None and len(classes) > num_classes:
            raise DeployError(
                f"validation: {len(classes)} class folders under {where}, the network has "
                f"{num_classes} classes"
            )
        if num_classes is not None and len(classes) < num_classes:
            warnings.warn(
                f"validation: {len(classes)} class folders under {where}, the network has "
                f"{num_classes} classes: the labels are the folders' places in name order (0 to "
                f"{len(classes) - 1}); make sure they are the network's",
                DlagraphWarning,
                stacklevel=3,
            )
        x, y = _classes(root, classes, count, channels, size)
        if calibration and calibration.startswith("folder:") and _overlap(root, calibration[7:]):
            warnings.warn(
                "validation: the calibration folder, or one inside the other: int8 is then "
                "measured on images it was calibrated on, which flatters it; give held-out images",
                DlagraphWarning,
                stacklevel=3,
            )
    else:
        raise DeployError(
            f"validation: give digits or folder:PATH (labelled images; got "
            f"{clip(one_line(source), 80)!r})"
        )
    if len(x) < 2:
        raise DeployError(f"validation: {len(x)} image; top-1 needs at least 2")
    if len(x) < count:
        warnings.warn(
            f"validation: {len(x)} images from {clip(one_line(source), 80)} ({count} asked): "
            f"int8 is measured on {len(x)}",
            DlagraphWarning,
            stacklevel=3,
        )
    x = _normalised(x, channels, cfg)
    return Labelled(list(zip(x.split(batch), y.split(batch), strict=True)), classes)


def _overlap(a: Path, b: str) -> bool:
    """``a`` and the folder ``b`` are one, or one holds the other."""
    try:
        x, y = a.resolve(), Path(b).expanduser().resolve()
    except (OSError, RuntimeError):
        return False
    return x == y or x in y.parents or y in x.parents


def _class_names(root: Path, channels: int) -> list[str]:
    """The class folders under ``root``, in name order (their labels: 0, 1, ...)."""
    _check_folder(root, channels, "validation")
    where = clip(one_line(str(root)), 120)
    try:
        # links to folders are classes too, as in torchvision's ImageFolder
        classes = sorted(d.name for d in os.scandir(root) if d.is_dir())
    except OSError as e:
        raise DeployError(
            f"validation: {where} cannot be read ({clip(one_line(str(e)), 80)})"
        ) from None
    if not classes:
        raise DeployError(
            f"validation: no class folders under {where}; give one folder of images per class "
            "(PATH/CLASS/IMAGE, as torchvision's ImageFolder)"
        )
    return classes


def _classes(
    root: Path, classes: list[str], n: int, channels: int, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to ``n`` images from the class folders under ``root`` and their labels (the classes'
    indices in name order), one class after another in turn."""
    where = clip(one_line(str(root)), 120)
    per_class = [_image_files(root / c, n) for c in classes]
    picked: list[tuple[Path, int]] = []
    firsts = [next(files, None) for files in per_class]
    for label, first in enumerate(firsts):
        if first is None:
            raise DeployError(
                f"validation: class folder {clip(one_line(classes[label]), 80)!r} under {where} "
                f"holds no images ({', '.join(IMAGE_SUFFIXES)})"
            )
    pending = [[f] for f in firsts]  # each class's next file, taken in turn
    while len(picked) < n and any(pending):
        for label, files in enumerate(per_class):
            if len(picked) >= n:
                break
            if pending[label]:
                picked.append((pending[label].pop(), label))
                pending[label] = [f] if (f := next(files, None)) is not None else []
    from PIL import Image

    out = []
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, MAX_IMAGE_PIXELS
    try:
        for p, _ in picked:
            out.append(_read_image(Image, p, channels, size, "validation"))
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    return torch.stack(out), torch.tensor([label for _, label in picked])


def _normalised(x: torch.Tensor, channels: int, cfg: dict[str, Any]) -> torch.Tensor:
    """Images in [0, 1] as the network takes them: its channels, ``(x - mean) / std``."""
    x = x.expand(-1, channels, -1, -1) if x.shape[1] == 1 else x[:, :channels]
    mean = torch.tensor(cfg.get("mean", (0.0,)), dtype=torch.float32)
    std = torch.tensor(cfg.get("std", (1.0,)), dtype=torch.float32)
    return (x - _per_channel(mean, channels)) / _per_channel(std, channels)


def _per_channel(v: torch.Tensor, channels: int) -> torch.Tensor:
    v = v if len(v) == channels else v.mean().expand(channels)
    return v.view(1, channels, 1, 1)


def _digits(n: int, size: tuple[int, int], labels: bool = False) -> Any:
    """The first ``n`` digits at ``size`` in [0, 1] (and their labels)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DeployError("digits needs scikit-learn: pip install scikit-learn") from None
    d = load_digits()
    x = torch.tensor(d.images[:n], dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return (x, torch.tensor(d.target[:n], dtype=torch.long)) if labels else x


def _check_folder(root: Path, channels: int, what: str) -> None:
    """``root`` a folder of images the network can read (and Pillow installed)."""
    where = clip(one_line(str(root)), 120)
    if channels not in (1, 3):
        raise DeployError(f"{what}: image files give 1 or 3 channels; the network takes {channels}")
    if not str(root) or str(root) == ".":
        raise DeployError(f"{what}: folder: needs a path (folder:PATH)")
    try:
        resolved = root.resolve()
    except (OSError, RuntimeError) as e:  # a loop of links
        raise DeployError(
            f"{what}: {where} cannot be read ({clip(one_line(str(e)), 80)})"
        ) from None
    if resolved == Path(resolved.anchor):
        raise DeployError(
            f"{what}: {where} is the root of the file system; give a folder of images"
        )
    if not root.is_dir():
        raise DeployError(f"{what}: {where} is not a folder")
    try:
        import PIL  # noqa: F401
    except ImportError:
        raise DeployError(f"--{what} folder: needs Pillow: pip install pillow") from None


def _folder(root: Path, n: int, channels: int, size: tuple[int, int]) -> torch.Tensor:
    where = clip(one_line(str(root)), 120)
    _check_folder(root, channels, "calibration")
    from PIL import Image

    files = list(_image_files(root, n))
    if not files:
        raise DeployError(f"calibration: no images ({', '.join(IMAGE_SUFFIXES)}) under {where}")
    if len(files) < 2:
        raise DeployError(
            f"calibration: one image under {where}; int8 needs at least 2 (one to calibrate on, "
            "one to check)"
        )
    out = []
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, MAX_IMAGE_PIXELS
    try:
        for p in files:
            out.append(_read_image(Image, p, channels, size))
    finally:  # Pillow's limit is process-wide: the caller's is put back
        Image.MAX_IMAGE_PIXELS = limit
    return torch.stack(out)


def _image_files(root: Path, n: int) -> Iterator[Path]:
    """The first ``n`` image files under ``root``, folder by folder in name order, listed lazily
    (a huge tree is not walked past the ``n``-th image; links to folders are not followed)."""
    try:
        for folder, dirs, names in os.walk(root):
            dirs.sort()
            for name in sorted(names):
                p = Path(folder) / name
                if p.suffix.lower() in PILLOW_FORMATS and p.is_file():
                    yield p
                    n -= 1
                    if n <= 0:
                        return
    except RecursionError:  # os.walk recurses per level (Python < 3.12)
        raise DeployError(
            f"images: folders under {clip(one_line(str(root)), 120)} nest too deeply to walk"
        ) from None


def _read_image(
    Image: Any, p: Path, channels: int, size: tuple[int, int], what: str = "calibration"
) -> torch.Tensor:
    """One image file as a C x H x W tensor in [0, 1]; any failure is one line."""
    try:
        with warnings.catch_warnings():
            # Pillow only warns between its limit and twice it: refuse those too
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p, formats=[PILLOW_FORMATS[p.suffix.lower()]]) as im:
                im = im.convert("L" if channels == 1 else "RGB").resize(
                    (size[1], size[0]), Image.Resampling.BILINEAR
                )
                t = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
    except Exception as e:  # Pillow's errors (and its bomb check) are one line here
        raise DeployError(
            f"{what}: cannot read {clip(one_line(str(p)), 120)} ({type(e).__name__}: "
            f"{clip(one_line(str(e)), 80)})"
        ) from None
    c = 1 if channels == 1 else 3
    return t.view(size[0], size[1], c).permute(2, 0, 1).float() / 255.0
