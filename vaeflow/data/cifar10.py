r"""CIFAR-10: 60,000 colour photographs of 32x32 pixels in 10 classes, at 8 bits.

CIFAR-10 (Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", 2009):
50,000 training and 10,000 test images, 8 bits per channel (256 levels), for the discrete
likelihoods; a seeded validation split is carved from the training images. There is no
binarization for colour images: every split is static, values ``k / 255``.

Files are read from ``root`` laid out as torchvision expects
(``root/cifar-10-batches-py/data_batch_1`` .. ``data_batch_5`` and ``test_batch``): the
Python pickles of the original distribution, dictionaries whose ``b"data"`` is a uint8
array ``[N, 3072]`` (the red, green then blue planes of each image, row by row). They are
read by an unpickler that builds NumPy arrays and nothing else: a file that asks for any
other object (as a hostile pickle would, to run code) is refused before anything runs.
Only with ``download=true`` and files missing does torchvision fetch them.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from torch import Tensor

from vaeflow.data.base import DataSplits, make_splits
from vaeflow.data.download import fetch_with_torchvision
from vaeflow.data.registry import register
from vaeflow.errors import DataError

try:  # NumPy >= 2
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - NumPy 1.x
    from numpy.core.multiarray import _reconstruct

__all__ = ["load_cifar10"]

_FOLDER = "cifar-10-batches-py"
_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
_TEST = "test_batch"
_SIDE = 32

#: The only globals a CIFAR-10 batch needs: what NumPy pickles an array with (the module
#: of ``_reconstruct`` is ``numpy.core`` in files written by NumPy 1, ``numpy._core`` by 2).
_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


@register("cifar10")
def load_cifar10(
    root: str | os.PathLike = "data",
    download: bool = False,
    val_size: int = 5000,
    split_seed: int = 0,
) -> DataSplits:
    r"""Loads CIFAR-10 from ``root/cifar-10-batches-py``.

    Arguments:
        root: the directory holding ``cifar-10-batches-py/``.
        download: let torchvision fetch the files if they are missing.
        val_size: training images moved to the validation split.
        split_seed: seed of the train/validation partition.

    Returns:
        Static splits of shape ``[N, 3, 32, 32]``, values ``k / 255`` (``levels=256``).

    References:
        | Learning Multiple Layers of Features from Tiny Images (Krizhevsky, 2009)
        | https://www.cs.toronto.edu/~kriz/learning-features-2009-TR.pdf
    """
    root = Path(root).expanduser()
    base = root / _FOLDER
    hint = (
        f"unpack cifar-10-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html) into {root} "
        f"so that {base} holds data_batch_1..5 and test_batch (dataset.root={root})"
    )
    names = [*_TRAIN, _TEST]
    missing = [base / name for name in names if not (base / name).is_file()]
    if missing:
        if not download:
            raise DataError(f"cifar10: {missing[0]} not found; {hint} or set dataset.download=true")
        fetch_with_torchvision("cifar10", "CIFAR10", root, hint)
        missing = [base / name for name in names if not (base / name).is_file()]
        if missing:
            raise DataError(f"cifar10: torchvision's download left no {missing[0]}; {hint}")
    train = np.concatenate([_read_batch(base / name, hint) for name in _TRAIN])
    test = _read_batch(base / _TEST, hint)
    return make_splits(
        "cifar10", _to_unit(train), _to_unit(test), val_size=val_size, split_seed=split_seed,
        binarize="none", levels=256,
    )  # fmt: skip


class _BatchUnpickler(pickle.Unpickler):
    r"""An unpickler that builds NumPy arrays, dictionaries, lists and strings, and
    refuses every other global (functions, classes) with a :class:`DataError`."""

    def __init__(self, file: BinaryIO, path: Path, hint: str) -> None:
        super().__init__(file, encoding="bytes")  # the batches were pickled by Python 2
        self.path = path
        self.hint = hint

    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED.get((module, name))
        if allowed is None:
            raise DataError(
                f"cifar10: {self.path} is not a CIFAR-10 batch (it asks to load {module}.{name}); "
                f"replace it with a fresh copy (delete it and set dataset.download=true, or {self.hint})"
            )
        return allowed


def _read_batch(path: Path, hint: str) -> np.ndarray:
    r"""The images of one batch file, uint8 ``[N, 3, 32, 32]``."""
    fresh = f"replace it with a fresh copy (delete it and set dataset.download=true, or {hint})"
    try:
        with open(path, "rb") as f:
            batch = _BatchUnpickler(f, path, hint).load()
    except DataError:
        raise
    except Exception as e:  # a corrupt pickle can fail in many ways; all mean "not a batch"
        reason = " ".join(str(e).split()) or type(e).__name__
        raise DataError(f"cifar10: {path} is not a readable CIFAR-10 batch ({reason}); {fresh}") from None
    data = batch.get(b"data", batch.get("data")) if isinstance(batch, dict) else None
    size = 3 * _SIDE * _SIDE
    if not (
        isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == size
    ):
        if not isinstance(batch, dict):
            found = f"it holds a {type(batch).__name__}, not a dictionary"
        elif data is None:
            found = "it has no b'data' entry"
        else:
            kind = f"{data.dtype} {list(data.shape)}" if isinstance(data, np.ndarray) else type(data).__name__
            found = f"its b'data' is {kind}"
        raise DataError(
            f"cifar10: {path} is not a CIFAR-10 batch ({found}; a batch is a dictionary whose b'data' is uint8 [N, {size}]); {fresh}"
        )
    return data.reshape(-1, 3, _SIDE, _SIDE)


def _to_unit(pixels: np.ndarray) -> Tensor:
    return torch.from_numpy(pixels).to(torch.float32).div_(255.0)
