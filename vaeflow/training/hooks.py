r"""What happens around the loop without being the loop: logging for people and for
machines, progress on the terminal, and early stopping.

A :class:`Hook` is told about the run's start, its logged steps, its epochs and its end;
the loop passes it dictionaries of figures it does not interpret, and the hooks own what
they write: TensorBoard (:class:`TensorBoardHook`), ``history.jsonl``
(:class:`HistoryHook`), the progress bar or log lines (:class:`ProgressHook`), and the
decision to stop early (:class:`EarlyStopping`, whose count is part of a checkpoint).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig
from torch import Tensor

from vaeflow.checkpoint import write_atomic
from vaeflow.progress import Reporter

if TYPE_CHECKING:
    from vaeflow.training.loop import Trainer

__all__ = ["Hook", "TensorBoardHook", "HistoryHook", "ProgressHook", "EarlyStopping", "HISTORY_FILE"]

#: the per-epoch record of a run, one JSON object per line, in its directory
HISTORY_FILE = "history.jsonl"


class Hook:
    r"""Does nothing at each point of the run; subclasses override what they need."""

    def on_fit_start(self, trainer: Trainer) -> None:
        r"""Before the first epoch (after a resume: before the first epoch still to run)."""

    def on_epoch_start(self, trainer: Trainer, epoch: int, batches_done: int) -> None:
        r"""Before epoch ``epoch`` (counted from 1), ``batches_done`` of which ran before a resume."""

    def on_batch(self, trainer: Trainer) -> None:
        r"""After every step: must not read anything from the device."""

    def on_log(self, trainer: Trainer, scalars: Mapping[str, float]) -> None:
        r"""Every ``trainer.log_every`` steps, with the step's figures (read from the device)."""

    def on_epoch_end(self, trainer: Trainer, record: Mapping[str, Any], extras: Mapping[str, Any]) -> None:
        r"""After an epoch's validation: ``record`` is its line of the history; ``extras``
        holds what is not a number (``improved``, image ``grids``)."""

    def on_fit_end(self, trainer: Trainer, metrics: Mapping[str, Any]) -> None:
        r"""After the test, with what ``metrics.json`` holds."""

    def close(self) -> None:
        r"""Always called at the end, whatever happened."""


