r"""Datasets: in-memory splits, the registry and every registered loader."""

from vaeflow.data import arrays, binarized_mnist, cifar10, digits, image_folder, mnist, omniglot, svhn  # noqa: F401  (registers loaders)
from vaeflow.data.base import (
    BatchLoader,
    DataSplits,
    Split,
    binarize_fixed,
    dequantized,
    make_splits,
    seeded_subset,
    split_indices,
)
from vaeflow.data.registry import DATASETS, load_dataset, register

__all__ = [
    "DATASETS",
    "BatchLoader",
    "DataSplits",
    "Split",
    "binarize_fixed",
    "dequantized",
    "make_splits",
    "load_dataset",
    "register",
    "seeded_subset",
    "split_indices",
]
