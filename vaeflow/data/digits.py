r"""scikit-learn's bundled 8x8 digits: the embedded default dataset (no download).

1,797 grayscale images with values 0..16 (Alpaydin & Kaynak, UCI "Optical Recognition of
Handwritten Digits", 1998). With ``binarize=dynamic`` (the
default) ``pixel / 16`` is the Bernoulli probability of each pixel: training images are
binarized afresh at each draw, validation and test images once, with a fixed seed.
``binarize=none`` keeps the 17 levels for the discrete likelihoods.
"""

from __future__ import annotations

import torch

from vaeflow.data.base import DataSplits, make_splits
from vaeflow.data.registry import register

__all__ = ["load_digits"]


@register("digits")
def load_digits(
    root: str | None = None,
    download: bool = False,
    val_size: int = 200,
    test_size: int = 300,
    split_seed: int = 0,
    binarize: str = "dynamic",
    binarize_seed: int = 1,
) -> DataSplits:
    r"""Loads the digits with seeded train/validation/test splits.

    Arguments:
        root: unused (the data ships with scikit-learn).
        download: unused.
        val_size: images in the validation split.
        test_size: images in the test split.
        split_seed: seed of the random partition.
        binarize: ``dynamic``, ``static`` or ``none`` (the 17 levels ``0..16`` as they
            are), as in :func:`~vaeflow.data.base.make_splits`.
        binarize_seed: seed of the fixed binarizations of validation and test.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    probs = torch.as_tensor(sklearn_digits().images, dtype=torch.float32).div_(16.0)
    probs = probs.unsqueeze(1)  # [N, 1, 8, 8]
    return make_splits(
        "digits", probs, val_size=val_size, test_size=test_size, split_seed=split_seed,
        binarize=binarize, binarize_seed=binarize_seed, levels=17,
    )  # fmt: skip
