r"""The training loop: ``train(cfg, run_dir)`` trains one VAE and writes its run directory.

::

    run_dir/
      tb/                      TensorBoard: train/*, train_epoch/*, val/*, test/*, images, hparams
      checkpoints/last.pt      every epoch (atomic)
      checkpoints/best.pt      the best validation ELBO so far (never non-finite weights)
      metrics.json             the final figures

A pure function of the composed config and the run directory, so that tests call it
directly and the ``vaeflow train`` command is a thin shim around it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import signal
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams
from torchvision.utils import make_grid

from vaeflow.checkpoint import load_checkpoint, rng_state, save_atomic, set_rng_state
from vaeflow.data import BatchLoader, DataSplits, Split, load_dataset
from vaeflow.errors import CheckpointError, ConfigError, TrainingError, VaeflowError
from vaeflow.model import VAE, build_model
from vaeflow.objectives import ElboTerms, elbo, iwae_bound, kl_beta, resolve_kl, training_loss
from vaeflow.progress import Reporter, progress_mode
from vaeflow.resolvers import resume_run_dir  # noqa: F401  (registers ${vaeflow.resume_dir:...})

__all__ = [
    "Trainer",
    "Interrupted",
    "train",
    "resume_checkpoint",
    "check_same_model",
    "resolve_device",
    "seed_everything",
    "build_optimizer",
    "evaluate_elbo",
    "evaluate_iw_nll",
    "write_json_atomic",
]

log = logging.getLogger("vaeflow")

OPTIMIZERS = {"adam": torch.optim.Adam, "adamax": torch.optim.Adamax}


def resolve_device(name: str) -> torch.device:
    r"""``auto | cpu | cuda | cuda:N`` -> a device that exists here."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"trainer.device={name}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device={name}: no CUDA device is visible here; use trainer.device=cpu")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"trainer.device={name}: use auto, cpu, cuda or cuda:N")
    return device


def seed_everything(seed: int) -> None:
    r"""Seeds Python's, NumPy's and torch's generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_optimizer(cfg: Mapping[str, Any], params) -> torch.optim.Optimizer:
    r"""Adam or Adamax with ``lr``, ``betas``, ``eps`` and ``weight_decay`` from the config,
    and its implementation: ``fused`` (one kernel for all parameters; Adam) or ``foreach``
    (``null``: torch's default, a per-tensor loop on the CPU)."""
    options = dict(cfg)
    name = options.pop("name")
    if name not in OPTIMIZERS:
        raise ConfigError(f"optim={name}: choose one of {', '.join(OPTIMIZERS)}")
    if not options.get("lr", 0) > 0:
        raise ConfigError(f"optim.lr={options.get('lr')}: the learning rate must be > 0")
    options["betas"] = tuple(options.get("betas", (0.9, 0.999)))
    try:
        return OPTIMIZERS[name](params, **options)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"optim={name}: {e}") from None


@torch.inference_mode()
def evaluate_elbo(
    model: VAE, loader: BatchLoader, kl: str, n: int = 1, *, with_se: bool = False
) -> dict[str, float]:
    r"""Mean ELBO, reconstruction and KL per example over a whole split; with ``with_se``
    also ``elbo_se``, the standard error of the mean ELBO across examples."""
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64)
    count = 0
    for x in loader:
        terms = elbo(model, x, kl, n)
        per_example = terms.elbo.double()
        totals += torch.stack(
            [terms.rec.double().sum(), terms.kl.double().sum(), per_example.square().sum()]
        ).cpu()
        count += x.shape[0]
    rec, kl_value, square = (totals / count).tolist()
    result = {"elbo": rec - kl_value, "rec": rec, "kl": kl_value}
    if with_se:
        result["elbo_se"] = _standard_error(rec - kl_value, square, count)
    return result


