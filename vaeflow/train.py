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
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter
from torchvision.utils import make_grid

from vaeflow.checkpoint import load_checkpoint, rng_state, save_atomic
from vaeflow.data import BatchLoader, Split, load_dataset
from vaeflow.errors import ConfigError, TrainingError
from vaeflow.model import VAE, build_model
from vaeflow.objectives import elbo, iwae_bound, kl_beta, resolve_kl, training_loss
from vaeflow.progress import Reporter, progress_mode

__all__ = [
    "train",
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
    r"""Adam or Adamax with ``lr``, ``betas``, ``eps`` and ``weight_decay`` from the config."""
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
def evaluate_elbo(model: VAE, loader: BatchLoader, kl: str, n: int = 1) -> dict[str, float]:
    r"""Mean ELBO, reconstruction and KL per example over a whole split."""
    model.eval()
    totals = torch.zeros(2, dtype=torch.float64)
    count = 0
    for x in loader:
        terms = elbo(model, x, kl, n)
        totals += torch.stack([terms.rec.sum(), terms.kl.sum()]).double().cpu()
        count += x.shape[0]
    rec, kl_value = (totals / count).tolist()
    return {"elbo": rec - kl_value, "rec": rec, "kl": kl_value}


@torch.inference_mode()
def evaluate_iw_nll(model: VAE, images: Tensor, k: int, batch_size: int = 100) -> float:
    r"""Mean importance-weighted NLL estimate ``-L_k(x)`` over ``images`` (Burda et al., 2016)."""
    model.eval()
    total, chunk = 0.0, max(1, 20_000 // batch_size)
    for start in range(0, images.shape[0], batch_size):
        x = images[start : start + batch_size]
        total += -iwae_bound(model, x, k, chunk).double().sum().item()
    return total / images.shape[0]


def write_json_atomic(obj: Any, path: Path) -> None:
    r"""Writes JSON through a temporary file and a rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def _check_trainer(cfg: DictConfig) -> None:
    t = cfg.trainer
    checks = [
        (t.max_epochs >= 1, f"trainer.max_epochs={t.max_epochs}: train for at least 1 epoch"),
        (t.batch_size >= 1, f"trainer.batch_size={t.batch_size}: use a batch size >= 1"),
        (t.val_batch_size >= 1, f"trainer.val_batch_size={t.val_batch_size}: use a batch size >= 1"),
        (cfg.objective.samples >= 1, f"objective.samples={cfg.objective.samples}: draw at least 1 sample"),
        (cfg.objective.free_bits >= 0, f"objective.free_bits={cfg.objective.free_bits}: must be >= 0"),
        (
            cfg.objective.warmup_epochs >= 0,
            f"objective.warmup_epochs={cfg.objective.warmup_epochs}: must be >= 0",
        ),
        (t.iw_k >= 1, f"trainer.iw_k={t.iw_k}: the IW-NLL estimate needs k >= 1"),
        (t.threads is None or t.threads >= 1, f"trainer.threads={t.threads}: use null or >= 1"),
        (t.grad_clip is None or t.grad_clip > 0, f"trainer.grad_clip={t.grad_clip}: use null or > 0"),
        (t.max_bad_steps >= 1, f"trainer.max_bad_steps={t.max_bad_steps}: must be >= 1"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def _grid(images: Tensor) -> Tensor:
    return make_grid(images.float().cpu().clamp(0, 1), nrow=8, padding=1, pad_value=0.5)


def _all_finite(model: torch.nn.Module) -> bool:
    return all(torch.isfinite(p).all() for p in model.parameters())


def train(cfg: DictConfig, run_dir: str | Path, *, multirun: bool = False) -> dict[str, Any]:
    r"""Trains the VAE that ``cfg`` describes and writes everything under ``run_dir``.

    Arguments:
        cfg: the composed config (``conf/train.yaml``).
        run_dir: the run's output directory (Hydra's ``runtime.output_dir``).
        multirun: whether this is one job of a sweep (plain progress lines).

    Returns:
        The final metrics, as written to ``metrics.json``.
    """
    run_dir = Path(run_dir)
    _check_trainer(cfg)
    t = cfg.trainer
    seed_everything(int(cfg.seed))
    if t.threads:
        torch.set_num_threads(int(t.threads))
    device = resolve_device(str(t.device))
    mode = progress_mode(str(t.progress), multirun)

    data = load_dataset(cfg.dataset)
    model = build_model(cfg, data.shape).to(device)
    kl = resolve_kl(str(cfg.kl.estimator), model, str(cfg.posterior.name))
    optimizer = build_optimizer(cfg.optim, model.parameters())
    n_params = sum(p.numel() for p in model.parameters())
    latent_dim = model.latent_dim

    train_loader = BatchLoader(data.train, int(t.batch_size), shuffle=True, seed=int(cfg.seed), device=device)
    val_loader = BatchLoader(data.val, int(t.val_batch_size), device=device)
    test_loader = BatchLoader(data.test, int(t.val_batch_size), device=device)
    iw_images = _seeded_subset(data.val, int(t.iw_limit)).images.to(device)
    grid_n = int(t.images)
    grid_x = data.val.images[: grid_n // 2].to(device)
    grid_z = torch.randn(grid_n, latent_dim, generator=torch.Generator().manual_seed(0)).to(device)

    config_dict = OmegaConf.to_container(cfg, resolve=True)
    ckpt_dir = run_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    writer = SummaryWriter(str(run_dir / "tb"))
    log.info(
        "vaeflow train: %s on %s %s, posterior=%s, kl=%s, latent_dim=%d, %s parameters, device %s; run dir %s",
        cfg.dataset.name,
        data.shape,
        f"({len(data.train)}/{len(data.val)}/{len(data.test)} images)",
        cfg.posterior.name,
        kl,
        latent_dim,
        f"{n_params:,}",
        device,
        run_dir,
    )

    step, bad_steps, bad_epochs = 0, 0, 0
    best = {"val_elbo": -math.inf, "epoch": 0}
    history: list[dict[str, float]] = []
    last_iw = None
    train_time = 0.0
    images_seen = 0
    stopped = "max_epochs"

    def checkpoint(epoch: int) -> dict:
        return {
            "version": 1,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "epoch": epoch,
            "step": step,
            "config": config_dict,
            "rng": rng_state(),
            "loader": train_loader.state_dict(),
            "best": dict(best),
            "early_stopping": {"bad_epochs": bad_epochs},
            "param_count": n_params,
        }

    try:
        with Reporter(mode, int(t.max_epochs), len(train_loader)) as reporter:
            for epoch in range(1, int(t.max_epochs) + 1):
                reporter.start_epoch(epoch)
                model.train()
                sums = torch.zeros(3, dtype=torch.float64)
                n_seen, epoch_start = 0, time.perf_counter()
                for i, x in enumerate(train_loader):
                    beta = kl_beta(epoch - 1 + i / len(train_loader), float(cfg.objective.warmup_epochs))
                    terms = elbo(model, x, kl, int(cfg.objective.samples))
                    loss = training_loss(terms, beta, float(cfg.objective.free_bits), latent_dim)
                    optimizer.zero_grad(set_to_none=True)
                    if torch.isfinite(loss):
                        loss.backward()
                        params = [p for p in model.parameters() if p.grad is not None]
                        if t.grad_clip:
                            grad_norm = torch.nn.utils.clip_grad_norm_(params, float(t.grad_clip))
                        else:
                            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params])
                    if not torch.isfinite(loss) or not torch.isfinite(grad_norm):
                        bad_steps += 1
                        log.warning(
                            "step %d: non-finite %s, step skipped (%d in a row)",
                            step,
                            "loss" if not torch.isfinite(loss) else "gradient",
                            bad_steps,
                        )
                        writer.add_scalar("train/skipped_steps", bad_steps, step)
                        if bad_steps >= int(t.max_bad_steps):
                            last_good = ckpt_dir / "best.pt"
                            raise TrainingError(
                                f"{bad_steps} non-finite steps in a row at epoch {epoch}; the last good "
                                f"checkpoint is {last_good if last_good.exists() else 'none (no epoch finished)'}; "
                                "lower optim.lr, set trainer.grad_clip or use objective.warmup_epochs"
                            )
                        continue
                    bad_steps = 0
                    optimizer.step()
                    step += 1
                    batch = x.shape[0]
                    values = torch.stack(
                        [terms.rec.detach().sum(), terms.kl.detach().sum(), loss.detach() * batch]
                    )
                    sums += values.double().cpu()
                    n_seen += batch
                    if step % int(t.log_every) == 0:
                        rec, kl_value = (values[:2] / batch).tolist()
                        writer.add_scalar("train/elbo", rec - kl_value, step)
                        writer.add_scalar("train/rec", rec, step)
                        writer.add_scalar("train/kl", kl_value, step)
                        writer.add_scalar("train/loss", values[2].item() / batch, step)
                        writer.add_scalar("train/beta", beta, step)
                        writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], step)
                        writer.add_scalar("train/grad_norm", float(grad_norm), step)
                    reporter.step(f"elbo {(sums[0] - sums[1]).item() / max(n_seen, 1):.2f}")
                epoch_time = time.perf_counter() - epoch_start
                train_time += epoch_time
                images_seen += n_seen
                ips = n_seen / max(epoch_time, 1e-9)
                rec, kl_value, loss_mean = (sums / max(n_seen, 1)).tolist()
                train_stats = {"elbo": rec - kl_value, "rec": rec, "kl": kl_value, "loss": loss_mean}

                val = evaluate_elbo(model, val_loader, kl)
                for name, value in train_stats.items():
                    writer.add_scalar(f"train_epoch/{name}", value, epoch)
                for name, value in val.items():
                    writer.add_scalar(f"val/{name}", value, epoch)
                writer.add_scalar("train_epoch/images_per_s", ips, epoch)
                writer.add_scalar("train_epoch/beta", beta, epoch)
                if t.iw_every and epoch % int(t.iw_every) == 0 or epoch == int(t.max_epochs):
                    last_iw = evaluate_iw_nll(model, iw_images, int(t.iw_k))
                    writer.add_scalar("val/iw_nll", last_iw, epoch)
                if grid_n:
                    model.eval()
                    writer.add_image("val/samples", _grid(model.decode_mean(grid_z)), epoch)
                    pairs = torch.stack([grid_x, model.reconstruct(grid_x)], 1).flatten(0, 1)
                    writer.add_image("val/reconstructions", _grid(pairs), epoch)

                improved = val["elbo"] > best["val_elbo"] + float(t.early_stopping.min_delta)
                finite = math.isfinite(val["elbo"]) and _all_finite(model)
                if improved and finite:
                    best = {"val_elbo": val["elbo"], "epoch": epoch}
                    bad_epochs = 0
                    save_atomic(checkpoint(epoch), ckpt_dir / "best.pt")
                else:
                    bad_epochs += 1
                save_atomic(checkpoint(epoch), ckpt_dir / "last.pt")
                history.append(
                    {
                        "epoch": epoch,
                        **{f"train/{k}": v for k, v in train_stats.items()},
                        **{f"val/{k}": v for k, v in val.items()},
                    }
                )
                reporter.end_epoch(
                    epoch,
                    f"epoch {epoch}/{t.max_epochs}  train elbo {train_stats['elbo']:.2f}  "
                    f"val elbo {val['elbo']:.2f} (rec {val['rec']:.2f}, kl {val['kl']:.2f})"
                    + (
                        f"  val iw-nll {last_iw:.2f}"
                        if last_iw is not None and epoch % max(int(t.iw_every), 1) == 0
                        else ""
                    )
                    + f"  beta {beta:.2f}  {ips:,.0f} img/s"
                    + ("  *best" if best["epoch"] == epoch else ""),
                )
                writer.flush()
                patience = t.early_stopping.patience
                if patience is not None and bad_epochs >= int(patience):
                    stopped = "early_stopping"
                    reporter.message(f"early stopping: no better validation ELBO for {bad_epochs} epochs")
                    break
    finally:
        writer.flush()

    metrics: dict[str, Any] = {
        "status": "completed",
        "stopped_by": stopped,
        "epochs": epoch,
        "steps": step,
        "best_epoch": best["epoch"],
        "val/elbo": best["val_elbo"],
        "val/iw_nll": last_iw,
        "iw_k": int(t.iw_k),
        "train_time_s": train_time,
        "images_per_s": images_seen / max(train_time, 1e-9),
        "parameters": n_params,
        "posterior": str(cfg.posterior.name),
        "depth": cfg.posterior.get("depth"),
        "dataset": str(cfg.dataset.name),
        "latent_dim": latent_dim,
        "kl_estimator": kl,
        "history": history,
    }
    if t.test and best["epoch"] > 0:
        state = load_checkpoint(ckpt_dir / "best.pt", map_location=device)
        model.load_state_dict(state["model"])
        test = evaluate_elbo(model, test_loader, kl)
        test["iw_nll"] = evaluate_iw_nll(model, test_loader.images, int(t.iw_k))
        metrics.update({f"test/{k}": v for k, v in test.items()})
        for name, value in test.items():
            writer.add_scalar(f"test/{name}", value, best["epoch"])
        log.info(
            "test (best epoch %d): elbo %.3f  rec %.3f  kl %.3f  iw-nll (k=%d) %.3f",
            best["epoch"],
            test["elbo"],
            test["rec"],
            test["kl"],
            int(t.iw_k),
            test["iw_nll"],
        )
    _write_hparams(writer, cfg, metrics)
    writer.close()
    write_json_atomic(metrics, run_dir / "metrics.json")
    return metrics


def _seeded_subset(split: Split, limit: int) -> Split:
    if limit <= 0 or limit >= len(split):
        return split
    index = torch.randperm(len(split), generator=torch.Generator().manual_seed(0))[:limit]
    return split.subset(index)


def _write_hparams(writer: SummaryWriter, cfg: DictConfig, metrics: Mapping[str, Any]) -> None:
    hparams = {
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
        if k.startswith(("val/", "test/")) and isinstance(v, (int, float)) and v is not None
    }
    writer.add_hparams(hparams, final, run_name=".")
