r"""Datasets: in-memory splits, the registry and every registered loader."""

from vaeflow.data import binarized_mnist, digits, mnist, omniglot  # noqa: F401  (registers loaders)
from vaeflow.data.base import (
    BatchLoader,
    DataSplits,
    Split,
    binarize_fixed,
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
    "load_dataset",
    "register",
    "seeded_subset",
    "split_indices",
]
