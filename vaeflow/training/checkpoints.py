r"""A run's checkpoints: where they are, when they are written, and the rules of resuming.

``checkpoints/last.pt`` is written at the end of every ``trainer.checkpoint_every_epochs``
epochs (and of the last one), every ``trainer.checkpoint_every_steps`` steps inside an
epoch, and when a stop signal arrives; ``checkpoints/best.pt`` whenever the validation
value of the training bound improves (the ELBO, or an ``iwae`` run's IW bound with its k;
never with non-finite weights). Both are written atomically.

A run resumes from a checkpoint when the model, the data and the objective are the ones
it was trained with: only ``trainer.*``, ``+eval`` and where the data is
(``dataset.root``, ``dataset.download``: data moved to a scratch disk) may differ, and the
batch size only at an epoch's end (a checkpoint written inside an epoch replays the rest
of it batch by batch).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vaeflow.checkpoint import load_checkpoint, save_atomic
from vaeflow.errors import CheckpointError

__all__ = [
    "RESUMABLE_KEYS",
    "CheckpointManager",
    "resume_checkpoint",
    "read_resume_checkpoint",
    "check_same_model",
]

log = logging.getLogger("vaeflow")

#: config keys (and whole sections) that may change when a run is resumed, none of which
#: changes the model it trains: how it trains and where it writes (``trainer``, ``hydra``),
#: ``eval`` (``+eval=true``: whether the job evaluates the run when it ends) and where the
#: data is read from
RESUMABLE_KEYS = ("trainer", "hydra", "eval", "dataset.root", "dataset.download")


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


def read_resume_checkpoint(path: Path, config: Mapping[str, Any]) -> dict[str, Any]:
    r"""Reads the checkpoint to resume from (onto the CPU) and checks that it fits the run
    that ``config`` describes; one-line :class:`CheckpointError` otherwise."""
    state = load_checkpoint(path)
    check_same_model(state["config"], config, path)
    saved_batch = _get(state["config"], "trainer.batch_size")
    batch = _get(config, "trainer.batch_size")
    if state.get("partial") and saved_batch != batch:
        epoch = int(state.get("epoch", 0)) + 1
        raise CheckpointError(
            f"checkpoint {path} was written inside epoch {epoch} with trainer.batch_size={saved_batch}; "
            f"resume with trainer.batch_size={saved_batch} (a new batch size can start from a checkpoint "
            "written at an epoch's end)"
        )
    return state


def check_same_model(saved: Mapping[str, Any], current: Mapping[str, Any], path: Path) -> None:
    r"""Refuses to resume when the model, data or objective config differs from the
    checkpoint's; the message names the keys that differ."""
    differ = [
        key
        for key in _flat_keys(saved) | _flat_keys(current)
        if not _resumable(key) and _get(saved, key) != _get(current, key)
    ]
    if differ:
        shown = ", ".join(
            f"{k} ({_get(saved, k)!r} in the checkpoint, {_get(current, k)!r} now)"
            for k in sorted(differ)[:4]
        )
        more = f" and {len(differ) - 4} more" if len(differ) > 4 else ""
        raise CheckpointError(
            f"checkpoint {path} was trained with another configuration: {shown}{more}; "
            "resume with the same settings (only trainer.*, +eval and dataset.root may change)"
        )


def _resumable(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in RESUMABLE_KEYS)


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


class CheckpointManager:
    r"""The policy of ``last.pt`` and ``best.pt`` in ``<run>/checkpoints/``.

    Arguments:
        run_dir: the run's directory.
        every_epochs: epochs between writes of ``last.pt``.
        every_steps: steps between writes of ``last.pt`` inside an epoch (``None``: none).
    """

    def __init__(self, run_dir: Path, every_epochs: int, every_steps: int | None) -> None:
        self.dir = Path(run_dir) / "checkpoints"
        self.every_epochs, self.every_steps = every_epochs, every_steps
        self.last, self.best = self.dir / "last.pt", self.dir / "best.pt"

    def clear_temporaries(self) -> None:
        r"""Removes temporaries left by a process killed while writing a checkpoint."""
        if self.dir.is_dir():
            for stale in self.dir.glob(".*.tmp"):
                stale.unlink(missing_ok=True)

    def last_due(self, epoch: int, max_epochs: int) -> bool:
        r"""Whether ``last.pt`` is written at the end of epoch ``epoch``."""
        return epoch % self.every_epochs == 0 or epoch == max_epochs

    def step_due(self, step: int) -> bool:
        r"""Whether ``last.pt`` is written after step ``step`` (inside an epoch)."""
        return bool(self.every_steps) and step % int(self.every_steps) == 0

    def save_last(self, state: dict[str, Any]) -> None:
        save_atomic(state, self.last)

    def save_best(self, state: dict[str, Any]) -> None:
        save_atomic(state, self.best)

    def best_or_none(self) -> str:
        r"""``best.pt``'s path, or what to say when there is none yet."""
        return str(self.best) if self.best.exists() else "none (no epoch finished)"
