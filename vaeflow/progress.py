r"""Progress reporting: a rich progress bar on a terminal, plain log lines elsewhere.

``auto`` picks rich when stdout is a terminal and the run is not one job of a multirun
(parallel jobs would fight over the screen); otherwise each epoch is one log line.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from vaeflow.checks import choice

__all__ = ["Reporter", "TaskProgress", "progress_mode"]

log = logging.getLogger("vaeflow")


def progress_mode(setting: str, multirun: bool = False, key: str = "trainer.progress") -> str:
    r"""``auto | rich | plain`` (the value of config ``key``) -> the mode to use."""
    choice(key, setting, ("auto", "rich", "plain"))
    if setting == "auto":
        return "rich" if sys.stdout.isatty() and not multirun else "plain"
    return setting


@contextmanager
def _quiet_console_handlers() -> Iterator[None]:
    # While the rich bar owns the terminal, log records go only to the log file.
    handlers = [h for h in logging.getLogger().handlers if type(h) is logging.StreamHandler]
    levels = [h.level for h in handlers]
    for h in handlers:
        h.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for h, level in zip(handlers, levels):
            h.setLevel(level)


class Reporter:
    r"""Shows training progress.

    Arguments:
        mode: ``rich`` or ``plain``.
        total_epochs: the epoch budget.
        steps_per_epoch: steps in one epoch.
    """

    def __init__(self, mode: str, total_epochs: int, steps_per_epoch: int) -> None:
        self.mode = mode
        self.total_epochs, self.steps_per_epoch = total_epochs, steps_per_epoch
        self._progress: Progress | None = None
        self._quiet = None

    def __enter__(self) -> Reporter:
        if self.mode == "rich":
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[status]}"),
                console=Console(),
            )
            self._progress.start()
            self._epochs = self._progress.add_task("epochs", total=self.total_epochs, status="")
            self._steps = self._progress.add_task("epoch 1", total=self.steps_per_epoch, status="")
            self._quiet = _quiet_console_handlers()
            self._quiet.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._quiet.__exit__(*exc)

    def start_epoch(self, epoch: int, completed: int = 0) -> None:
        if self._progress is not None:
            self._progress.reset(
                self._steps, total=self.steps_per_epoch, completed=completed, description=f"epoch {epoch}"
            )

    def step(self) -> None:
        r"""One step done (nothing is read from the device)."""
        if self._progress is not None:
            self._progress.update(self._steps, advance=1)

    def status(self, text: str) -> None:
        r"""The status shown beside the step bar."""
        if self._progress is not None:
            self._progress.update(self._steps, status=text)

    def end_epoch(self, epoch: int, line: str) -> None:
        self.message(line)
        if self._progress is not None:
            self._progress.update(self._epochs, completed=epoch)

    def message(self, line: str) -> None:
        log.info(line)
        if self._progress is not None:
            self._progress.console.print(line, highlight=False, markup=False)


class TaskProgress:
    r"""Progress of one task of ``total`` units: a rich bar with the time left on a
    terminal; otherwise a log line every 10%."""

    def __init__(self, mode: str, total: int, description: str) -> None:
        self.mode, self.total, self.description = mode, max(int(total), 1), description
        self.start = time.perf_counter()
        self._next = 0.1
        self._bar = None

    def __enter__(self) -> TaskProgress:
        if self.mode == "rich":
            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
            )
            self._bar.start()
            self._task = self._bar.add_task(self.description, total=self.total, status="")
            self._quiet = _quiet_console_handlers()
            self._quiet.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._quiet.__exit__(*exc)

    def update(self, done: int, status: str = "") -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=done, status=status)
        elif done / self.total >= self._next - 1e-9 or done >= self.total:
            elapsed = time.perf_counter() - self.start
            eta = elapsed * (self.total - done) / max(done, 1)
            log.info(
                "%s: %3.0f%%  %s  %.0fs elapsed, ~%.0fs left",
                self.description,
                100 * done / self.total,
                status,
                elapsed,
                eta,
            )
            while self._next <= done / self.total + 1e-9:
                self._next += 0.1
