r"""One module per command: thin ``@hydra.main`` shims over pure functions."""

from __future__ import annotations

import logging
import sys
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
    """
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        return function(cfg, run_dir, multirun=multirun)
    except VaeflowError as e:
        log.error("error: %s", e)
        if multirun:
            (run_dir / "failed.txt").write_text(f"{type(e).__name__}: {e}\n")
            return None
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
