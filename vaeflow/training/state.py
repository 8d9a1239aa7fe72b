r"""The state of a training run that is not the model's or the optimizer's: counters, the
history, the best validation figure, and the statistics of the epoch under way.

Each part saves and restores itself symmetrically (``state_dict`` / ``load_state_dict``),
as plain containers that ``torch.load(weights_only=True)`` reads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

__all__ = ["TrainingState", "EpochStats"]


@dataclass
class TrainingState:
    r"""Counters and records of a run.

    Attributes:
        epoch: epochs completed.
        step: batches trained on (a step skipped for a non-finite loss or gradient counts).
        train_time: seconds spent in training epochs (validation excluded).
        images_seen: images of the steps that were not skipped.
        history: one record per finished epoch (what ``history.jsonl`` holds).
        last_iw: the latest validation IW-NLL estimate.
        best: the best validation score so far (the validation value of the training bound:
            the ELBO, or the IW bound of an ``iwae`` objective), the validation ELBO of that
            epoch and the epoch (``best.pt``'s).
        partial: the state of an epoch interrupted inside (:meth:`EpochStats.state_dict`
            with ``batches`` and ``time``), or ``None`` at an epoch's end.
    """

    epoch: int = 0
    step: int = 0
    train_time: float = 0.0
    images_seen: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    last_iw: float | None = None
    best: dict[str, float] = field(default_factory=lambda: {"score": -math.inf, "val_elbo": -math.inf, "epoch": 0})
    partial: dict[str, Any] | None = None

    def improve(self, score: float, val_elbo: float, min_delta: float, finite_weights: bool) -> bool:
        r"""Records epoch :attr:`epoch`'s validation score (and ELBO); whether the score beats
        the best by more than ``min_delta`` (never with non-finite figures or weights)."""
        improved = score > self.best["score"] + min_delta and math.isfinite(score) and finite_weights
        if improved:
            self.best = {"score": score, "val_elbo": val_elbo, "epoch": self.epoch}
        return improved

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "step": self.step,
            "train_time": self.train_time,
            "images_seen": self.images_seen,
            "history": [dict(h) for h in self.history],
            "last_iw": self.last_iw,
            "best": dict(self.best),
            "partial": self.partial,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.train_time, self.images_seen = float(state["train_time"]), int(state["images_seen"])
        self.history = [dict(h) for h in state["history"]]
        self.last_iw = state.get("last_iw")
        self.best = dict(state["best"])
        self.best.setdefault("score", self.best["val_elbo"])  # checkpoints from before the IW bound chose
        self.partial = state.get("partial")


class EpochStats:
    r"""The statistics of the epoch under way, summed on the device.

    A step gives batch sums of named per-example figures (``elbo``, ``rec``, ...) and
    whether it was taken; the sums of the steps taken and their images stay on the device
    until :meth:`means` reads them, at logging intervals and at the epoch's end, so that a
    training step never waits for the host.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.names: list[str] = []
        self.sums = torch.zeros(0, dtype=torch.float64, device=device)
        self.seen = torch.zeros((), dtype=torch.float64, device=device)

    def add(self, stats: dict[str, Tensor], taken: Tensor, batch: int) -> None:
        r"""Adds a step's batch sums where ``taken`` (a boolean tensor) is true."""
        if not self.names:
            self.names = list(stats)
            self.sums = torch.zeros(len(stats), dtype=torch.float64, device=self.device)
        values = torch.stack([stats[name] for name in self.names]).double()
        self.sums.add_(torch.where(taken, values, 0.0))
        self.seen.add_(taken.double() * batch)

    def means(self) -> tuple[dict[str, float], int]:
        r"""``({name: mean per image}, images)`` of the steps taken so far (a host read)."""
        *sums, seen = torch.cat([self.sums, self.seen[None]]).tolist()
        return {name: value / max(seen, 1.0) for name, value in zip(self.names, sums)}, int(seen)

    def state_dict(self) -> dict[str, Any]:
        return {"names": list(self.names), "sums": self.sums.cpu(), "seen": float(self.seen)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        sums = state["sums"].double()
        names = state.get("names")
        if names is None:  # a version-1 checkpoint: the sums of rec, kl and loss
            names, sums = ["elbo", "rec", "kl", "loss"], torch.stack([sums[0] - sums[1], *sums])
        self.names = list(names)
        self.sums = sums.to(self.device)
        self.seen = torch.tensor(float(state["seen"]), dtype=torch.float64, device=self.device)
