r"""Statically binarized MNIST: the benchmark of most VAE and flow papers.

MNIST digits binarized once by Larochelle & Murray ("The Neural Autoregressive
Distribution Estimator", AISTATS 2011) and shared as three ``.amat`` text files: 50,000
training, 10,000 validation and 10,000 test images of 28x28 pixels. The splits are fixed
and already binary, so every split is static and nothing is random. The test file is
sorted by digit class: evaluate on a seeded random subset, never on its first lines.

With ``download=true`` missing files are fetched from their public location (Hugo
Larochelle's page at the University of Toronto) and checked against their md5.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path

import torch

from vaeflow.data.amat import read_amat
from vaeflow.data.base import DataSplits, Split
from vaeflow.data.registry import register
from vaeflow.errors import DataError

__all__ = ["FILES", "URL", "load_binarized_mnist"]

URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"

FILES = {
    "train": "binarized_mnist_train.amat",
    "val": "binarized_mnist_valid.amat",
    "test": "binarized_mnist_test.amat",
}
_MD5 = {
    "binarized_mnist_train.amat": "db28b1a6ae0fe70cbd3da91acf46e477",
    "binarized_mnist_valid.amat": "bf37822a04e94123630de6a7dfd9c9ef",
    "binarized_mnist_test.amat": "14e41ae11040adba6ab8cb291eda0dd8",
}
_COUNTS = {"train": 50_000, "val": 10_000, "test": 10_000}
_SIDE = 28


@register("binarized_mnist")
def load_binarized_mnist(
    root: str | os.PathLike = "data/binarized_mnist",
    download: bool = False,
) -> DataSplits:
    r"""Loads the three fixed splits of statically binarized MNIST.

    Arguments:
        root: the directory holding ``binarized_mnist_{train,valid,test}.amat``.
        download: fetch missing files from their public location.

    Returns:
        Static splits of shape ``[N, 1, 28, 28]`` with values 0 and 1.

    References:
        | The Neural Autoregressive Distribution Estimator (Larochelle & Murray, 2011)
        | https://proceedings.mlr.press/v15/larochelle11a.html
    """
    root = Path(root).expanduser()
    missing = [name for name in FILES.values() if not (root / name).is_file()]
    if missing and download:
        for name in missing:
            _download(root, name)
    elif missing:
        raise DataError(
            f"binarized_mnist: {root / missing[0]} not found; put the three .amat files in "
            f"dataset.root={root} or set dataset.download=true"
        )
    splits = {split: _read(root / name, _COUNTS[split]) for split, name in FILES.items()}
    return DataSplits(name="binarized_mnist", **splits)


def _read(path: Path, count: int) -> Split:
    try:
        bits = read_amat(path, _SIDE * _SIDE)
    except DataError as e:
        raise DataError(
            f"binarized_mnist: {e}; replace it with a fresh copy (delete it and set "
            f"dataset.download=true, or download it from {URL})"
        ) from None
    if len(bits) != count:
        warnings.warn(
            f"binarized_mnist: {path} has {len(bits)} images, the canonical file has {count}; "
            f"results will not compare with published ones",
            stacklevel=3,
        )
    return Split(torch.from_numpy(bits).view(-1, 1, _SIDE, _SIDE), dynamic=False)


def _download(root: Path, name: str) -> None:
    r"""Downloads one file under a temporary name, then renames it: a failed or
    interrupted download leaves no file that looks complete."""
    from torchvision.datasets.utils import download_url

    partial = f".{name}.{os.getpid()}.part"
    try:
        download_url(URL + name, str(root), filename=partial, md5=_MD5[name])
        os.replace(root / partial, root / name)
    except Exception as e:  # network, disk or checksum: all mean "get it by hand"
        with contextlib.suppress(OSError):
            (root / partial).unlink(missing_ok=True)
        reason = " ".join(str(e).split()) or type(e).__name__
        raise DataError(
            f"binarized_mnist: downloading {URL + name} failed ({reason}); download the three "
            f".amat files from {URL} by hand into dataset.root={root}"
        ) from e
