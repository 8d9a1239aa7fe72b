r"""MNIST and Fashion-MNIST: dynamically binarized (the default), statically, or at 8 bits.

MNIST (LeCun, Bottou, Bengio & Haffner, "Gradient-Based Learning Applied to Document
Recognition", Proc. IEEE 1998): handwritten digits. Fashion-MNIST (Xiao, Rasul & Vollgraf,
"Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine Learning Algorithms",
2017, https://arxiv.org/abs/1708.07747): photographs of clothes in the same format. Both
have 60,000 training and 10,000 test images of 28x28 grayscale pixels in IDX files.

With ``binarize=dynamic`` ``pixel / 255`` is the Bernoulli probability of each pixel:
training images are binarized afresh at each draw, validation and test images once with
fixed seeds. ``binarize=none`` keeps the 8-bit pixels (256 levels) for the discrete
likelihoods. A seeded validation split is carved from the 60,000 training images.

Files are read from ``root`` laid out as torchvision expects
(``root/MNIST/raw/train-images-idx3-ubyte[.gz]``, ``root/FashionMNIST/raw/...``),
compressed or not, without writing anything there. Only with ``download=true`` and files
missing does torchvision fetch them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vaeflow.data.base import DataSplits, make_splits
from vaeflow.data.download import fetch_with_torchvision
from vaeflow.data.idx import read_idx
from vaeflow.data.registry import register
from vaeflow.errors import DataError

__all__ = ["load_fashion_mnist", "load_mnist"]

_IMAGES = {"train": "train-images-idx3-ubyte", "test": "t10k-images-idx3-ubyte"}


@register("mnist")
def load_mnist(
    root: str | os.PathLike = "data",
    download: bool = False,
    val_size: int = 10_000,
    split_seed: int = 0,
    binarize: str = "dynamic",
    binarize_seed: int = 1,
) -> DataSplits:
    r"""Loads MNIST from ``root/MNIST/raw``.

    Arguments:
        root: the directory holding ``MNIST/raw/``.
        download: let torchvision fetch the files if they are missing.
        val_size: training images moved to the validation split.
        split_seed: seed of the train/validation partition.
        binarize: ``dynamic`` (``pixel / 255`` is each pixel's Bernoulli probability, drawn
            afresh for training), ``static`` (every split binarized once) or ``none`` (the
            8-bit pixels: 256 levels), as in :func:`~vaeflow.data.base.make_splits`.
        binarize_seed: seed of the fixed binarizations (validation; test uses
            ``binarize_seed + 1``, a static training split ``binarize_seed + 2``).

    References:
        | Gradient-Based Learning Applied to Document Recognition (LeCun et al., 1998)
        | https://doi.org/10.1109/5.726791
    """
    return _load_idx_dataset("mnist", "MNIST", root, download, val_size, split_seed, binarize, binarize_seed)


@register("fashion_mnist")
def load_fashion_mnist(
    root: str | os.PathLike = "data",
    download: bool = False,
    val_size: int = 10_000,
    split_seed: int = 0,
    binarize: str = "dynamic",
    binarize_seed: int = 1,
) -> DataSplits:
    r"""Loads Fashion-MNIST from ``root/FashionMNIST/raw``.

    Arguments: as :func:`load_mnist`.

    References:
        | Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine Learning
        | Algorithms (Xiao et al., 2017)
        | https://arxiv.org/abs/1708.07747
    """
    return _load_idx_dataset(
        "fashion_mnist",
        "FashionMNIST",
        root,
        download,
        val_size,
        split_seed,
        binarize,
        binarize_seed,
    )


def _load_idx_dataset(
    name: str,
    folder: str,
    root: str | os.PathLike,
    download: bool,
    val_size: int,
    split_seed: int,
    binarize: str,
    binarize_seed: int,
) -> DataSplits:
    r"""Loads an MNIST-format dataset; ``folder`` is also the torchvision class name."""
    root = Path(root).expanduser()
    raw = root / folder / "raw"
    paths = {split: _find(raw, stem) for split, stem in _IMAGES.items()}
    missing = [raw / f"{_IMAGES[split]}.gz" for split, path in paths.items() if path is None]
    if missing:
        hint = f"put the IDX files (.gz or uncompressed) in {raw} (dataset.root={root})"
        if not download:
            raise DataError(f"{name}: {missing[0]} not found; {hint} or set dataset.download=true")
        fetch_with_torchvision(name, folder, root, hint)
        paths = {split: _find(raw, stem) for split, stem in _IMAGES.items()}
    probs = {split: _read_images(name, path) for split, path in paths.items()}
    return make_splits(
        name, probs["train"], probs["test"], val_size=val_size, split_seed=split_seed,
        binarize=binarize, binarize_seed=binarize_seed, levels=256,
    )  # fmt: skip


def _find(raw: Path, stem: str) -> Path | None:
    r"""The uncompressed file if present (faster to read), else the ``.gz`` one."""
    for path in (raw / stem, raw / f"{stem}.gz"):
        if path.is_file():
            return path
    return None


def _read_images(name: str, path: Path | None) -> Tensor:
    if path is None:  # the download did not produce it
        raise DataError(f"{name}: torchvision's download left no images file; fetch it by hand")
    try:
        pixels = read_idx(path, type_code=0x08, shape=(None, 28, 28))
    except DataError as e:
        raise DataError(
            f"{name}: {e}; replace it with a fresh copy (delete it and set dataset.download=true)"
        ) from None
    return torch.from_numpy(pixels.astype(np.float32)).unsqueeze(1).div_(255.0)
