r"""In-memory dataset splits and a fast batch iterator.

Every dataset vaeflow knows is small enough to live in memory as one tensor, so a split
is a tensor of images ``[N, C, H, W]`` with values in ``[0, 1]`` rather than a
``torch.utils.data.Dataset`` with per-item Python calls. A split is either *static*
(already binary) or *dynamic*: its values are Bernoulli probabilities and every time an
image is drawn for training a fresh binary sample is taken (dynamic binarization, as in
Burda et al. 2016). Validation and test splits are always static: a dynamic source is
binarized once with a fixed seed (:func:`binarize_fixed`) so that every run and every
evaluation sees the same bits.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from vaeflow.errors import ConfigError
from vaeflow.randomness import Stream, stream_seed

__all__ = [
    "dynamic_splits",
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
    """

    images: Tensor
    dynamic: bool = False

    def __post_init__(self) -> None:
        if self.images.dim() != 4:
            raise ValueError(f"images must be [N, C, H, W], got {tuple(self.images.shape)}")
        self.images = self.images.to(torch.float32).contiguous()

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, index: Tensor) -> Split:
        return Split(self.images[index], self.dynamic)


@dataclass
class DataSplits:
    r"""The train, validation and test splits of a dataset."""

    name: str
    train: Split
    val: Split
    test: Split

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
        self.dynamic = split.dynamic
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
            if i >= skip:
                yield x


def dynamic_splits(
    name: str,
    train: Tensor,
    test: Tensor,
    val_size: int,
    split_seed: int,
    binarize_seed: int,
) -> DataSplits:
    r"""Splits of a dataset of Bernoulli probabilities, by the house conventions.

    ``val_size`` images of ``train`` (chosen with ``split_seed``) become the validation
    split. The rest of ``train`` is dynamic; validation and test are binarized once, with
    ``binarize_seed`` and ``binarize_seed + 1``.

    Arguments:
        name: the dataset's name.
        train: training probabilities ``[N, C, H, W]``.
        test: test probabilities ``[M, C, H, W]``.
        val_size: images moved from training to validation.
        split_seed: seed of the partition.
        binarize_seed: seed of the fixed binarizations.
    """
    n = train.shape[0]
    if not 1 <= val_size < n:
        raise ConfigError(
            f"dataset.val_size={val_size} must be >= 1 and leave training images out of the {n} of {name}"
        )
    val_idx, train_idx = split_indices(n, [val_size], split_seed)
    return DataSplits(
        name=name,
        train=Split(train[train_idx], dynamic=True),
        val=Split(binarize_fixed(train[val_idx], binarize_seed)),
        test=Split(binarize_fixed(test, binarize_seed + 1)),
    )
