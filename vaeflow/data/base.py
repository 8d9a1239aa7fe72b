r"""In-memory dataset splits and a fast batch iterator.

Every dataset vaeflow knows is small enough to live in memory as one tensor, so a split
is a tensor of images ``[N, C, H, W]`` with values in ``[0, 1]`` rather than a
``torch.utils.data.Dataset`` with per-item Python calls. A split is either *static* (its
values are the data: binary, ``levels`` discrete values, or continuous) or *dynamic*: its
values are Bernoulli probabilities and every time an image is drawn for training a fresh
binary sample is taken (dynamic binarization, as in Burda et al. 2016). Validation and test
splits are always static: a dynamic source is binarized once with a fixed seed
(:func:`binarize_fixed`) so that every run and every evaluation sees the same bits.
:func:`make_splits` applies these conventions (and ``dataset.binarize``) for every loader.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from vaeflow.errors import ConfigError
from vaeflow.randomness import Stream, stream_seed

__all__ = [
    "BINARIZE",
    "make_splits",
    "check_split_size",
    "split_size",
    "dequantize",
    "dequantized",
    "Split",
    "DataSplits",
    "binarize_fixed",
    "split_indices",
    "seeded_subset",
    "BatchLoader",
]


@dataclass
class Split:
    r"""One split held in memory.

    Arguments:
        images: ``[N, C, H, W]`` float32 in ``[0, 1]``.
        dynamic: if true, ``images`` are Bernoulli probabilities, binarized at each draw.
        dequantize: if set (to the data's levels ``L``), every draw is dequantized afresh:
            ``(k + u) / L`` for the value ``k / (L - 1)``, ``u ~ U[0, 1)`` (for a density
            likelihood, :func:`dequantized`).
    """

    images: Tensor
    dynamic: bool = False
    dequantize: int | None = None

    def __post_init__(self) -> None:
        if self.images.dim() != 4:
            raise ValueError(f"images must be [N, C, H, W], got {tuple(self.images.shape)}")
        self.images = self.images.to(torch.float32).contiguous()

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, index: Tensor) -> Split:
        return Split(self.images[index], self.dynamic, self.dequantize)


@dataclass
class DataSplits:
    r"""The train, validation and test splits of a dataset, and what its pixels are: values
    ``k / (levels - 1)`` for ``k = 0 .. levels - 1`` (``levels=2``: binary, including a
    dynamically binarized split's draws), or continuous in ``[0, 1]`` (``levels=None``)."""

    name: str
    train: Split
    val: Split
    test: Split
    levels: int | None = 2  #: discrete values per pixel (2: binary, 256: 8 bits); None: continuous

    @property
    def shape(self) -> tuple[int, int, int]:
        r"""Image shape ``(C, H, W)``."""
        return tuple(self.train.images.shape[1:])  # type: ignore[return-value]

    def __getitem__(self, split: str) -> Split:
        if split not in ("train", "val", "test"):
            raise KeyError(f"unknown split {split!r}: use train, val or test")
        return getattr(self, split)


def binarize_fixed(probs: Tensor, seed: int) -> Tensor:
    r"""A seeded, one-off Bernoulli binarization of ``probs`` (same bits on every call)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.bernoulli(probs.to(torch.float32), generator=generator)


def dequantize(images: Tensor, levels: int, generator: torch.Generator | None = None) -> Tensor:
    r"""Uniform dequantization: the value ``k / (levels - 1)`` becomes ``(k + u) / levels``
    with ``u ~ U[0, 1)``, a point of the k-th of ``levels`` equal bins of ``[0, 1)``."""
    k = torch.round(images * (levels - 1))
    u = torch.rand(images.shape, generator=generator, device=images.device, dtype=images.dtype)
    return (k + u) / levels


def dequantized(data: DataSplits, seed: int = 0) -> DataSplits:
    r"""``data`` for a density likelihood (:attr:`~vaeflow.likelihoods.Likelihood.dequantizes`):
    the training split dequantized afresh at every draw, validation and test once, with seeds
    from ``(seed, Stream.DEQUANTIZE, split)``, so that every run and every evaluation scores
    the same values (as a dynamic source's validation and test bits are fixed)."""
    if data.levels is None:
        return data
    fixed = {}
    for index, name in enumerate(("val", "test")):
        generator = torch.Generator().manual_seed(stream_seed(seed, Stream.DEQUANTIZE, index))
        fixed[name] = Split(dequantize(data[name].images, data.levels, generator))
    train = Split(data.train.images, data.train.dynamic, data.levels)
    return DataSplits(data.name, train, fixed["val"], fixed["test"], data.levels)


def split_indices(n: int, sizes: list[int], seed: int) -> list[Tensor]:
    r"""A seeded random partition of ``range(n)`` into parts of the given sizes.

    The last part takes whatever is left when ``sum(sizes) < n``.
    """
    if sum(sizes) > n:
        raise ValueError(f"split sizes {sizes} need {sum(sizes)} items, only {n} available")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    parts, start = [], 0
    for size in sizes:
        parts.append(perm[start : start + size])
        start += size
    parts.append(perm[start:])
    return parts


def seeded_subset(n: int, limit: int | None, seed: int = 0) -> Tensor:
    r"""The one rule by which vaeflow picks "a random ``limit`` of ``n`` examples": the
    first ``limit`` of a permutation seeded by ``(seed, Stream.SUBSET)``, in file order
    (sorted). All of ``range(n)`` when ``limit`` is ``None``, 0 or at least ``n``.

    The trainer's test figure on N images and ``vaeflow eval limit=N`` score the same
    images (both with seed 0 by default), and so do the report's sample rows; a test file
    sorted by class (as static binarized MNIST's is) needs a random subset, never its
    first N lines.

    Example:
        >>> seeded_subset(10, 3, seed=0).tolist() == seeded_subset(10, 3, seed=0).tolist()
        True
        >>> seeded_subset(5, None).tolist()
        [0, 1, 2, 3, 4]
    """
    if not limit or limit >= n:
        return torch.arange(n)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(stream_seed(seed, Stream.SUBSET)))
    return perm[: int(limit)].sort().values


class BatchLoader:
    r"""Iterates over a split in (optionally shuffled) batches on a device.

    The images are moved to ``device`` once. Epoch ``e``'s order and dynamic binarization
    come from a generator seeded by ``(seed, Stream.EPOCH, e)``: the same on every run with
    that seed, so that nothing needs saving for a resumed run to see the same data, and an
    epoch interrupted after ``skip`` batches is replayed with the same order and bits.

    Arguments:
        split: the split to iterate over.
        batch_size: images per batch.
        shuffle: draw a new random order each epoch.
        seed: the run's seed.
        device: where batches live.
        drop_last: drop a final incomplete batch.
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        device: torch.device | str = "cpu",
        drop_last: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        self.images = split.images.to(self.device)
        self.dynamic, self.dequantize = split.dynamic, split.dequantize
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.generator = torch.Generator(device=self.device)

    def __len__(self) -> int:
        n = self.images.shape[0]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def num_images(self) -> int:
        return self.images.shape[0]

    def __iter__(self) -> Iterator[Tensor]:
        return self.epoch(0)

    def epoch(self, index: int, skip: int = 0) -> Iterator[Tensor]:
        r"""The batches of epoch ``index`` (0 for the first), without the first ``skip``
        ones (drawn and dropped, so that the rest come out as in an uninterrupted epoch)."""
        n = self.images.shape[0]
        self.generator.manual_seed(stream_seed(self.seed, Stream.EPOCH, index))
        order = torch.randperm(n, generator=self.generator, device=self.device) if self.shuffle else None
        for i in range(len(self)):
            lo, hi = i * self.batch_size, min((i + 1) * self.batch_size, n)
            x = self.images[order[lo:hi]] if order is not None else self.images[lo:hi]
            if self.dynamic:
                x = torch.bernoulli(x, generator=self.generator)
            if self.dequantize:
                x = dequantize(x, self.dequantize, self.generator)
            if i >= skip:
                yield x


def check_split_size(key: str, value: Any) -> None:
    r"""Refuses a ``dataset.<key>`` that is neither a count (an integer >= 1) nor a fraction
    in ``(0, 1)``."""
    count = isinstance(value, int) and not isinstance(value, bool) and value >= 1
    fraction = isinstance(value, float) and 0 < value < 1
    if not (count or fraction):
        raise ConfigError(
            f"dataset.{key}={value}: use a number of images (an integer >= 1) or a fraction of them in (0, 1)"
        )


def split_size(value: int | float, n: int) -> int:
    r"""The number of images that ``value`` (checked by :func:`check_split_size`) carves
    from ``n``: a count as it is, a fraction of ``n`` rounded to the nearest integer (halves
    up), at least 1.

    Example:
        >>> split_size(7, 100), split_size(0.1, 30), split_size(0.05, 10), split_size(0.1, 4)
        (7, 3, 1, 1)
    """
    if isinstance(value, int):
        return value
    return max(1, math.floor(value * n + 0.5))


BINARIZE = ("dynamic", "static", "none")


def make_splits(
    name: str,
    train: Tensor,
    test: Tensor | None = None,
    *,
    val: Tensor | None = None,
    val_size: int = 0,
    test_size: int = 0,
    split_seed: int = 0,
    binarize: str = "none",
    binarize_seed: int = 1,
    levels: int | None = 256,
) -> DataSplits:
    r"""The splits of a dataset of pixel values in ``[0, 1]``, by the house conventions.

    Splits that the files do not give are carved from ``train`` by one seeded partition
    (:func:`split_indices` with ``split_seed``): ``val_size`` images for validation when
    ``val`` is ``None``, then ``test_size`` for testing when ``test`` is ``None``.

    ``binarize`` (``dataset.binarize``) says what the pixels become:

    - ``dynamic``: the values are Bernoulli probabilities; training images are binarized
      afresh at every draw (Burda et al., 2016), validation and test once, with
      ``binarize_seed`` and ``binarize_seed + 1``;
    - ``static``: every split binarized once (training with ``binarize_seed + 2``);
    - ``none``: the values as they are, ``levels`` of them per pixel (``k / (levels - 1)``;
      ``None`` for continuous data).

    Arguments:
        name: the dataset's name (for messages).
        train: training values ``[N, C, H, W]``.
        test: test values, or ``None`` to carve ``test_size`` images from ``train``.
        val: validation values, or ``None`` to carve ``val_size`` images from ``train``.
        val_size: images carved for validation (when ``val`` is ``None``).
        test_size: images carved for testing (when ``test`` is ``None``).
        split_seed: seed of the partition.
        binarize: ``dynamic``, ``static`` or ``none``.
        binarize_seed: seed of the fixed binarizations.
        levels: discrete values per pixel of the data when ``binarize="none"``.
    """
    if binarize not in BINARIZE:
        raise ConfigError(f"dataset.binarize={binarize!r} is not one of {', '.join(BINARIZE)}")
    carve = {key: size for key, size, given in (("val_size", val_size, val), ("test_size", test_size, test))
             if given is None}  # fmt: skip
    n = train.shape[0]
    for key, size in carve.items():
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ConfigError(f"dataset.{key}={size!r} must be an integer >= 1 for {name}")
    sizes = list(carve.values())
    if sum(sizes) >= n:
        said = " and ".join(f"dataset.{key}={size}" for key, size in carve.items())
        raise ConfigError(f"{said} leave no training images of the {n} of {name}: make them smaller")
    parts = split_indices(n, sizes, split_seed)
    carved = iter(train[idx] for idx in parts[:-1])
    val = next(carved) if val is None else val
    test = next(carved) if test is None else test
    train = train[parts[-1]] if sizes else train
    if binarize == "none":
        return DataSplits(name, Split(train), Split(val), Split(test), levels=levels)
    return DataSplits(
        name,
        train=Split(train, dynamic=True)
        if binarize == "dynamic"
        else Split(binarize_fixed(train, binarize_seed + 2)),
        val=Split(binarize_fixed(val, binarize_seed)),
        test=Split(binarize_fixed(test, binarize_seed + 1)),
        levels=2,
    )
