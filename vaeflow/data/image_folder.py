r"""Your own images: a folder in torchvision's ImageFolder layout, at 8 bits.

The images are read from ``root`` in one of two layouts:

- ``root/<class>/<image>`` (images directly in ``root`` count too, deeper folders as
  well): every image, from which seeded validation and test splits are carved
  (``val_size`` and ``test_size``);
- ``root/train/...``, and optionally ``root/val/...`` and ``root/test/...``, each laid
  out as above: the given splits, with whichever of validation and test is missing carved
  from ``train``.

Class folders only group files: labels are not used. Any format PIL reads with one of
the extensions of torchvision's ImageFolder (PNG, JPEG, BMP, PPM/PGM, TIFF, WebP) is an
image; other files and hidden ones are skipped. Files are read in sorted order, so the
splits depend only on the files and ``split_seed``. EXIF orientation is applied and alpha
channels are dropped; ``channels=auto`` keeps one channel when every image is grayscale
(PIL modes ``1``, ``L``, ``LA``) and makes three (RGB) otherwise. Images must be 8 bits
per channel: 16-bit and floating-point images are refused rather than silently truncated.

The pixels are values ``k / 255`` (``levels=256``) for the discrete likelihoods, or,
with ``binarize=dynamic`` or ``static``, Bernoulli probabilities binarized as
:func:`~vaeflow.data.base.make_splits` says.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from vaeflow.checks import choice
from vaeflow.data.base import BINARIZE, DataSplits, check_split_size, make_splits, split_size
from vaeflow.data.registry import register
from vaeflow.errors import ConfigError, DataError

__all__ = ["EXTENSIONS", "load_image_folder"]

#: The file extensions read as images (torchvision's ``IMG_EXTENSIONS``), compared in lower case.
EXTENSIONS = frozenset({".bmp", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp"})
_GRAY_MODES = frozenset({"1", "L", "LA", "La"})
_SPLITS = ("train", "val", "test")
_WIDE_RAWMODE = re.compile(r";16[BLN]$")  # PIL's raw modes of 16-bit samples ("BGR;16" is 5-6-5 packed)


@register("image_folder")
def load_image_folder(
    root: str | os.PathLike | None = None,
    channels: int | str = "auto",
    size: list[int] | None = None,
    val_size: int | float = 0.1,
    test_size: int | float = 0.1,
    split_seed: int = 0,
    binarize: str = "none",
    binarize_seed: int = 1,
) -> DataSplits:
    r"""Loads the images under ``root`` (``root/<class>/<image>``, or ``root/train``,
    ``root/val`` and ``root/test`` laid out so).

    Arguments:
        root: the folder of images (required).
        channels: ``auto`` (1 if every image is grayscale, else 3), ``1`` (convert to
            grayscale) or ``3`` (convert to RGB).
        size: ``None`` (every image must have the same size) or ``[height, width]``: resize
            every image to it (Lanczos filter; the aspect ratio is not kept).
        val_size: validation images carved from the training images when there is no
            ``root/val``: a count, or a fraction in ``(0, 1)`` of the training images.
        test_size: test images carved likewise when there is no ``root/test``.
        split_seed: seed of the partition.
        binarize: ``none`` (the 8-bit pixels: 256 levels), ``dynamic`` or ``static``, as in
            :func:`~vaeflow.data.base.make_splits`.
        binarize_seed: seed of the fixed binarizations.

    Returns:
        Splits of shape ``[N, C, H, W]``.
    """
    if root is None:
        raise ConfigError(
            "dataset.root is not set: set dataset.root=/path/to/images "
            "(a folder of <class>/<image> files, or of train/, val/ and test/ folders)"
        )
    reader = _Reader(_check_channels(channels), _check_size(size))
    check_split_size("val_size", val_size)
    check_split_size("test_size", test_size)
    choice("dataset.binarize", binarize, BINARIZE)
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(
            f"image_folder: {root} is not a directory; set dataset.root to the folder of your images"
        )
    pixels = {
        split: [reader.read(path) for path in _list_images(folder)]
        for split, folder in _folders(root).items()
    }
    images = reader.stack(pixels)
    n = len(images["train"])
    return make_splits(
        "image_folder", images["train"], images.get("test"), val=images.get("val"),
        val_size=split_size(val_size, n), test_size=split_size(test_size, n), split_seed=split_seed,
        binarize=binarize, binarize_seed=binarize_seed, levels=256,
    )  # fmt: skip


def _check_channels(channels: Any) -> int | str:
    if channels != "auto" and not (type(channels) is int and channels in (1, 3)):
        raise ConfigError(f"dataset.channels={channels}: use auto, 1 (grayscale) or 3 (RGB)")
    return channels


def _check_size(size: Any) -> tuple[int, int] | None:
    if size is None:
        return None
    if (
        isinstance(size, Sequence)
        and not isinstance(size, str)
        and len(size) == 2
        and all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in size)
    ):
        return int(size[0]), int(size[1])
    shown = list(size) if isinstance(size, Sequence) and not isinstance(size, str) else size
    raise ConfigError(
        f"dataset.size={shown}: use null (every image the same size) or [height, width] in pixels, "
        f"e.g. dataset.size=[32,32]"
    )


def _folders(root: Path) -> dict[str, Path]:
    r"""The folder of each split that the files give."""
    if (root / "train").is_dir():
        return {split: root / split for split in _SPLITS if (root / split).is_dir()}
    for split in ("val", "test"):
        if (root / split).is_dir():
            raise DataError(
                f"image_folder: {root} has a {split}/ folder but no train/; put the training images in "
                f"{root / 'train'} (or rename {split}/ if it is a class)"
            )
    return {"train": root}


def _list_images(folder: Path) -> list[Path]:
    r"""The image files under ``folder`` (following links, skipping hidden files), sorted."""
    found = []
    for directory, subfolders, names in os.walk(folder, followlinks=True):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        found += [
            Path(directory) / name
            for name in names
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in EXTENSIONS
        ]
    if not found:
        raise DataError(
            f"image_folder: no images in {folder} (expected <class>/<image> files with one of the "
            f"extensions {', '.join(sorted(EXTENSIONS))}); check dataset.root"
        )
    return sorted(found)


def _wide_pixels(image: Image.Image) -> str | None:
    r"""What ``image``'s pixels are when they have more than 8 bits per channel, else ``None``."""
    if image.mode.startswith("I;16"):
        return "16-bit"
    for tile in getattr(image, "tile", None) or []:  # how the file stores its samples
        args = tile[3] if len(tile) > 3 else None
        raw = args[0] if isinstance(args, tuple) and args else args
        if isinstance(raw, str) and (_WIDE_RAWMODE.search(raw) or raw.startswith("I;16")):
            return "16-bit"  # 16-bit colour, which PIL would truncate to 8 bits without a word
    if image.mode == "I":
        return "32-bit integer"
    if image.mode == "F":
        return "floating-point"
    return None