class TensorBoardHook(Hook):
    r"""``<run>/tb/``: ``train/*`` every ``log_every`` steps, ``train_epoch/*`` and ``val/*``
    every epoch, the image grids, ``test/*`` and this run's hparams at the end."""

    def __init__(self, run_dir: Path, cfg: DictConfig, purge_step: int | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.cfg = cfg
        self.writer = SummaryWriter(str(Path(run_dir) / "tb"), purge_step=purge_step or None)

    def on_log(self, trainer: Trainer, scalars: Mapping[str, float]) -> None:
        for name, value in scalars.items():
            self.writer.add_scalar(f"train/{name}", value, trainer.state.step)

    def on_epoch_end(self, trainer: Trainer, record: Mapping[str, Any], extras: Mapping[str, Any]) -> None:
        epoch = int(record["epoch"])
        for key, value in record.items():
            if key.startswith("train/"):
                self.writer.add_scalar(f"train_epoch/{key[6:]}", value, epoch)
            elif key.startswith("val/"):
                self.writer.add_scalar(key, value, epoch)
        grids: Mapping[str, Tensor] = extras.get("grids") or {}
        for name, grid in grids.items():
            self.writer.add_image(f"val/{name}", grid, epoch)
        self.writer.flush()

    def on_fit_end(self, trainer: Trainer, metrics: Mapping[str, Any]) -> None:
        for key, value in metrics.items():
            if key.startswith("test/") and isinstance(value, int | float):
                self.writer.add_scalar(key, value, int(metrics["best_epoch"]))
        _write_hparams(self.writer, self.cfg, metrics)

    def close(self) -> None:
        self.writer.close()


class HistoryHook(Hook):
    r"""``<run>/history.jsonl``: one JSON object per finished epoch, for tools (``vaeflow
    report`` draws its curves from it). A resumed run first rewrites it from its
    checkpoint's history, so that epochs after the checkpoint, which it trains again, are
    not there twice."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / HISTORY_FILE

    def on_fit_start(self, trainer: Trainer) -> None:
        if trainer.state.history or self.path.exists():
            text = "".join(_line(record) for record in trainer.state.history)
            write_atomic(self.path, lambda f: f.write(text.encode()))

    def on_epoch_end(self, trainer: Trainer, record: Mapping[str, Any], extras: Mapping[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(_line(record))
            f.flush()
            os.fsync(f.fileno())


def _line(record: Mapping[str, Any]) -> str:
    return json.dumps(dict(record), sort_keys=False, allow_nan=True) + "\n"


class ProgressHook(Hook):
    r"""A rich progress bar on a terminal (its status line refreshed every ``log_every``
    steps) or plain log lines, and one line per epoch."""

    def __init__(self, mode: str, max_epochs: int, steps_per_epoch: int) -> None:
        self.reporter = Reporter(mode, max_epochs, steps_per_epoch)
        self.max_epochs = max_epochs
        self.reporter.__enter__()

    def on_epoch_start(self, trainer: Trainer, epoch: int, batches_done: int) -> None:
        self.reporter.start_epoch(epoch, completed=batches_done)

    def on_batch(self, trainer: Trainer) -> None:
        self.reporter.step()

    def on_log(self, trainer: Trainer, scalars: Mapping[str, float]) -> None:
        means, rate = trainer.epoch_means()
        bound = trainer.objective.bound_name
        if means:
            self.reporter.status(
                f"{_shown(bound)} {means[bound]:.2f}  kl {means['kl']:.2f}  {rate:,.0f} img/s"
            )

    def on_epoch_end(self, trainer: Trainer, record: Mapping[str, Any], extras: Mapping[str, Any]) -> None:
        bound = trainer.objective.bound_name
        line = (
            f"epoch {record['epoch']}/{self.max_epochs}  train {_shown(bound)} {record['train/' + bound]:.2f}  "
            f"val elbo {record['val/elbo']:.2f} (rec {record['val/rec']:.2f}, kl {record['val/kl']:.2f})"
        )
        if bound != "elbo" and f"val/{bound}" in record:
            line += f"  val {_shown(bound)} {record['val/' + bound]:.2f}"
        if "val/iw_nll" in record:
            line += f"  val iw-nll {record['val/iw_nll']:.2f}"
        line += f"  beta {record['train/beta']:.2f}  {record['train/images_per_s']:,.0f} img/s"
        self.reporter.end_epoch(int(record["epoch"]), line + ("  *best" if extras.get("improved") else ""))

    def message(self, line: str) -> None:
        self.reporter.message(line)

    def close(self) -> None:
        self.reporter.__exit__(None, None, None)


class EarlyStopping(Hook):
    r"""Stops the run after ``patience`` epochs without a better validation score (the
    training bound's: the ELBO, or an ``iwae`` run's IW bound; ``None``: never)."""

    def __init__(self, patience: int | None) -> None:
        self.patience, self.bad_epochs = patience, 0

    def on_epoch_end(self, trainer: Trainer, record: Mapping[str, Any], extras: Mapping[str, Any]) -> None:
        self.bad_epochs = 0 if extras.get("improved") else self.bad_epochs + 1

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, int]:
        return {"bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.bad_epochs = int(state["bad_epochs"])


def _shown(name: str) -> str:
    r"""A statistic's name as the progress lines show it (``iw_bound`` as ``iw-bound``)."""
    return name.replace("_", "-")


def _write_hparams(writer: Any, cfg: DictConfig, metrics: Mapping[str, Any]) -> None:
    from torch.utils.tensorboard.summary import hparams

    hparam_dict = {
        "dataset": str(cfg.dataset.name),
        "posterior": str(cfg.posterior.name),
        "depth": int(cfg.posterior.get("depth") or 0),
        "prior": str(cfg.prior.name),
        "likelihood": str((cfg.get("likelihood") or {}).get("name", "bernoulli")),
        "latent_dim": int(cfg.model.latent_dim),
        "objective": str(cfg.objective.name),
        "k": int(cfg.objective.get("k") or cfg.objective.get("samples") or 1),
        "gradient": str(cfg.objective.get("gradient", "reparam")),
        "kl": str(cfg.kl.estimator),
        "lr": float(cfg.optim.lr),
        "batch_size": int(cfg.trainer.batch_size),
        "warmup_epochs": float(cfg.objective.warmup_epochs),
        "seed": int(cfg.seed),
    }
    final = {
        f"hparam/{k.replace('/', '_')}": float(v)
        for k, v in metrics.items()
        if k.startswith(("val/", "test/")) and isinstance(v, int | float)
    }
    # Only this run's session records: an experiment summary written by every run of a
    # sweep would make TensorBoard pick one run's at random and hide the columns that differ.
    _, session_start, session_end = hparams(hparam_dict, final)
    for summary in (session_start, session_end):
        writer.file_writer.add_summary(summary)
    for tag, value in final.items():
        writer.add_scalar(tag, value)