@torch.inference_mode()
def evaluate_iw_nll(
    model: VAE, images: Tensor, k: int, batch_size: int = 100, *, with_se: bool = False
) -> float | tuple[float, float]:
    r"""Mean importance-weighted NLL estimate ``-L_k(x)`` over ``images`` (Burda et al., 2016);
    with ``with_se`` also its standard error across images."""
    model.eval()
    # ~2,000 (example, sample) pairs per chunk: larger chunks are slower on the CPU, where each
    # of their buffers is mapped afresh and page-faulted (1.7x faster for the MLP mean-field VAE)
    total, square, chunk = 0.0, 0.0, max(1, 2048 // batch_size)
    for start in range(0, images.shape[0], batch_size):
        nll = -iwae_bound(model, images[start : start + batch_size], k, chunk).double()
        total += nll.sum().item()
        square += nll.square().sum().item()
    n = images.shape[0]
    mean = total / n
    return (mean, _standard_error(mean, square / n, n)) if with_se else mean


def _standard_error(mean: float, mean_square: float, n: int) -> float:
    variance = max(mean_square - mean * mean, 0.0) * n / max(n - 1, 1)
    return math.sqrt(variance / n)


def write_json_atomic(obj: Any, path: Path) -> None:
    r"""Writes JSON through a temporary file and a rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def _check_trainer(cfg: DictConfig) -> None:
    t, o = cfg.trainer, cfg.objective
    numbers = {
        "trainer.max_epochs": (t.max_epochs, int, 1, "train for at least 1 epoch"),
        "trainer.batch_size": (t.batch_size, int, 1, "use a batch size >= 1"),
        "trainer.val_batch_size": (t.val_batch_size, int, 1, "use a batch size >= 1"),
        "trainer.iw_k": (t.iw_k, int, 1, "the IW-NLL estimate needs k >= 1"),
        "trainer.iw_every": (t.iw_every, int, 0, "use 0 (never) or a number of epochs"),
        "trainer.iw_limit": (t.iw_limit, int, 0, "use 0 (all) or a number of images"),
        "trainer.log_every": (t.log_every, int, 1, "use a number of steps >= 1"),
        "trainer.images": (t.images, int, 0, "use 0 (no grids) or a number of images"),
        "trainer.max_bad_steps": (t.max_bad_steps, int, 1, "must be >= 1"),
        "trainer.checkpoint_every_epochs": (t.checkpoint_every_epochs, int, 1, "must be >= 1"),
        "trainer.checkpoint_every_steps": (t.checkpoint_every_steps, (int, None), 1, "use null or >= 1"),
        "trainer.threads": (t.threads, (int, None), 1, "use null or a number of threads >= 1"),
        "trainer.grad_clip": (t.grad_clip, (float, None), 1e-12, "use null or a norm > 0"),
        "trainer.early_stopping.patience": (t.early_stopping.patience, (int, None), 1, "use null or >= 1"),
        "trainer.early_stopping.min_delta": (t.early_stopping.min_delta, float, 0, "must be >= 0"),
        "objective.samples": (o.samples, int, 1, "draw at least 1 sample"),
        "objective.warmup_epochs": (o.warmup_epochs, float, 0, "must be >= 0"),
        "objective.free_bits": (o.free_bits, float, 0, "must be >= 0"),
        "seed": (cfg.seed, int, -(2**63), "use an integer"),
    }
    for key, (value, kind, low, advice) in numbers.items():
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if value is None and None in kinds:
            continue
        integer = int in kinds
        ok = (
            isinstance(value, int) and not isinstance(value, bool)
            if integer
            else isinstance(value, int | float)
        )
        if not ok or value < low:
            raise ConfigError(f"{key}={value}: {advice}")


def _wants_compile(t: DictConfig) -> bool:
    r"""``trainer.compile`` (absent in configs written before it existed: false)."""
    value = t.get("compile", False)
    if not isinstance(value, bool):
        raise ConfigError(f"trainer.compile={value}: use true or false")
    return value


def _grid(images: Tensor) -> Tensor:
    return make_grid(images.float().cpu().clamp(0, 1), nrow=8, padding=1, pad_value=0.5)


def _all_finite(model: torch.nn.Module) -> bool:
    return all(torch.isfinite(p).all() for p in model.parameters())


class Trainer:
    r"""One training run: built from the composed config, it owns the model, the
    optimizer, the data loaders, the TensorBoard writer and the run's counters.

    Arguments:
        cfg: the composed config (``conf/train.yaml``).
        run_dir: the run's output directory.
        multirun: whether this is one job of a sweep (plain progress lines).
        data: splits to train on instead of loading ``cfg.dataset`` (benchmarks, tests).
    """

    def __init__(
        self, cfg: DictConfig, run_dir: str | Path, *, multirun: bool = False, data: DataSplits | None = None
    ) -> None:
        _check_trainer(cfg)
        self.cfg, self.t = cfg, cfg.trainer
        self.run_dir = Path(run_dir)
        seed_everything(int(cfg.seed))
        if self.t.threads:
            torch.set_num_threads(int(self.t.threads))
        self.device = resolve_device(str(self.t.device))
        self.mode = progress_mode(str(self.t.progress), multirun)

        self.data = load_dataset(cfg.dataset) if data is None else data
        self.model = build_model(cfg, self.data.shape).to(self.device)
        self.kl = resolve_kl(str(cfg.kl.estimator), self.model, str(cfg.posterior.name))
        self.optimizer = build_optimizer(cfg.optim, self.model.parameters())
        self.n_params = sum(p.numel() for p in self.model.parameters())
        # the training forward pass; trainer.compile fuses its elementwise work (torch.compile)
        self._forward = torch.compile(self._elbo_terms) if _wants_compile(self.t) else self._elbo_terms
        # read once, not at every step (config lookups and module walks cost ~3% of a step)
        self._params = list(self.model.parameters())
        self._samples, self._free_bits = int(cfg.objective.samples), float(cfg.objective.free_bits)
        self._grad_clip = float(self.t.grad_clip) if self.t.grad_clip else None
        self._log_every = int(self.t.log_every)

        device, t = self.device, self.t
        self.train_loader = BatchLoader(
            self.data.train, int(t.batch_size), shuffle=True, seed=int(cfg.seed), device=device
        )
        self.val_loader = BatchLoader(self.data.val, int(t.val_batch_size), device=device)
        self.iw_images = _seeded_subset(self.data.val, int(t.iw_limit)).images.to(device)
        self.grid_x = self.data.val.images[: int(t.images) // 2].to(device)
        generator = torch.Generator().manual_seed(0)
        self.grid_z = torch.randn(int(t.images), self.model.latent_dim, generator=generator).to(device)

        self.config_dict = OmegaConf.to_container(cfg, resolve=True)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.ckpt_dir.glob(".*.tmp"):  # left by a process killed while writing
            stale.unlink(missing_ok=True)

        self.epoch = self.step = self.bad_steps = self.bad_epochs = 0  # epoch: epochs completed
        self.best = {"val_elbo": -math.inf, "epoch": 0}
        self.history: list[dict[str, float]] = []
        self.train_time, self.images_seen = 0.0, 0
        self.last_iw: float | None = None
        self.partial: dict[str, Any] | None = None  # progress inside an interrupted epoch
        self.stop_signal: int | None = None
        self.resumed_from = self._resume(resume_checkpoint(t.resume, self.run_dir))
        self.writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=self.step or None)

    # ------------------------------------------------------------- resume

    def _resume(self, path: Path | None) -> Path | None:
        r"""Restores every piece of state from the checkpoint at ``path`` (if any)."""
        if path is None:
            return None
        state = load_checkpoint(path, map_location=self.device)
        check_same_model(state["config"], self.config_dict, path)
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(
                f"checkpoint {path} does not fit this model ({_first_line(e)}); "
                "resume with the configuration the run was trained with"
            ) from None
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.best = dict(state["best"])
        self.bad_epochs = int(state["early_stopping"]["bad_epochs"])
        self.history = list(state["history"])
        self.train_time, self.images_seen = float(state["train_time"]), int(state["images_seen"])
        self.last_iw = state.get("last_iw")
        self.partial = state.get("partial")
        self.train_loader.load_state_dict(state["loader"], mid_epoch=self.partial is not None)
        set_rng_state(state["rng"])
        where = (
            f"epoch {self.epoch + 1}, batch {self.partial['batches']}"
            if self.partial
            else f"epoch {self.epoch}"
        )
        log.info("resumed from %s (%s, step %d)", path, where, self.step)
        return path

    # ---------------------------------------------------------------- the loop

    def fit(self) -> dict[str, Any]:
        r"""Trains until ``max_epochs`` or early stopping; returns the final metrics.

        SIGINT and SIGTERM finish the current step, write ``last.pt`` and stop with a
        one-line message saying how to resume.
        """
        cfg, t, data = self.cfg, self.t, self.data
        log.info(
            "vaeflow train: %s %s (%d/%d/%d images), posterior=%s, kl=%s, latent_dim=%d, "
            "%s parameters, device %s; run dir %s",
            cfg.dataset.name, data.shape, len(data.train), len(data.val), len(data.test),
            cfg.posterior.name, self.kl, self.model.latent_dim, f"{self.n_params:,}", self.device,
            self.run_dir,
        )  # fmt: skip
        stopped = "max_epochs"
        try:
            with (
                _stop_on_signals(self),
                Reporter(self.mode, int(t.max_epochs), len(self.train_loader)) as reporter,
            ):
                while self.epoch < int(t.max_epochs):
                    train_stats = self.train_epoch(reporter)
                    if train_stats is None:  # a signal arrived
                        save_atomic(self.state_dict(), self.ckpt_dir / "last.pt")
                        raise Interrupted(self)
                    self.epoch += 1
                    val = self.validate()
                    self.history.append(
                        {"epoch": self.epoch}
                        | {f"train/{k}": v for k, v in train_stats.items()}
                        | {f"val/{k}": v for k, v in val.items()}
                    )
                    improved = self.save_checkpoints(val)
                    every = int(t.checkpoint_every_epochs)
                    stop = self.stop_signal is not None
                    if stop or self.epoch % every == 0 or self.epoch == int(t.max_epochs):
                        save_atomic(self.state_dict(), self.ckpt_dir / "last.pt")
                    reporter.end_epoch(self.epoch, self._epoch_line(train_stats, val, improved))
                    self.writer.flush()
                    if stop:
                        raise Interrupted(self)
                    patience = t.early_stopping.patience
                    if patience is not None and self.bad_epochs >= int(patience):
                        stopped = "early_stopping"
                        reporter.message(
                            f"early stopping: no better validation ELBO for {self.bad_epochs} epochs"
                        )
                        break
            return self.finish(stopped)
        finally:
            self.writer.close()

    def train_epoch(self, reporter: Reporter) -> dict[str, float] | None:
        r"""One pass over the training split (the rest of it, after a resume inside the
        epoch); returns the epoch's mean ELBO terms, or ``None`` if a stop signal arrived."""
        self.model.train()
        partial = self.partial or {
            "batches": 0,
            "sums": torch.zeros(3, dtype=torch.float64),
            "seen": 0,
            "time": 0.0,
        }
        self.partial = None
        sums, n_seen, batches = partial["sums"].clone(), int(partial["seen"]), int(partial["batches"])
        start = time.perf_counter() - float(partial["time"])
        current, steps = self.epoch + 1, len(self.train_loader)
        every = self.t.checkpoint_every_steps
        reporter.start_epoch(current, completed=batches)
        for x in self.train_loader.epoch(skip=batches):
            self.beta = kl_beta(self.epoch + batches / steps, float(self.cfg.objective.warmup_epochs))
            values = self.train_step(x)
            batches += 1
            if values is not None:
                sums += values
                n_seen += x.shape[0]
            if self.mode == "rich" and n_seen:
                rec, kl = (sums[:2] / n_seen).tolist()
                rate = n_seen / max(time.perf_counter() - start, 1e-9)
                reporter.step(f"elbo {rec - kl:.2f}  kl {kl:.2f}  {rate:,.0f} img/s")
            interrupted = self.stop_signal is not None
            if batches < steps and (
                interrupted or (every and values is not None and self.step % int(every) == 0)
            ):
                elapsed = time.perf_counter() - start
                self.partial = {"batches": batches, "sums": sums, "seen": n_seen, "time": elapsed}
                if interrupted:
                    return None
                save_atomic(self.state_dict(), self.ckpt_dir / "last.pt")
                self.partial = None
        elapsed = time.perf_counter() - start
        self.train_time += elapsed
        self.images_seen += n_seen
        rec, kl, loss = (sums / max(n_seen, 1)).tolist()
        stats = {"elbo": rec - kl, "rec": rec, "kl": kl, "loss": loss}
        stats["images_per_s"] = n_seen / max(elapsed, 1e-9)
        for name, value in stats.items():
            self.writer.add_scalar(f"train_epoch/{name}", value, current)
        self.writer.add_scalar("train_epoch/beta", self.beta, current)
        return stats

    def _elbo_terms(self, x: Tensor) -> tuple[Tensor, Tensor]:
        terms = elbo(self.model, x, self.kl, self._samples)
        return terms.rec, terms.kl

    def train_step(self, x: Tensor) -> Tensor | None:
        r"""One optimizer step on batch ``x``: the batch's summed ``(rec, kl, loss)``, or
        ``None`` when the loss or the gradient is not finite and the step was skipped."""
        terms = ElboTerms(*self._forward(x))
        loss = training_loss(terms, self.beta, self._free_bits, self.model.latent_dim)
        self.optimizer.zero_grad(set_to_none=True)
        grad_norm = torch.tensor(math.nan)
        if torch.isfinite(loss):
            loss.backward()
            grads = [p.grad for p in self._params if p.grad is not None]
            if self._grad_clip:
                grad_norm = torch.nn.utils.clip_grad_norm_(self._params, self._grad_clip)
            else:
                grad_norm = torch.nn.utils.get_total_norm(grads)
        if not torch.isfinite(grad_norm):
            self._skip_step("loss" if not torch.isfinite(loss) else "gradient")
            return None
        self.bad_steps = 0
        self.optimizer.step()
        self.step += 1
        batch = x.shape[0]
        values = torch.stack([terms.rec.detach().sum(), terms.kl.detach().sum(), loss.detach() * batch])
        values = values.double().cpu()
        if self.step % self._log_every == 0:
            rec, kl, loss_value = (values / batch).tolist()
            scalars = {"elbo": rec - kl, "rec": rec, "kl": kl, "loss": loss_value, "beta": self.beta,
                       "lr": self.optimizer.param_groups[0]["lr"], "grad_norm": float(grad_norm)}  # fmt: skip
            for name, value in scalars.items():
                self.writer.add_scalar(f"train/{name}", value, self.step)
        return values

    def _skip_step(self, what: str) -> None:
        self.bad_steps += 1
        log.warning("step %d: non-finite %s, step skipped (%d in a row)", self.step, what, self.bad_steps)
        self.writer.add_scalar("train/skipped_steps", self.bad_steps, self.step)
        if self.bad_steps >= int(self.t.max_bad_steps):
            best = self.ckpt_dir / "best.pt"
            raise TrainingError(
                f"{self.bad_steps} non-finite steps in a row at epoch {self.epoch + 1}; the last good "
                f"checkpoint is {best if best.exists() else 'none (no epoch finished)'}; "
                "lower optim.lr, set trainer.grad_clip or use objective.warmup_epochs"
            )

    # ------------------------------------------------------- per-epoch evaluation

    def validate(self) -> dict[str, float]:
        r"""Validation ELBO terms, the IW-NLL estimate every ``iw_every`` epochs, image grids."""
        t, epoch = self.t, self.epoch
        val = evaluate_elbo(self.model, self.val_loader, self.kl)
        iw_now = int(t.iw_every) > 0 and (epoch % int(t.iw_every) == 0 or epoch == int(t.max_epochs))
        if iw_now:
            self.last_iw = evaluate_iw_nll(self.model, self.iw_images, int(t.iw_k))
            val["iw_nll"] = self.last_iw
        for name, value in val.items():
            self.writer.add_scalar(f"val/{name}", value, epoch)
        if int(t.images):
            self.model.eval()
            self.writer.add_image("val/samples", _grid(self.model.decode_mean(self.grid_z)), epoch)
            pairs = torch.stack([self.grid_x, self.model.reconstruct(self.grid_x)], 1).flatten(0, 1)
            self.writer.add_image("val/reconstructions", _grid(pairs), epoch)
        return val

    def save_checkpoints(self, val: Mapping[str, float]) -> bool:
        r"""Writes ``best.pt`` when the validation ELBO improved and the weights are
        finite (non-finite weights are never saved as best); returns whether it improved."""
        improved = val["elbo"] > self.best["val_elbo"] + float(self.t.early_stopping.min_delta)
        improved = improved and math.isfinite(val["elbo"]) and _all_finite(self.model)
        if improved:
            self.best = {"val_elbo": val["elbo"], "epoch": self.epoch}
            self.bad_epochs = 0
            save_atomic(self.state_dict(), self.ckpt_dir / "best.pt")
        else:
            self.bad_epochs += 1
        return improved

    def state_dict(self) -> dict[str, Any]:
        r"""The checkpoint: plain containers only (``torch.load(weights_only=True)``)."""
        return {
            "version": 1,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "partial": self.partial,
            "config": self.config_dict,
            "rng": rng_state(),
            "loader": self.train_loader.state_dict(),
            "best": dict(self.best),
            "early_stopping": {"bad_epochs": self.bad_epochs},
            "history": list(self.history),
            "train_time": self.train_time,
            "images_seen": self.images_seen,
            "last_iw": self.last_iw,
            "param_count": self.n_params,
        }

    def _epoch_line(self, train: Mapping[str, float], val: Mapping[str, float], improved: bool) -> str:
        line = (
            f"epoch {self.epoch}/{self.t.max_epochs}  train elbo {train['elbo']:.2f}  "
            f"val elbo {val['elbo']:.2f} (rec {val['rec']:.2f}, kl {val['kl']:.2f})"
        )
        if "iw_nll" in val:
            line += f"  val iw-nll {val['iw_nll']:.2f}"
        line += f"  beta {self.beta:.2f}  {train['images_per_s']:,.0f} img/s"
        return line + ("  *best" if improved else "")

    # -------------------------------------------------------------------- the end

    def finish(self, stopped: str) -> dict[str, Any]:
        r"""Tests the best checkpoint, writes hparams and ``metrics.json``."""
        cfg, t = self.cfg, self.t
        metrics: dict[str, Any] = {
            "status": "completed",
            "stopped_by": stopped,
            "epochs": self.epoch,
            "max_epochs": int(t.max_epochs),  # a resumed run's .hydra/ keeps its first budget
            "steps": self.step,
            "best_epoch": self.best["epoch"],
            "val/elbo": self.best["val_elbo"],
            "val/iw_nll": self.last_iw,
            "iw_k": int(t.iw_k),
            "train_time_s": self.train_time,
            "images_per_s": self.images_seen / max(self.train_time, 1e-9),
            "parameters": self.n_params,
            "posterior": str(cfg.posterior.name),
            "depth": cfg.posterior.get("depth"),
            "dataset": str(cfg.dataset.name),
            "latent_dim": self.model.latent_dim,
            "kl_estimator": self.kl,
            "history": self.history,
        }
        if t.test and self.best["epoch"] > 0:
            state = load_checkpoint(self.ckpt_dir / "best.pt", map_location=self.device)
            self.model.load_state_dict(state["model"])
            test_loader = BatchLoader(self.data.test, int(t.val_batch_size), device=self.device)
            test = evaluate_elbo(self.model, test_loader, self.kl, with_se=True)
            # a seeded subset, as for validation: `vaeflow eval` gives the full-test-set figure
            test_iw = _seeded_subset(self.data.test, int(t.iw_limit)).images.to(self.device)
            test["iw_nll"], test["iw_nll_se"] = evaluate_iw_nll(
                self.model, test_iw, int(t.iw_k), with_se=True
            )
            metrics["iw_images"] = test_iw.shape[0]
            metrics |= {f"test/{k}": v for k, v in test.items()}
            for name, value in test.items():
                self.writer.add_scalar(f"test/{name}", value, self.best["epoch"])
            log.info(
                "test (best epoch %d): elbo %.3f  rec %.3f  kl %.3f  iw-nll (k=%d) %.3f",
                self.best["epoch"], test["elbo"], test["rec"], test["kl"], int(t.iw_k), test["iw_nll"],
            )  # fmt: skip
        _write_hparams(self.writer, cfg, metrics)
        write_json_atomic(metrics, self.run_dir / "metrics.json")
        return metrics


def train(cfg: DictConfig, run_dir: str | Path, *, multirun: bool = False) -> dict[str, Any]:
    r"""Trains the VAE that ``cfg`` describes and writes everything under ``run_dir``.

    Arguments:
        cfg: the composed config (``conf/train.yaml``).
        run_dir: the run's output directory (Hydra's ``runtime.output_dir``).
        multirun: whether this is one job of a sweep (plain progress lines).

    Returns:
        The final metrics, as written to ``metrics.json``.
    """
    return Trainer(cfg, run_dir, multirun=multirun).fit()


#: config keys that may change when a run is resumed (everything else must match):
#: how it trains and where it writes, and ``eval`` (``+eval=true``: whether the job
#: evaluates the run when it ends), none of which changes the model it trains
RESUMABLE_KEYS = ("trainer", "hydra", "eval")


def resume_checkpoint(resume: str | None, run_dir: Path) -> Path | None:
    r"""The checkpoint that ``trainer.resume`` names, or ``None`` for a fresh start.

    ``null``: none. ``auto``: ``run_dir/checkpoints/last.pt`` if it exists (a job restarted
    by a scheduler in the same output directory). A run directory: its ``last.pt``. A
    checkpoint file: that file.
    """
    if resume in (None, "", "none", "null"):
        return None
    if resume == "auto":
        last = run_dir / "checkpoints" / "last.pt"
        if last.is_file():
            return last
        log.info("trainer.resume=auto: no %s yet, starting afresh", last)
        return None
    path = Path(str(resume)).expanduser()
    if path.is_dir():
        path = path / "checkpoints" / "last.pt"
    if not path.is_file():
        raise CheckpointError(
            f"trainer.resume={resume}: {path} not found; give a run directory (holding "
            "checkpoints/last.pt), a checkpoint file, or trainer.resume=auto"
        )
    return path


def check_same_model(saved: Mapping[str, Any], current: Mapping[str, Any], path: Path) -> None:
    r"""Refuses to resume when the model, data or objective config differs from the
    checkpoint's; the message names the keys that differ."""
    differ = [
        key
        for key in _flat_keys(saved) | _flat_keys(current)
        if key.split(".")[0] not in RESUMABLE_KEYS and _get(saved, key) != _get(current, key)
    ]
    if differ:
        shown = ", ".join(
            f"{k} ({_get(saved, k)!r} in the checkpoint, {_get(current, k)!r} now)"
            for k in sorted(differ)[:4]
        )
        more = f" and {len(differ) - 4} more" if len(differ) > 4 else ""
        raise CheckpointError(
            f"checkpoint {path} was trained with another configuration: {shown}{more}; "
            "resume with the same settings (only trainer.* and +eval may change)"
        )


def _flat_keys(tree: Any, prefix: str = "") -> set[str]:
    if not isinstance(tree, Mapping):
        return {prefix}
    keys: set[str] = set()
    for k, v in tree.items():
        keys |= _flat_keys(v, f"{prefix}{k}" if not prefix else f"{prefix}.{k}")
    return keys


def _get(tree: Any, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(tree, Mapping) or part not in tree:
            return "<absent>"
        tree = tree[part]
    return tree


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:200]


class Interrupted(VaeflowError):
    r"""SIGINT or SIGTERM stopped the run after writing ``last.pt``."""

    def __init__(self, trainer: Trainer) -> None:
        self.exit_code = 128 + int(trainer.stop_signal or signal.SIGINT)
        name = signal.Signals(trainer.stop_signal or signal.SIGINT).name
        super().__init__(
            f"{name}: stopped at epoch {trainer.epoch + (trainer.partial is not None)}, step {trainer.step}; "
            f"{trainer.ckpt_dir / 'last.pt'} is saved; continue with: "
            f"vaeflow train <same overrides> trainer.resume={trainer.run_dir}"
        )


@contextmanager
def _stop_on_signals(trainer: Trainer) -> Iterator[None]:
    r"""SIGINT and SIGTERM ask the trainer to stop after the current step; a second
    SIGINT interrupts at once."""

    def handler(signum: int, frame: Any) -> None:
        if trainer.stop_signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        trainer.stop_signal = signum
        log.warning(
            "%s received: finishing the current step, then saving last.pt", signal.Signals(signum).name
        )

    try:
        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread (e.g. a launcher's worker): leave signals alone
        previous = {}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _seeded_subset(split: Split, limit: int) -> Split:
    if limit <= 0 or limit >= len(split):
        return split
    index = torch.randperm(len(split), generator=torch.Generator().manual_seed(0))[:limit]
    return split.subset(index)


def _write_hparams(writer: SummaryWriter, cfg: DictConfig, metrics: Mapping[str, Any]) -> None:
    hparam_dict = {
        "dataset": str(cfg.dataset.name),
        "posterior": str(cfg.posterior.name),
        "depth": int(cfg.posterior.get("depth") or 0),
        "latent_dim": int(cfg.model.latent_dim),
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
