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

__all__ = ["dynamic_splits", "Split", "DataSplits", "binarize_fixed", "split_indices", "BatchLoader"]


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


class BatchLoader:
    r"""Iterates over a split in (optionally shuffled) batches on a device.

    The images are moved to ``device`` once; shuffling and dynamic binarization draw from
    the loader's own generator, whose state is part of a checkpoint, so that a resumed run
    sees the same data order as an uninterrupted one.

    Arguments:
        split: the split to iterate over.
        batch_size: images per batch.
        shuffle: draw a new random order each epoch.
        seed: seed of the loader's generator.
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
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    def __len__(self) -> int:
        n = self.images.shape[0]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def num_images(self) -> int:
        return self.images.shape[0]

    def __iter__(self) -> Iterator[Tensor]:
        return self.epoch()

    def epoch(self, skip: int = 0) -> Iterator[Tensor]:
        r"""The batches of one epoch, without the first ``skip`` ones.

        The generator's state at the start of the epoch is kept (:meth:`state_dict`), so
        that an epoch interrupted after ``skip`` batches is resumed with the same order and
        the same binarization: the skipped batches are drawn again and dropped.
        """
        n = self.images.shape[0]
        self.epoch_start_state = self.generator.get_state()
        order = torch.randperm(n, generator=self.generator, device=self.device) if self.shuffle else None
        for i in range(len(self)):
            lo, hi = i * self.batch_size, min((i + 1) * self.batch_size, n)
            x = self.images[order[lo:hi]] if order is not None else self.images[lo:hi]
            if self.dynamic:
                x = torch.bernoulli(x, generator=self.generator)
            if i >= skip:
                yield x

    def state_dict(self) -> dict:
        r"""The generator's state now and at the start of the current epoch."""
        state = {"generator": self.generator.get_state()}
        if hasattr(self, "epoch_start_state"):
            state["epoch_start"] = self.epoch_start_state
        return state

    def load_state_dict(self, state: dict, mid_epoch: bool = False) -> None:
        r"""Restores :meth:`state_dict`; with ``mid_epoch`` the generator goes back to the
        start of the interrupted epoch, to be replayed by ``epoch(skip=...)``."""
        self.generator.set_state(state["epoch_start"] if mid_epoch else state["generator"])


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
