r"""Checkpoints: plain containers, written atomically, read with ``weights_only=True``.

A checkpoint holds only tensors, numbers, strings and nested dicts and lists (state
dicts, the resolved config as a dict, RNG states), so ``torch.load(weights_only=True)``
reads it and a file carrying a pickled object is refused before any of its code runs.
It is always read onto the CPU: the caller moves the model and optimizer to the run's
device, and restores each generator state on its own device (:mod:`vaeflow.randomness`),
so a run trained on one device resumes and evaluates on another. Writes (checkpoints and
the run's JSON files alike, :func:`write_atomic`) go to a temporary file in the same
directory, are fsynced and then renamed over the target, so a crash at any moment leaves
either the old file or the new one.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

from vaeflow.errors import CheckpointError

__all__ = ["write_atomic", "save_atomic", "write_json_atomic", "load_checkpoint", "upgrade_config"]


def write_atomic(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    r"""Calls ``write(file)`` on a temporary file beside ``path``, fsyncs it and renames it
    over ``path`` (then fsyncs the directory): ``path`` is never seen half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_atomic(obj: Any, path: str | Path) -> None:
    r"""``torch.save(obj, path)`` through :func:`write_atomic`."""
    write_atomic(path, lambda f: torch.save(obj, f))


def write_json_atomic(obj: Any, path: str | Path) -> None:
    r"""``obj`` as indented JSON (keys sorted) through :func:`write_atomic`."""
    text = json.dumps(obj, indent=2, sort_keys=True) + "\n"
    write_atomic(path, lambda f: f.write(text.encode()))


def load_checkpoint(path: str | Path) -> dict:
    r"""Reads a checkpoint onto the CPU, safely (``weights_only=True``), or raises a
    one-line :class:`CheckpointError` saying what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} not found; give the path of a .pt file written by vaeflow train"
        )
    if not zipfile.is_zipfile(path):  # torch.save writes zip archives; anything else is not ours
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated (not a complete torch zip archive); "
            "use another checkpoint (e.g. best.pt or last.pt of the same run)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unsupported content"
        raise CheckpointError(
            f"checkpoint {path} was refused: it holds objects other than tensors and plain "
            f"containers ({first[:160]}); only load checkpoints written by vaeflow"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated ({type(e).__name__}); "
            "use another checkpoint (e.g. best.pt or last.pt of the same run)"
        ) from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise CheckpointError(f"checkpoint {path} is not a vaeflow checkpoint (no model or config)")
    if isinstance(state["config"], dict):
        state["config"] = upgrade_config(state["config"])
    return state


#: datasets whose ``binarize`` option was fixed to ``dynamic`` before it was an option
_BINARIZED_BEFORE = ("digits", "mnist", "fashion_mnist", "omniglot")


def upgrade_config(config: dict) -> dict:
    r"""A checkpoint's config in today's keys, so that older runs resume and evaluate:
    ``model.likelihood: <name>`` became the ``likelihood`` group, the MNIST-like
    datasets gained ``binarize`` (which was ``dynamic``), and the ``objective`` block became
    a group (it was the ELBO with the reparameterization gradient)."""
    model, dataset = config.get("model"), config.get("dataset")
    if "likelihood" not in config and isinstance(model, dict):
        config = {**config, "model": {k: v for k, v in model.items() if k != "likelihood"}}
        config["likelihood"] = {"name": model.get("likelihood", "bernoulli")}
    if isinstance(dataset, dict) and dataset.get("name") in _BINARIZED_BEFORE and "binarize" not in dataset:
        config = {**config, "dataset": {**dataset, "binarize": "dynamic"}}
    objective = config.get("objective")
    if isinstance(objective, dict) and "name" not in objective:
        config = {**config, "objective": {"name": "elbo", **objective, "gradient": "reparam"}}
    return config
