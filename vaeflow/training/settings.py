r"""The training settings, checked before anything is built or written, and the optimizer.

:func:`check_settings` reads every value of ``trainer.*``, ``optim.*`` and ``seed`` that the
loop uses and refuses, in one line, any that cannot work; values are checked, never coerced
(``trainer.max_epochs=2.5`` is an error, not 2 epochs). The objective checks its own keys
(:func:`~vaeflow.objectives.build_objective`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from omegaconf import DictConfig

from vaeflow.checks import boolean, choice, integer, number, text
from vaeflow.errors import ConfigError

__all__ = ["OPTIMIZERS", "PROGRESS_MODES", "check_settings", "build_optimizer"]

OPTIMIZERS = {"adam": torch.optim.Adam, "adamax": torch.optim.Adamax}
PROGRESS_MODES = ("auto", "rich", "plain")


def check_settings(cfg: DictConfig) -> None:
    r"""Checks the settings of the training loop; raises a one-line :class:`ConfigError`
    naming the first key whose value cannot work."""
    t = cfg.trainer
    integer("trainer.max_epochs", t.max_epochs, 1, advice="train for at least 1 epoch (an integer)")
    integer("trainer.batch_size", t.batch_size, 1, advice="use a batch size >= 1 (an integer)")
    integer("trainer.val_batch_size", t.val_batch_size, 1, advice="use a batch size >= 1 (an integer)")
    integer("trainer.iw_k", t.iw_k, 1, advice="the IW-NLL estimate needs an integer k >= 1")
    integer("trainer.iw_every", t.iw_every, 0, advice="use 0 (never) or a number of epochs")
    integer("trainer.iw_limit", t.iw_limit, 0, advice="use 0 (all) or a number of images")
    integer("trainer.log_every", t.log_every, 1, advice="use a number of steps >= 1")
    integer("trainer.images", t.images, 0, advice="use 0 (no grids) or a number of images")
    integer("trainer.max_bad_steps", t.max_bad_steps, 1, advice="use an integer >= 1")
    integer("trainer.checkpoint_every_epochs", t.checkpoint_every_epochs, 1, advice="use an integer >= 1")
    integer("trainer.checkpoint_every_steps", t.checkpoint_every_steps, 1, none=True)
    integer("trainer.threads", t.threads, 1, none=True, advice="use null or a number of threads >= 1")
    number("trainer.grad_clip", t.grad_clip, 0, above=True, none=True, advice="use null or a norm > 0")
    integer("trainer.early_stopping.patience", t.early_stopping.patience, 1, none=True)
    number("trainer.early_stopping.min_delta", t.early_stopping.min_delta, 0)
    boolean("trainer.test", t.test)
    boolean("trainer.compile", t.get("compile", False))  # absent in configs written before it existed
    choice("trainer.progress", t.progress, PROGRESS_MODES)
    text("trainer.device", t.device)
    text("trainer.resume", t.resume, none=True)
    integer("seed", cfg.seed, advice="use an integer")
    _check_optimizer(cfg.optim)


def _check_optimizer(cfg: Mapping[str, Any]) -> None:
    name = cfg.get("name")
    if name not in OPTIMIZERS:
        raise ConfigError(f"optim={name}: choose one of {', '.join(OPTIMIZERS)}")
    number("optim.lr", cfg.get("lr"), 0, above=True, advice="the learning rate must be a number > 0")
    betas = cfg.get("betas", (0.9, 0.999))
    if isinstance(betas, str) or not isinstance(betas, Sequence) or len(betas) != 2:
        raise ConfigError(f"optim.betas={betas}: use two numbers in [0, 1), e.g. [0.9, 0.999]")
    for i, beta in enumerate(betas):
        number(f"optim.betas[{i}]", beta, 0, advice="use two numbers in [0, 1), e.g. [0.9, 0.999]")
        if beta >= 1:
            raise ConfigError(f"optim.betas={list(betas)}: use two numbers in [0, 1)")
    number("optim.eps", cfg.get("eps", 1e-8), 0, above=True)
    number("optim.weight_decay", cfg.get("weight_decay", 0.0), 0)
    for key in ("fused", "foreach"):
        if cfg.get(key) is not None:
            boolean(f"optim.{key}", cfg.get(key))


def build_optimizer(cfg: Mapping[str, Any], params) -> torch.optim.Optimizer:
    r"""Adam or Adamax with ``lr``, ``betas``, ``eps`` and ``weight_decay`` from the config,
    and its implementation: ``fused`` (one kernel for all parameters; Adam, which can then
    also skip a step on the device, see :class:`~vaeflow.training.step.TrainStep`) or
    ``foreach`` (``null``: torch's default, a per-tensor loop on the CPU)."""
    _check_optimizer(cfg)
    options = dict(cfg)
    name = options.pop("name")
    options["betas"] = tuple(options.get("betas", (0.9, 0.999)))
    try:
        return OPTIMIZERS[name](params, **options)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ConfigError(f"optim={name}: {e}") from None
