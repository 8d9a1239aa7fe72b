r"""Your own images, as NumPy arrays in a ``.npy`` or ``.npz`` file.

``root`` names either

- a ``.npy`` file holding every image, from which seeded validation and test splits are
  carved (``val_size`` and ``test_size``), or
- a ``.npz`` file (``np.savez``) holding the array ``train`` and optionally ``val`` and
  ``test``: the given splits, with whichever of validation and test is missing carved
  from ``train``.

Each array holds images ``[N, H, W]`` (grayscale) or ``[N, H, W, C]`` with ``C`` 1 or 3
(channels last, NumPy's image convention), of one of

- ``uint8``, values ``0..255``: 8-bit pixels, read as ``k / 255`` (``levels=256``);
- ``bool``: binary pixels (``levels=2``);
- ``float16``, ``float32`` or ``float64`` in ``[0, 1]``: continuous values
  (``levels=None``), stored as float32.

Every split must have the same image shape and the same kind of values. The file is read
with ``np.load(path, allow_pickle=False)``: object arrays, which would need unpickling,
are refused, so loading a file never runs code from it.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vaeflow.checks import choice
from vaeflow.data.base import BINARIZE, DataSplits, check_split_size, make_splits, split_size
from vaeflow.data.registry import register
from vaeflow.errors import ConfigError, DataError

__all__ = ["LAYOUT", "load_arrays"]

#: What an array must be, said in every error about one.
LAYOUT = (
    "images [N, H, W] or [N, H, W, C] with C 1 or 3 (channels last), "
    "of uint8 0..255, bool, or float16/32/64 in [0, 1]"
)
_SPLITS = ("train", "val", "test")


@register("arrays")
def load_arrays(
    root: str | os.PathLike | None = None,
    val_size: int | float = 0.1,
    test_size: int | float = 0.1,
    split_seed: int = 0,
    binarize: str = "none",
    binarize_seed: int = 1,
) -> DataSplits:
    r"""Loads images from a ``.npy`` file (every image) or a ``.npz`` file (``train`` and
    optionally ``val`` and ``test``).

    Arguments:
        root: the ``.npy`` or ``.npz`` file (required; ``root`` as for every dataset, so that
            ``vaeflow eval dataset_root=`` and resuming with a moved file work the same).
        val_size: validation images carved from the training images when the file gives
            none: a count, or a fraction in ``(0, 1)`` of the training images.
        test_size: test images carved likewise when the file gives none.
        split_seed: seed of the partition.
        binarize: ``none`` (the values as they are), ``dynamic`` or ``static`` (the values
            are Bernoulli probabilities), as in :func:`~vaeflow.data.base.make_splits`.
        binarize_seed: seed of the fixed binarizations.

    Returns:
        Splits of shape ``[N, C, H, W]``; ``levels`` 256 for uint8, 2 for bool and ``None``
        for floats (2 whenever ``binarize`` is ``dynamic`` or ``static``).
    """
    if root is None:
        raise ConfigError(
            "dataset.root is not set: set dataset.root=/path/to/images.npy (or a .npz with train, val "
            "and test arrays)"
        )
    check_split_size("val_size", val_size)
    check_split_size("test_size", test_size)
    choice("dataset.binarize", binarize, BINARIZE)
    path = Path(root).expanduser()
    if not path.is_file():
        raise DataError(f"arrays: {path} not found; set dataset.root to your .npy or .npz file")
    arrays, npz = _load(path)
    kinds = {split: _check(f"{path}[{split!r}]" if npz else str(path), a) for split, a in arrays.items()}
    _check_agreement(path, arrays, kinds)
    levels = kinds["train"]
    images = {split: _to_tensor(a) for split, a in arrays.items()}
    n = len(images["train"])
    return make_splits(
        "arrays", images["train"], images.get("test"), val=images.get("val"),
        val_size=split_size(val_size, n), test_size=split_size(test_size, n), split_seed=split_seed,
        binarize=binarize, binarize_seed=binarize_seed, levels=levels,
    )  # fmt: skip


def _load(path: Path) -> tuple[dict[str, np.ndarray], bool]:
    r"""The arrays of the file (``{"train": ...}`` for a ``.npy``, the splits of a ``.npz``)
    and whether it is a ``.npz``."""
    fix = f"save {LAYOUT} with np.save, or np.savez(path, train=..., val=..., test=...)"
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            return {"train": loaded}, False
        with loaded:
            names = list(loaded.files)
            unknown = [name for name in names if name not in _SPLITS]
            if "train" not in names or unknown:
                raise DataError(
                    f"arrays: {path} holds the arrays {', '.join(names) or 'none'}; a .npz must hold train "
                    f"and optionally val and test, each {LAYOUT} (rename or remove the others)"
                )
            return {split: loaded[split] for split in _SPLITS if split in names}, True
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:  # not NumPy's, or object arrays
        reason = " ".join(str(e).split()) or type(e).__name__
        raise DataError(f"arrays: {path} is not a .npy or .npz file of images ({reason}); {fix}") from None


def _check(name: str, a: np.ndarray) -> int | None:
    r"""The ``levels`` of a valid array; a :class:`DataError` that says the layout otherwise."""

    def fail(problem: str, advice: str = "") -> DataError:
        return DataError(f"arrays: {name} {problem}; vaeflow reads {LAYOUT}{advice}")

    if a.dtype.kind == "u" and a.dtype.itemsize == 1:
        levels = 256
    elif a.dtype.kind == "b":
        levels = 2
    elif a.dtype.kind == "f" and a.dtype.itemsize in (2, 4, 8):  # float16/32/64, either byte order
        levels = None
    else:
        advice = ": save it as uint8 if its values are 0..255" if a.dtype.kind in "iu" else ""
        raise fail(f"holds {a.dtype} values", advice)
    if a.ndim not in (3, 4):
        raise fail(f"has shape {list(a.shape)}")
    if a.ndim == 4 and a.shape[3] not in (1, 3):
        advice = ": if it is [N, C, H, W], save np.moveaxis(x, 1, -1)" if a.shape[1] in (1, 3) else ""
        raise fail(f"has shape {list(a.shape)}, whose last axis is not 1 or 3 channels", advice)
    if a.shape[0] == 0 or a.size == 0:
        raise fail(f"holds no images (shape {list(a.shape)})")
    if levels is None:
        if np.isnan(a).any():
            raise fail("has NaN values")
        low, high = float(a.min()), float(a.max())
        if low < 0 or high > 1:
            raise fail(
                f"has values in [{low:g}, {high:g}], outside [0, 1]",
                ": rescale it (x / 255 for 8-bit pixels)",
            )
    return levels


def _check_agreement(path: Path, arrays: dict[str, np.ndarray], kinds: dict[str, int | None]) -> None:
    r"""Refuses splits whose image shapes or kinds of values differ."""
    shapes = {split: _image_shape(a) for split, a in arrays.items()}
    for split in arrays:
        if shapes[split] != shapes["train"]:
            raise DataError(
                f"arrays: {path} has {split} images of shape {list(shapes[split])} (C, H, W) but train images "
                f"of shape {list(shapes['train'])}; every split must hold images of one shape"
            )
        if kinds[split] != kinds["train"]:
            raise DataError(
                f"arrays: {path} has {split} of {arrays[split].dtype} but train of {arrays['train'].dtype}; "
                f"save every split with one kind of values (uint8, bool or floats in [0, 1])"
            )


def _image_shape(a: np.ndarray) -> tuple[int, ...]:
    return (1, *a.shape[1:]) if a.ndim == 3 else (a.shape[3], *a.shape[1:3])


def _to_tensor(a: np.ndarray) -> Tensor:
    r"""Values in ``[0, 1]`` as float32 ``[N, C, H, W]``."""
    batch = a[:, None] if a.ndim == 3 else a.transpose(0, 3, 1, 2)
    batch = np.ascontiguousarray(batch)
    if batch.dtype == np.uint8:
        return torch.from_numpy(batch).to(torch.float32).div_(255.0)
    return torch.from_numpy(batch.astype(np.float32))
