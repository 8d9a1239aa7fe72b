"""Helpers of the training tests: small random datasets, and a stop request at a given step."""

from __future__ import annotations

import signal

import torch

from vaeflow.data import DataSplits, Split
from vaeflow.training import Hook


def random_splits(shape: tuple[int, ...], sizes: tuple[int, int, int], p: float = 0.3) -> DataSplits:
    """Seeded random binary images: a dynamically binarized train split, static val and test."""
    generator = torch.Generator().manual_seed(0)
    train, val, test = (torch.bernoulli(torch.full((n, *shape), p), generator=generator) for n in sizes)
    return DataSplits("random", Split(train, dynamic=True), Split(val), Split(test))


class SigtermAt(Hook):
    """Asks the run to stop, as the SIGTERM handler does, right after step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_batch(self, trainer) -> None:
        if trainer.state.step == self.step:
            trainer.stop.signal = signal.SIGTERM