class _Reader:
    r"""Reads images as uint8 arrays ``[H, W]`` (grayscale) or ``[H, W, 3]`` (RGB), all of
    one size (the first image's, or ``size``)."""

    def __init__(self, channels: int | str, size: tuple[int, int] | None) -> None:
        self.channels = channels
        self.size = size
        self.first: tuple[Path, tuple[int, int]] | None = None

    def read(self, path: Path) -> np.ndarray:
        try:
            with Image.open(path) as image:
                wide = _wide_pixels(image)
                if wide is not None:
                    raise DataError(
                        f"image_folder: {path} has {wide} pixels; vaeflow reads 8-bit images: convert it to "
                        f"8 bits per channel (e.g. magick {path.name} -depth 8 {path.name}) or remove it"
                    )
                gray = self.channels == 1 or (self.channels == "auto" and image.mode in _GRAY_MODES)
                image = ImageOps.exif_transpose(image).convert("L" if gray else "RGB")
                if self.size is not None and image.size != self.size[::-1]:
                    image = image.resize(self.size[::-1], Image.Resampling.LANCZOS)
                pixels = np.asarray(image, dtype=np.uint8)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            reason = " ".join(str(e).split()) or type(e).__name__
            raise DataError(
                f"image_folder: {path} is not a readable image ({reason}); replace or remove it"
            ) from None
        shape = pixels.shape[:2]
        if self.first is None:
            self.first = path, shape
        elif shape != self.first[1]:
            (h, w), (first, (fh, fw)) = shape, self.first
            raise DataError(
                f"image_folder: {path} is {h}x{w} pixels (height x width) but {first} is {fh}x{fw}; "
                f"set dataset.size=[H,W] to resize every image (e.g. dataset.size=[{fh},{fw}])"
            )
        return pixels

    def stack(self, pixels: dict[str, list[np.ndarray]]) -> dict[str, Tensor]:
        r"""Each split's images as values ``k / 255``, ``[N, C, H, W]``: one channel if every
        image of every split was read as grayscale, else three (gray replicated, as PIL's
        conversion to RGB does)."""
        gray = all(p.ndim == 2 for images in pixels.values() for p in images)
        out = {}
        for split, images in pixels.items():
            if gray:
                batch = np.stack(images)[:, None]
            else:
                batch = np.stack([p if p.ndim == 3 else np.repeat(p[:, :, None], 3, axis=2) for p in images])
                batch = batch.transpose(0, 3, 1, 2)
            out[split] = torch.from_numpy(np.ascontiguousarray(batch)).to(torch.float32).div_(255.0)
        return out
