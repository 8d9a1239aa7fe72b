r"""scikit-learn's bundled 8x8 digits: the embedded default dataset (no download).

1,797 grayscale images with values 0..16 (Alpaydin & Kaynak, UCI "Optical Recognition of
Handwritten Digits", 1998). ``pixel / 16`` is the Bernoulli probability of each pixel:
training images are binarized afresh at each draw; validation and test images once, with
a fixed seed.
"""

from __future__ import annotations

import torch

from vaeflow.data.base import DataSplits, Split, binarize_fixed, split_indices
from vaeflow.data.registry import register
from vaeflow.errors import ConfigError

__all__ = ["load_digits"]


@register("digits")
def load_digits(
    root: str | None = None,
    download: bool = False,
    val_size: int = 200,
    test_size: int = 300,
    split_seed: int = 0,
    binarize_seed: int = 1,
) -> DataSplits:
    r"""Loads the digits with seeded train/validation/test splits.

    Arguments:
        root: unused (the data ships with scikit-learn).
        download: unused.
        val_size: images in the validation split.
        test_size: images in the test split.
        split_seed: seed of the random partition.
        binarize_seed: seed of the fixed binarization of validation and test.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    probs = torch.as_tensor(sklearn_digits().images, dtype=torch.float32).div_(16.0)
    probs = probs.unsqueeze(1)  # [N, 1, 8, 8]
    n = probs.shape[0]
    if val_size < 1 or test_size < 1 or val_size + test_size >= n:
        raise ConfigError(
            f"dataset.val_size={val_size} and dataset.test_size={test_size} must be >= 1 "
            f"and leave training images out of {n}"
        )
    val_idx, test_idx, train_idx = split_indices(n, [val_size, test_size], split_seed)
    return DataSplits(
        name="digits",
        train=Split(probs[train_idx], dynamic=True),
        val=Split(binarize_fixed(probs[val_idx], binarize_seed)),
        test=Split(binarize_fixed(probs[test_idx], binarize_seed + 1)),
    )
