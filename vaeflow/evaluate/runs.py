r"""Trained runs: from a run directory or checkpoint file to the model and its data.

:func:`run_dir_of` and :func:`resolve_run` find a run's directory and checkpoint (with
one-line errors for anything else); :func:`load_trained` rebuilds the model from the config
saved in the checkpoint and loads its dataset, the one way that ``vaeflow eval`` and
``vaeflow report`` both use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from vaeflow.checkpoint import load_checkpoint
from vaeflow.data import DataSplits, load_dataset
from vaeflow.errors import CheckpointError, ConfigError
from vaeflow.model import VAE, model_and_data
from vaeflow.resolvers import resumed_run_dir

__all__ = ["run_dir_of", "resolve_run", "TrainedRun", "load_trained"]

CHECKPOINTS = ("best", "last")


def run_dir_of(run: Any) -> str:
    r"""The run directory of ``run``, a run directory or a checkpoint file in one, as an
    absolute path (the OmegaConf resolver ``vaeflow.run_dir`` of ``conf/eval.yaml``).

    Raises a one-line :class:`ConfigError` when ``run`` is missing, does not exist or is a
    directory without ``checkpoints/``.
    """
    if run is None or str(run).strip() == "":
        raise ConfigError(
            "no run given: use `vaeflow eval <run dir>` (a directory that vaeflow train wrote) "
            "or run=<checkpoint .pt>"
        )
    path = Path(str(run)).expanduser()
    if not path.exists():
        raise ConfigError(
            f"run={run}: no such file or directory; give a run directory that vaeflow train wrote "
            "(it holds checkpoints/) or a checkpoint .pt file"
        )
    run_dir = resumed_run_dir(str(path))
    if run_dir is None and path.is_file():  # a checkpoint outside a run's checkpoints/
        run_dir = path.parent
    if run_dir is None:
        raise ConfigError(
            f"run={run} is not a vaeflow run directory (it has no checkpoints/); give the directory "
            "that vaeflow train printed, or run=<checkpoint .pt>"
        )
    return str(run_dir.resolve())


def resolve_run(run: Any, checkpoint: str = "best") -> tuple[Path, Path]:
    r"""``(checkpoint file, run directory)`` of a run directory or a checkpoint file."""
    run_dir = Path(run_dir_of(run))
    path = Path(str(run)).expanduser().resolve()
    if path.is_file():
        return path, run_dir
    if checkpoint not in CHECKPOINTS:
        raise ConfigError(f"checkpoint={checkpoint}: use best or last (or run=<path of a .pt file>)")
    ckpt = path / "checkpoints" / f"{checkpoint}.pt"
    if not ckpt.is_file():
        other = "last" if checkpoint == "best" else "best"
        raise CheckpointError(
            f"{ckpt} not found (the run may not have finished an epoch); try checkpoint={other}"
        )
    return ckpt, run_dir


def _training_cwd(run_dir: Path) -> Path | None:
    try:
        hydra_cfg = OmegaConf.load(run_dir / ".hydra" / "hydra.yaml")
        cwd = OmegaConf.select(hydra_cfg, "hydra.runtime.cwd", default=None)
        return Path(cwd) if cwd else None
    except Exception:
        return None


def _dataset_config(train_cfg: DictConfig, dataset_root: Any, run_dir: Path) -> DictConfig:
    dataset = train_cfg.dataset.copy()
    if dataset_root is not None:
        dataset.root = str(dataset_root)
    elif (
        dataset.get("root") and not Path(str(dataset.root)).is_absolute() and not Path(dataset.root).exists()
    ):
        # A relative root is relative to where training ran.
        cwd = _training_cwd(run_dir)
        if cwd is not None and (cwd / str(dataset.root)).exists():
            dataset.root = str(cwd / str(dataset.root))
    return dataset


@dataclass
class TrainedRun:
    r"""A trained model rebuilt from one of its checkpoints (:func:`load_trained`).

    Attributes:
        model: the VAE in eval mode, on the requested device.
        data: the dataset it was trained on, loaded afresh.
        config: the training config saved in the checkpoint.
        dataset: the dataset config actually loaded (``dataset_root`` applied).
        checkpoint: the checkpoint file.
        run_dir: the run directory.
        epoch: the epoch at which the checkpoint was written (``None`` if not recorded).
        step: the optimizer step at which it was written.
    """

    model: VAE
    data: DataSplits
    config: DictConfig
    dataset: DictConfig
    checkpoint: Path
    run_dir: Path
    epoch: int | None
    step: int | None


def load_trained(
    run: Any,
    checkpoint: str = "best",
    dataset_root: Any = None,
    device: str | torch.device = "cpu",
    load_data: Callable[[DictConfig], DataSplits] = load_dataset,
) -> TrainedRun:
    r"""Rebuilds a trained run's model and loads its data, the one way that ``vaeflow eval``
    and ``vaeflow report`` both use.

    The checkpoint is read with ``weights_only=True`` (:func:`~vaeflow.checkpoint.load_checkpoint`)
    and the model is rebuilt from the config saved in it, not from ``.hydra/``, so that
    a checkpoint is self-describing. A relative ``dataset.root`` is taken relative to where
    training ran when it does not exist from here.

    Arguments:
        run: a run directory written by ``vaeflow train``, or a checkpoint file in one.
        checkpoint: ``best`` or ``last`` (ignored when ``run`` is a file).
        dataset_root: where the data is, if not where the run was trained.
        device: where to put the model (the data stays on the CPU).
        load_data: reads the dataset that a ``dataset`` config describes; a caller that
            loads many runs of one dataset passes one that caches it.

    Raises:
        ConfigError: ``run`` is not a run directory or checkpoint.
        CheckpointError: the checkpoint is missing, corrupt, unsafe or from another model.
        DataError: the dataset's files are missing or malformed.
    """
    ckpt_path, run_dir = resolve_run(run, checkpoint)
    state = load_checkpoint(ckpt_path)
    train_cfg = OmegaConf.create(state["config"])
    dataset_cfg = _dataset_config(train_cfg, dataset_root, run_dir)
    model, data = model_and_data(train_cfg, load_data(dataset_cfg))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(
            f"checkpoint {ckpt_path} does not fit the model its config describes ({first[:160]})"
        ) from None
    model.to(device).eval()
    return TrainedRun(
        model, data, train_cfg, dataset_cfg, ckpt_path, run_dir, state.get("epoch"), state.get("step")
    )
