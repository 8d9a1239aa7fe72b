"""Shared fixtures: the real configs, composed as the CLI composes them."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hydra import compose, initialize_config_module
from omegaconf import DictConfig


@pytest.fixture
def compose_train() -> Callable[..., DictConfig]:
    """``compose_train("posterior=iaf", ...)``: conf/train.yaml with overrides."""

    def _compose(*overrides: str, config_name: str = "train") -> DictConfig:
        with initialize_config_module(config_module="vaeflow.conf", version_base="1.3"):
            return compose(config_name=config_name, overrides=list(overrides))

    return _compose
