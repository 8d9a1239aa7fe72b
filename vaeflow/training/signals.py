r"""SIGINT and SIGTERM (what SLURM sends before preemption) stop a run cleanly: the current
step finishes, ``last.pt`` is written, and the error says how to continue."""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vaeflow.errors import VaeflowError

__all__ = ["StopRequest", "stop_on_signals", "Interrupted"]

log = logging.getLogger("vaeflow")


class StopRequest:
    r"""The signal that asked the run to stop, if any (set by the handler, read by the loop)."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __bool__(self) -> bool:
        return self.signal is not None


@contextmanager
def stop_on_signals(request: StopRequest) -> Iterator[None]:
    r"""While inside, SIGINT and SIGTERM set ``request`` (the loop stops after the current
    step); a second SIGINT interrupts at once. Outside the main thread (a launcher's
    worker), signals are left alone."""

    def handler(signum: int, frame: Any) -> None:
        if request.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        request.signal = signum
        log.warning(
            "%s received: finishing the current step, then saving last.pt", signal.Signals(signum).name
        )

    try:
        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread
        previous = {}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class Interrupted(VaeflowError):
    r"""A signal stopped the run after writing ``last.pt``; the exit code is 128 + the signal.

    Arguments:
        signum: the signal.
        epoch: the epoch under way (counted from 1) or the last one finished.
        step: steps taken.
        run_dir: the run's directory.
    """

    def __init__(self, signum: int, epoch: int, step: int, run_dir: Path) -> None:
        self.exit_code = 128 + int(signum)
        super().__init__(
            f"{signal.Signals(signum).name}: stopped at epoch {epoch}, step {step}; "
            f"{Path(run_dir) / 'checkpoints' / 'last.pt'} is saved; continue with: "
            f"vaeflow train <same overrides> trainer.resume={run_dir}"
        )
