r"""One module per command: thin ``@hydra.main`` shims over pure functions."""

from __future__ import annotations

import logging
import shutil
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from vaeflow.errors import VaeflowError

__all__ = ["run_command"]

log = logging.getLogger("vaeflow")


def run_command(function: Callable[..., Any], cfg: Any) -> Any:
    r"""Runs ``function(cfg, run_dir, multirun=...)`` inside a Hydra job.

    A :class:`VaeflowError` becomes one line on stderr and a non-zero exit; in a
    multirun it is recorded in the job's directory (``failed.txt``) and the sweep goes on.
    Any other exception (a bug) is recorded there too, with its traceback, and raised:
    Hydra runs the sweep's other jobs and reports it at the end.
    """
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        return function(cfg, run_dir, multirun=multirun)
    except VaeflowError as e:
        if multirun:
            log.error("error: %s", e)
            (run_dir / "failed.txt").write_text(f"{type(e).__name__}: {e}\n")
            return None
        remove_if_empty(run_dir)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except Exception as e:
        if multirun:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "failed.txt").write_text(f"{type(e).__name__}: {e}\n\n{traceback.format_exc()}")
        raise


def remove_if_empty(run_dir: Path) -> None:
    r"""Removes a run directory that holds nothing but Hydra's config copy and logs (a
    run that stopped on bad input before any work), so bad input leaves no files behind."""
    if not run_dir.is_dir():
        return
    for path in run_dir.rglob("*"):
        if path.is_file() and path.parts[len(run_dir.parts)] != ".hydra" and path.suffix != ".log":
            return
    shutil.rmtree(run_dir, ignore_errors=True)
    parent = run_dir.parent  # outputs/train/ left empty too
    for directory in (parent, parent.parent):
        if directory.is_dir() and not any(directory.iterdir()):
            directory.rmdir()
