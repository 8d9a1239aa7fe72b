r"""The report's figures that need the models themselves (``samples.png``, ``posterior.png``):
each finished run's best checkpoint, loaded as ``vaeflow eval`` loads it, one at a time, on
the CPU with one thread (:func:`each_trained`)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar

from omegaconf import OmegaConf

from vaeflow.report.run import Run, _first_line

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from vaeflow.data import DataSplits
    from vaeflow.evaluate import TrainedRun

__all__ = ["each_trained"]

T = TypeVar("T")


@contextmanager
def _one_thread() -> Iterator[None]:
    r"""torch on one CPU thread for the duration: a few small batches gain nothing from
    more, and a report should not compete with training runs for cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _last_dataset_loader() -> Callable[[DictConfig], DataSplits]:
    r"""``load_dataset`` that keeps the last dataset it loaded: the report's runs are sorted
    by dataset, so each is read once, and only one is held in memory at a time."""
    from vaeflow.data import load_dataset

    last: dict[str, DataSplits] = {}

    def load(cfg: DictConfig) -> DataSplits:
        key = json.dumps(OmegaConf.to_container(cfg, resolve=True), sort_keys=True, default=str)
        if key not in last:
            last.clear()
            last[key] = load_dataset(cfg)
        return last[key]

    return load


def each_trained(
    runs: Sequence[Run], draw: Callable[[TrainedRun], T], skipped: Callable[[Run, str], None]
) -> list[tuple[Run, T]]:
    r"""``draw(trained)`` for each finished run, from its best checkpoint; a run that cannot
    be loaded or drawn is passed to ``skipped(run, why)`` instead (a report draws what it
    can, and says what it could not)."""
    from vaeflow.errors import VaeflowError
    from vaeflow.evaluate import load_trained

    load = _last_dataset_loader()
    rows = []
    with _one_thread():
        for run in runs:
            if not run.finished:
                continue
            try:
                trained = load_trained(run.path, "best", device="cpu", load_data=load)
                rows.append((run, draw(trained)))
            except VaeflowError as e:
                skipped(run, _first_line(str(e)))
            except Exception as e:  # the note names the error
                skipped(run, f"{type(e).__name__}: {_first_line(str(e))}")
    return rows
