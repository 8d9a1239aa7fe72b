r"""The dataset registry: ``dataset=<name>`` selects a loader registered here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vaeflow.data.base import DataSplits
from vaeflow.registry import Registry

__all__ = ["DATASETS", "register", "load_dataset"]

DATASETS = Registry("dataset")
register = DATASETS.register


def load_dataset(cfg: Mapping[str, Any]) -> DataSplits:
    r"""Loads the dataset that a ``dataset`` config group option describes.

    The option's ``name`` picks the loader; its other keys are the loader's keyword
    arguments.
    """
    return DATASETS.build(cfg)
