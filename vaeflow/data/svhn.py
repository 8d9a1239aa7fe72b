r"""SVHN: house numbers cropped from Google Street View, 32x32 colour pixels at 8 bits.

SVHN (Netzer, Wang, Coates, Bissacco, Wu & Ng, "Reading Digits in Natural Images with
Unsupervised Feature Learning", NIPS Workshop on Deep Learning and Unsupervised Feature
Learning 2011), the cropped-digits format: 73,257 training and 26,032 test images, 8 bits
per channel (256 levels), for the discrete likelihoods; a seeded validation split is
carved from the training images. Every split is static, values ``k / 255``. (The 531,131
"extra" images are not used.)

Files are read from ``root`` laid out as torchvision expects (``root/train_32x32.mat`` and
``root/test_32x32.mat``): MATLAB files whose ``X`` is uint8 ``[32, 32, 3, N]`` (height,
width, channel, image), read with :func:`scipy.io.loadmat`; the labels ``y`` are not read.
Only with ``download=true`` and a file missing does torchvision fetch it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vaeflow.data.base import DataSplits, make_splits
from vaeflow.data.download import fetch_with_torchvision
from vaeflow.data.registry import register
from vaeflow.errors import DataError

__all__ = ["load_svhn"]

_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}
_SHAPE = (32, 32, 3)


@register("svhn")
def load_svhn(
    root: str | os.PathLike = "data",
    download: bool = False,
    val_size: int = 5000,
    split_seed: int = 0,
) -> DataSplits:
    r"""Loads SVHN (cropped digits) from ``root/train_32x32.mat`` and ``root/test_32x32.mat``.

    Arguments:
        root: the directory holding the two ``.mat`` files.
        download: let torchvision fetch a missing file.
        val_size: training images moved to the validation split.
        split_seed: seed of the train/validation partition.

    Returns:
        Static splits of shape ``[N, 3, 32, 32]``, values ``k / 255`` (``levels=256``).

    References:
        | Reading Digits in Natural Images with Unsupervised Feature Learning
        | (Netzer et al., 2011)
        | http://ufldl.stanford.edu/housenumbers/
    """
    root = Path(root).expanduser()
    hint = (
        f"put train_32x32.mat and test_32x32.mat (http://ufldl.stanford.edu/housenumbers/) "
        f"in {root} (dataset.root={root})"
    )
    missing = {split: root / name for split, name in _FILES.items() if not (root / name).is_file()}
    if missing and not download:
        first = next(iter(missing.values()))
        raise DataError(f"svhn: {first} not found; {hint} or set dataset.download=true")
    for split, path in missing.items():
        fetch_with_torchvision("svhn", "SVHN", root, hint, split=split)
        if not path.is_file():
            raise DataError(f"svhn: torchvision's download left no {path}; {hint}")
    pixels = {split: _read_mat(root / name, hint) for split, name in _FILES.items()}
    return make_splits(
        "svhn", pixels["train"], pixels["test"], val_size=val_size, split_seed=split_seed,
        binarize="none", levels=256,
    )  # fmt: skip


def _read_mat(path: Path, hint: str) -> Tensor:
    r"""The images ``X`` of one ``.mat`` file as values ``k / 255``, ``[N, 3, 32, 32]``."""
    import scipy.io

    fresh = f"replace it with a fresh copy (delete it and set dataset.download=true, or {hint})"
    try:
        contents = scipy.io.loadmat(path, variable_names=["X"])
        held = [] if "X" in contents else [entry[0] for entry in scipy.io.whosmat(path)]
    except NotImplementedError:  # what scipy says of MATLAB 7.3 (HDF5) files
        raise DataError(
            f"svhn: {path} is a MATLAB 7.3 (HDF5) file; vaeflow reads the format of the "
            f"original SVHN files (MATLAB 5): re-save it in MATLAB with save(..., '-v7'), or {fresh}"
        ) from None
    except Exception as e:  # not a .mat file, truncated, ...: scipy's errors vary
        reason = " ".join(str(e).split()) or type(e).__name__
        raise DataError(f"svhn: {path} is not a readable .mat file ({reason}); {fresh}") from None
    images = contents.get("X")
    if images is None:
        raise DataError(
            f"svhn: {path} has no variable X (it holds {', '.join(held) or 'nothing'}); "
            f"an SVHN file holds X, uint8 [32, 32, 3, N]: {fresh}"
        )
    if not (
        isinstance(images, np.ndarray)
        and images.dtype == np.uint8
        and images.ndim == 4
        and images.shape[:3] == _SHAPE
        and images.shape[3] > 0
    ):
        kind = (
            f"{images.dtype} {list(images.shape)}"
            if isinstance(images, np.ndarray)
            else type(images).__name__
        )
        raise DataError(f"svhn: {path} holds X as {kind}, expected uint8 [32, 32, 3, N]; {fresh}")
    pixels = np.ascontiguousarray(images.transpose(3, 2, 0, 1))  # [H, W, C, N] -> [N, C, H, W]
    return torch.from_numpy(pixels).to(torch.float32).div_(255.0)
