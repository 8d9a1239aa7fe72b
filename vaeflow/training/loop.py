r"""The training loop: a :class:`Trainer` puts the parts together and runs the epochs.

::

    run_dir/
      history.jsonl            one JSON object per epoch (HistoryHook), for tools
      tb/                      TensorBoard: train/*, train_epoch/*, val/*, test/*, images, hparams
      checkpoints/last.pt      CheckpointManager's policy (atomic)
      checkpoints/best.pt      the best validation bound so far: the ELBO, or an iwae run's
                               IW bound with its k (never non-finite weights)
      metrics.json             the final figures

The parts, each with one job: the settings' check (:mod:`~vaeflow.training.settings`), the
step and its non-finite guard (:mod:`~vaeflow.training.step`), the run's state with
symmetric save and restore (:mod:`~vaeflow.training.state`), the checkpoint policy and
the resume rules (:mod:`~vaeflow.training.checkpoints`), the measurements under their
own randomness (:mod:`~vaeflow.training.validation`), the hooks that log, show progress
and stop early (:mod:`~vaeflow.training.hooks`) and the signal handling
(:mod:`~vaeflow.training.signals`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from vaeflow.checkpoint import load_checkpoint, write_json_atomic
from vaeflow.data import BatchLoader, DataSplits, load_dataset
from vaeflow.devices import resolve_device
from vaeflow.errors import CheckpointError
from vaeflow.model import model_and_data
from vaeflow.objectives import build_objective, resolve_kl
from vaeflow.progress import progress_mode
from vaeflow.randomness import (
    Stream,
    generator_state,
    global_rng_state,
    restore_generator,
    restore_global_rng,
    seed_everything,
    stream_seed,
)
from vaeflow.resolvers import resume_run_dir  # noqa: F401  (registers ${vaeflow.resume_dir:...})
from vaeflow.training.checkpoints import CheckpointManager, read_resume_checkpoint, resume_checkpoint
from vaeflow.training.hooks import EarlyStopping, HistoryHook, Hook, ProgressHook, TensorBoardHook
from vaeflow.training.settings import build_optimizer, check_settings
from vaeflow.training.signals import Interrupted, StopRequest, stop_on_signals
from vaeflow.training.state import EpochStats, TrainingState
from vaeflow.training.step import NonFiniteGuard, StepResult, TrainStep
from vaeflow.training.validation import Validator, test_figures

__all__ = ["Trainer", "train", "CHECKPOINT_VERSION"]

log = logging.getLogger("vaeflow")

#: 2: per-epoch data seeds (no loader state), the training noise's own generator, the guard
CHECKPOINT_VERSION = 2


class Trainer:
    r"""One training run: checks the settings, builds the model, data and parts, resumes
    from a checkpoint when asked, and trains (:meth:`fit`).

    Everything is checked and read before anything is written, so bad input leaves no
    file behind.

    Arguments:
        cfg: the composed config (``conf/train.yaml``).
        run_dir: the run's output directory.
        multirun: whether this is one job of a sweep (plain progress lines).
        data: splits to train on instead of loading ``cfg.dataset`` (benchmarks, tests).
        hooks: more hooks, told about the run after the built-in ones.
    """

    def __init__(
        self,
        cfg: DictConfig,
        run_dir: str | Path,
        *,
        multirun: bool = False,
        data: DataSplits | None = None,
        hooks: Sequence[Hook] = (),
    ) -> None:
        check_settings(cfg)
        t = cfg.trainer
        self.cfg, self.t = cfg, t
        self.run_dir = Path(run_dir)
        self.device = resolve_device(t.device)
        self.mode = progress_mode(t.progress, multirun)
        resume_from = resume_checkpoint(t.resume, self.run_dir)
        if t.threads:
            torch.set_num_threads(t.threads)
        seed_everything(cfg.seed)  # the model's initialization draws from the global generators

        self.model, self.data = model_and_data(cfg, load_dataset(cfg.dataset) if data is None else data)
        self.model.to(self.device)
        prior_init = torch.Generator().manual_seed(stream_seed(cfg.seed, Stream.PRIOR_INIT, 1))
        self.model.prior.initialize(self.data.train.images, prior_init)  # a resumed run overwrites it
        self.kl = resolve_kl(str(cfg.kl.estimator), self.model, str(cfg.posterior.name), str(cfg.prior.name))
        self.objective = build_objective(cfg.objective, self.model, self.kl, str(cfg.posterior.name))
        #: the validation figure that chooses best.pt and early stopping: the training bound's
        self.selection = f"val/{self.objective.bound_name}"
        self.optimizer = build_optimizer(cfg.optim, self.model.parameters())
        self.n_params = sum(p.numel() for p in self.model.parameters())
        self.generator = torch.Generator(self.device).manual_seed(stream_seed(cfg.seed, Stream.TRAIN_NOISE))
        self.step_fn = TrainStep(
            self.model,
            self.objective,
            self.optimizer,
            self.generator,
            t.grad_clip,
            bool(t.get("compile", False)),
        )
        self.train_loader = BatchLoader(
            self.data.train, t.batch_size, shuffle=True, seed=cfg.seed, device=self.device
        )
        self.validator = Validator(
            self.model, self.data.val, self.kl, t.val_batch_size, t.iw_limit, t.images, self.device
        )
        self.config_dict = OmegaConf.to_container(cfg, resolve=True)

        self.state = TrainingState()
        self.epoch_stats = EpochStats(self.device)
        self.guard = NonFiniteGuard(self.device, t.max_bad_steps)
        self.checkpoints = CheckpointManager(
            self.run_dir, t.checkpoint_every_epochs, t.checkpoint_every_steps
        )
        self.early_stopping = EarlyStopping(t.early_stopping.patience)
        self.stop = StopRequest()
        self.extra_hooks = list(hooks)
        self.hooks: list[Hook] = []
        self._epoch_start = time.perf_counter()
        self.resumed_from = self._resume(resume_from)

    # ------------------------------------------------------------- checkpoints

    def state_dict(self) -> dict[str, Any]:
        r"""The checkpoint: plain containers only (``torch.load(weights_only=True)``)."""
        return {
            "version": CHECKPOINT_VERSION,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "config": self.config_dict,
            **self.state.state_dict(),
            "early_stopping": self.early_stopping.state_dict(),
            "guard": self.guard.state_dict(),
            "rng": global_rng_state(),
            "generators": {"train_noise": generator_state(self.generator)},
            "param_count": self.n_params,
        }

    def _resume(self, path: Path | None) -> Path | None:
        r"""Restores every piece of state from the checkpoint at ``path`` (if any): read onto
        the CPU, then the model and optimizer moved to this run's device, and each generator
        restored on its own device where that device exists here (the log says what not)."""
        if path is None:
            return None
        saved = read_resume_checkpoint(path, self.config_dict)
        try:
            self.model.load_state_dict(saved["model"])
            self.optimizer.load_state_dict(saved["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(
                f"checkpoint {path} does not fit this model ({_first_line(e)}); "
                "resume with the configuration the run was trained with"
            ) from None
        self.state.load_state_dict(saved)
        self.early_stopping.load_state_dict(saved["early_stopping"])
        self.guard.load_state_dict(saved.get("guard", {}))
        if self.state.partial:
            self.epoch_stats.load_state_dict(self.state.partial)
        missing = restore_global_rng(saved["rng"])
        reseed = stream_seed(self.cfg.seed, Stream.TRAIN_NOISE, self.state.step)
        restore_generator(
            self.generator, saved.get("generators", {}).get("train_noise"), reseed, "the training noise"
        )
        for what in missing:
            log.info("resume: %s could not be restored; training does not draw from it", what)
        partial = self.state.partial
        where = (
            f"epoch {self.state.epoch + 1}, batch {partial['batches']}"
            if partial
            else f"epoch {self.state.epoch}"
        )
        log.info("resumed from %s (%s, step %d) on %s", path, where, self.state.step, self.device)
        return path

    # ---------------------------------------------------------------- the loop

    def fit(self) -> dict[str, Any]:
        r"""Trains until ``max_epochs`` or early stopping; returns the final metrics.

        SIGINT and SIGTERM finish the current step, write ``last.pt`` and stop with a
        one-line message saying how to resume (:class:`~vaeflow.training.signals.Interrupted`).
        """
        cfg, t, data = self.cfg, self.t, self.data
        log.info(
            "vaeflow train: %s %s (%d/%d/%d images), posterior=%s, prior=%s, objective %s, kl=%s, "
            "latent_dim=%d, %s parameters, device %s; run dir %s",
            cfg.dataset.name, data.shape, len(data.train), len(data.val), len(data.test),
            cfg.posterior.name, cfg.prior.name, self.objective.label, self.kl, self.model.latent_dim,
            f"{self.n_params:,}", self.device,
            self.run_dir,
        )  # fmt: skip
        stopped = "max_epochs"
        try:
            progress = ProgressHook(self.mode, t.max_epochs, len(self.train_loader))
            self.hooks = [progress]
            self.checkpoints.clear_temporaries()
            self.hooks += [
                TensorBoardHook(self.run_dir, cfg, self.state.step),
                HistoryHook(self.run_dir),
                self.early_stopping,
                *self.extra_hooks,
            ]
            for hook in self.hooks:
                hook.on_fit_start(self)
            with stop_on_signals(self.stop):
                while self.state.epoch < t.max_epochs:
                    train = self.train_epoch()
                    if train is None:  # a signal arrived inside the epoch
                        self.checkpoints.save_last(self.state_dict())
                        raise self._interrupted()
                    self.state.epoch += 1
                    record, extras = self.validate(train)
                    self.state.history.append(record)
                    extras["improved"] = self.state.improve(
                        record[self.selection],
                        record["val/elbo"],
                        float(t.early_stopping.min_delta),
                        self._finite_weights(),
                    )
                    for hook in self.hooks:
                        hook.on_epoch_end(self, record, extras)
                    if extras["improved"]:
                        self.checkpoints.save_best(self.state_dict())
                    if self.stop or self.checkpoints.last_due(self.state.epoch, t.max_epochs):
                        self.checkpoints.save_last(self.state_dict())
                    if self.stop:
                        raise self._interrupted()
                    if self.early_stopping.should_stop:
                        stopped = "early_stopping"
                        progress.message(
                            f"early stopping: no better {self.selection} for {self.early_stopping.bad_epochs} epochs"
                        )
                        break
            return self.finish(stopped)
        finally:
            for hook in self.hooks:
                hook.close()

    def train_epoch(self) -> dict[str, float] | None:
        r"""One pass over the training split (the rest of it, after a resume inside the
        epoch); returns the epoch's means, or ``None`` if a stop signal arrived."""
        t, state = self.t, self.state
        self.model.train()
        partial, state.partial = state.partial, None
        if partial is None:
            self.epoch_stats = EpochStats(self.device)
        batches = int(partial["batches"]) if partial else 0
        self._epoch_start = time.perf_counter() - (float(partial["time"]) if partial else 0.0)
        steps = len(self.train_loader)
        for hook in self.hooks:
            hook.on_epoch_start(self, state.epoch + 1, batches)
        beta = self.objective.beta(state.epoch + batches / steps)
        for x in self.train_loader.epoch(state.epoch, skip=batches):
            beta = self.objective.beta(state.epoch + batches / steps)
            result = self.train_batch(x, beta)
            batches += 1
            for hook in self.hooks:
                hook.on_batch(self)
            if state.step % t.log_every == 0:
                self._log_step(result, beta, x.shape[0])
            if batches < steps and (self.stop or self.checkpoints.step_due(state.step)):
                self._check_guard()
                elapsed = time.perf_counter() - self._epoch_start
                state.partial = {"batches": batches, "time": elapsed, **self.epoch_stats.state_dict()}
                if self.stop:
                    return None
                self.checkpoints.save_last(self.state_dict())
                state.partial = None
        self._check_guard()
        means, seen = self.epoch_stats.means()  # waits for the epoch's last step
        elapsed = time.perf_counter() - self._epoch_start
        state.train_time += elapsed
        state.images_seen += seen
        return means | {"images_per_s": seen / max(elapsed, 1e-9), "beta": beta}

    def train_batch(self, x: torch.Tensor, beta: float) -> StepResult:
        r"""One step on batch ``x`` with KL weight ``beta``, its figures added to the epoch's
        and its outcome to the guard's counts, all on the device."""
        result = self.step_fn(x, beta)
        self.state.step += 1
        self.epoch_stats.add(result.stats, result.taken, x.shape[0])
        self.guard.update(result)
        return result

    def _log_step(self, result: StepResult, beta: float, batch: int) -> None:
        r"""Every ``log_every`` steps: one read of the step's figures for the hooks."""
        self._check_guard()
        names = list(result.stats)
        *values, grad_norm, taken = torch.stack(
            [*(result.stats[n].double() for n in names), result.grad_norm.double(), result.taken.double()]
        ).tolist()
        scalars = {"skipped_steps": float(self.guard.reported)}
        if taken:
            scalars |= {name: value / batch for name, value in zip(names, values)}
            scalars |= {"beta": beta, "lr": self.optimizer.param_groups[0]["lr"], "grad_norm": grad_norm}
        for hook in self.hooks:
            hook.on_log(self, scalars)

    def _check_guard(self) -> None:
        self.guard.check(self.state.step, self.state.epoch + 1, self.checkpoints.best_or_none())

    def epoch_means(self) -> tuple[dict[str, float], float]:
        r"""The means of the epoch so far and its images per second (a host read)."""
        means, seen = self.epoch_stats.means()
        return means, seen / max(time.perf_counter() - self._epoch_start, 1e-9)

    def _finite_weights(self) -> bool:
        return bool(torch.stack([torch.isfinite(p).all() for p in self.model.parameters()]).all())

    def _interrupted(self) -> Interrupted:
        epoch = self.state.epoch + (self.state.partial is not None)
        return Interrupted(self.stop.signal or 2, epoch, self.state.step, self.run_dir)

    # ------------------------------------------------------- per-epoch evaluation

    def validate(self, train: dict[str, float]) -> tuple[dict[str, Any], dict[str, Any]]:
        r"""The epoch's record (its line of ``history.jsonl``): the training means, the
        validation ELBO terms (and the IW bound an ``iwae`` run is chosen by), every
        ``iw_every`` epochs the IW-NLL estimate; and the image grids, for the hooks."""
        t, epoch = self.t, self.state.epoch
        val = self.validator.elbo()
        if self.objective.validation_k is not None:
            val[self.objective.bound_name] = self.validator.iw_bound(self.objective.validation_k)
        if t.iw_every > 0 and (epoch % t.iw_every == 0 or epoch == t.max_epochs):
            self.state.last_iw = val["iw_nll"] = self.validator.iw_nll(t.iw_k)
        extras = {"grids": self.validator.grids()} if t.images else {}
        self.model.train()
        record = {"epoch": epoch, "max_epochs": int(t.max_epochs), "step": self.state.step}
        record |= {f"train/{k}": v for k, v in train.items()} | {f"val/{k}": v for k, v in val.items()}
        return record, extras

    # -------------------------------------------------------------------- the end

    def finish(self, stopped: str) -> dict[str, Any]:
        r"""Tests the best checkpoint, tells the hooks, writes ``metrics.json``."""
        cfg, t, state = self.cfg, self.t, self.state
        metrics: dict[str, Any] = {
            "status": "completed",
            "stopped_by": stopped,
            "epochs": state.epoch,
            "max_epochs": int(t.max_epochs),  # a resumed run's .hydra/ keeps its first budget
            "steps": state.step,
            "skipped_steps": self.guard.skipped,
            "best_epoch": state.best["epoch"],
            "selected_by": self.selection,
            "val/elbo": state.best["val_elbo"],
            "val/iw_nll": state.last_iw,
            "iw_k": int(t.iw_k),
            "train_time_s": state.train_time,
            "images_per_s": state.images_seen / max(state.train_time, 1e-9),
            "parameters": self.n_params,
            "posterior": str(cfg.posterior.name),
            "depth": cfg.posterior.get("depth"),
            "dataset": str(cfg.dataset.name),
            "latent_dim": self.model.latent_dim,
            "kl_estimator": self.kl,
            "objective": self.objective.label,
            "bound": self.objective.bound_name,
        }
        if self.selection != "val/elbo":
            metrics[self.selection] = state.best["score"]
        if state.history:  # the last epoch's training figures: the bound, and the ESS of an IW bound
            metrics |= {k: v for k, v in state.history[-1].items() if k.startswith("train/")}
        metrics["history"] = state.history
        if t.test and state.best["epoch"] > 0:
            self.model.load_state_dict(load_checkpoint(self.checkpoints.best)["model"])
            test = test_figures(self.model, self.data.test, t.iw_k, t.iw_limit)
            metrics["test_examples"], metrics["test_split_size"] = test["examples"], len(self.data.test)
            metrics |= {f"test/{k}": v for k, v in test["figures"].items()}
            log.info(
                "test (best epoch %d, %d images): elbo %.3f  rec %.3f  kl %.3f  iw-nll (k=%d) %.3f",
                state.best["epoch"], test["examples"], metrics["test/elbo"], metrics["test/rec"],
                metrics["test/kl"], t.iw_k, metrics["test/iw_nll"],
            )  # fmt: skip
        for hook in self.hooks:
            hook.on_fit_end(self, metrics)
        write_json_atomic(metrics, self.run_dir / "metrics.json")
        return metrics


def train(
    cfg: DictConfig, run_dir: str | Path, *, multirun: bool = False, hooks: Sequence[Hook] = ()
) -> dict[str, Any]:
    r"""Trains the VAE that ``cfg`` describes and writes everything under ``run_dir``.

    Arguments:
        cfg: the composed config (``conf/train.yaml``).
        run_dir: the run's output directory (Hydra's ``runtime.output_dir``).
        multirun: whether this is one job of a sweep (plain progress lines).
        hooks: more hooks (:class:`~vaeflow.training.hooks.Hook`).

    Returns:
        The final metrics, as written to ``metrics.json``.
    """
    return Trainer(cfg, run_dir, multirun=multirun, hooks=hooks).fit()


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:200]
