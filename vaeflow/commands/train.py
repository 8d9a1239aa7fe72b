r"""``vaeflow train [overrides]``: trains one VAE per job (``conf/train.yaml``)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from vaeflow.commands import run_command
from vaeflow.train import train

__all__ = ["main"]


@hydra.main(version_base="1.3", config_path="pkg://vaeflow.conf", config_name="train")
def main(cfg: DictConfig) -> dict | None:
    return run_command(train, cfg)
