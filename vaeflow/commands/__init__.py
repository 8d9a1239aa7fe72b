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
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from vaeflow.errors import VaeflowError

__all__ = ["run_command", "RunDirectories", "remove_if_empty"]

log = logging.getLogger("vaeflow")

#: the directories that the running command's Hydra job is about to create, deepest first
#: (set by :class:`RunDirectories` before Hydra creates them)
_CREATED: list[Path] = []


class RunDirectories(Callback):
    r"""A Hydra callback (``hydra.callbacks`` of ``conf/train.yaml`` and ``conf/eval.yaml``)
    that notes, before Hydra creates a run's output directory, which of it and its parents
    do not exist yet: after bad input, only those may be removed (:func:`remove_if_empty`),
    never a directory that was there before the command."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _CREATED.clear()
        try:
            path = Path(str(OmegaConf.select(config, "hydra.run.dir"))).absolute()
        except Exception:  # an output directory that cannot be resolved: Hydra reports it
            return
        while not path.exists() and path != path.parent:
            _CREATED.append(path)
            path = path.parent


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
    r"""After bad input, removes the run directory if this command created it and it holds
    nothing but Hydra's config copy and logs (no work was done), then the parents this
    command created that are left empty. A directory that existed before the command
    (a resumed run's, or one given as ``hydra.run.dir``) is left as it is."""
    run_dir = Path(run_dir).absolute()
    if run_dir not in _CREATED or not run_dir.is_dir():
        return
    for path in run_dir.rglob("*"):
        if path.is_file() and path.parts[len(run_dir.parts)] != ".hydra" and path.suffix != ".log":
            return
    shutil.rmtree(run_dir, ignore_errors=True)
    for directory in _CREATED[_CREATED.index(run_dir) + 1 :]:
        if directory.is_dir() and not any(directory.iterdir()):
            directory.rmdir()
