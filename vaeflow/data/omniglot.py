r"""Omniglot: handwritten characters of 50 alphabets, dynamically binarized.

Omniglot (Lake, Salakhutdinov & Tenenbaum, "Human-level concept learning through
probabilistic program induction", Science 2015): 1,623 characters, each drawn by 20
people, as 105x105 black-on-white PNGs. The *background* set (30 alphabets, 19,280
images) gives the training and validation splits, the *evaluation* set (20 alphabets,
13,180 images) the test split.

Each image is shrunk to 28x28 by area averaging (an antialiased box filter: a pixel's
value is the fraction of its area covered by ink) and inverted so that strokes are 1;
that value is its Bernoulli probability. The binarization conventions are those of
MNIST (:func:`vaeflow.data.base.dynamic_splits`).

Files are read from ``root`` laid out as torchvision expects
(``root/omniglot-py/images_background/<alphabet>/<character>/*.png`` and
``images_evaluation``), without writing anything there. Only with ``download=true`` and a
set missing does torchvision fetch it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from vaeflow.data.base import DataSplits, make_splits
from vaeflow.data.download import fetch_with_torchvision
from vaeflow.data.registry import register
from vaeflow.errors import DataError

__all__ = ["load_omniglot"]

_FOLDER = "omniglot-py"
_SETS = {"train": "images_background", "test": "images_evaluation"}
_SIDE = 28


@register("omniglot")
def load_omniglot(
    root: str | os.PathLike = "data",
    download: bool = False,
    val_size: int = 1345,
    split_seed: int = 0,
    binarize: str = "dynamic",
    binarize_seed: int = 1,
) -> DataSplits:
    r"""Loads Omniglot from ``root/omniglot-py``.

    Arguments:
        root: the directory holding ``omniglot-py/``.
        download: let torchvision fetch a missing image set.
        val_size: background images moved to the validation split.
        split_seed: seed of the train/validation partition.
        binarize: ``dynamic``, ``static`` or ``none`` (the 8-bit ink of the resized images),
            as in :func:`~vaeflow.data.base.make_splits`.
        binarize_seed: seed of the fixed binarizations (validation; test uses
            ``binarize_seed + 1``).

    Returns:
        Splits of shape ``[N, 1, 28, 28]`` (with ``binarize=dynamic``: train dynamic,
        validation and test static).

    References:
        | Human-level concept learning through probabilistic program induction
        | (Lake et al., 2015)
        | https://doi.org/10.1126/science.aab3050
    """
    root = Path(root).expanduser()
    base = root / _FOLDER
    hint = (
        f"unpack images_background.zip and images_evaluation.zip "
        f"(github.com/brendenlake/omniglot) into {base} (dataset.root={root})"
    )
    probs = {}
    for split, folder in _SETS.items():
        directory = base / folder
        if not directory.is_dir():
            if not download:
                raise DataError(f"omniglot: {directory} not found; {hint} or set dataset.download=true")
            fetch_with_torchvision("omniglot", "Omniglot", root, hint, background=split == "train")
        probs[split] = _read_set(directory, hint)
    return make_splits(
        "omniglot", probs["train"], probs["test"], val_size=val_size, split_seed=split_seed,
        binarize=binarize, binarize_seed=binarize_seed, levels=256,
    )  # fmt: skip


def _read_set(directory: Path, hint: str) -> Tensor:
    r"""Every ``<alphabet>/<character>/*.png`` under ``directory``, in sorted order, as ink
    probabilities ``[N, 1, 28, 28]``."""
    paths = sorted(directory.glob("*/*/*.png"))
    if not paths:
        raise DataError(f"omniglot: no images in {directory} (expected <alphabet>/<character>/*.png); {hint}")
    images = np.empty((len(paths), _SIDE, _SIDE), dtype=np.uint8)
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as image:
                small = image.convert("L").resize((_SIDE, _SIDE), Image.Resampling.BOX)
        except (OSError, ValueError, SyntaxError) as e:
            raise DataError(f"omniglot: {path} is not a readable image ({e}); replace it, {hint}") from None
        images[i] = np.asarray(small)
    ink = np.subtract(255, images, dtype=np.float32)  # strokes are black: invert
    return torch.from_numpy(ink).unsqueeze(1).div_(255.0)
