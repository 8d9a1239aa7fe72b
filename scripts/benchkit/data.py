r"""The benchmark's data: static binarized MNIST when it is there, seeded random binary
images of the same shape otherwise, and the validation images the ELBO is measured on."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import torch

from vaeflow.data import BatchLoader, DataSplits, Split, load_dataset, seeded_subset

__all__ = ["ROOT", "DEFAULT_DATA", "INPUT_SHAPE", "load_splits", "val_subset", "cycle"]

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "binarized_mnist"
INPUT_SHAPE = (1, 28, 28)


def load_splits(args: argparse.Namespace) -> tuple[DataSplits, str]:
    r"""Static binarized MNIST from ``--data-root``, or seeded random binary images."""
    root = Path(args.data_root).expanduser()
    if not args.random_data and (root / "binarized_mnist_train.amat").is_file():
        data = load_dataset({"name": "binarized_mnist", "root": str(root), "download": False})
        return data, f"binarized_mnist ({root})"
    g = torch.Generator().manual_seed(12345)
    sizes = {"train": args.random_train, "val": 1000, "test": 1000}
    splits = {
        k: Split(torch.bernoulli(torch.full((n, *INPUT_SHAPE), 0.13), generator=g)) for k, n in sizes.items()
    }
    why = "--random-data" if args.random_data else f"{root} not found"
    return DataSplits("random", **splits), f"RANDOM binary images, p=0.13 ({why}): ELBOs are not MNIST's"


def val_subset(data: DataSplits, n: int) -> torch.Tensor:
    r"""``n`` validation images (0: all), picked by vaeflow's one seeded-subset rule."""
    return data.val.images[seeded_subset(len(data.val), n)]


def cycle(loader: BatchLoader) -> Iterator[torch.Tensor]:
    r"""The loader's batches, epoch after epoch."""
    epoch = 0
    while True:
        yield from loader.epoch(epoch)
        epoch += 1
