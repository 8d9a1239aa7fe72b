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

#: what the running command's Hydra job is about to create: the output directory and its
#: parents that do not exist yet (deepest first), or, when the output directory exists,
#: the paths already in it (set by :class:`RunDirectories` before Hydra writes anything)
_CREATED: list[Path] = []
_EXISTING: set[Path] | None = None


class RunDirectories(Callback):
    r"""A Hydra callback (``hydra.callbacks`` of ``conf/train.yaml`` and ``conf/eval.yaml``)
    that notes, before Hydra creates a run's output directory and writes its config and log
    there, what exists already: after bad input, :func:`remove_if_empty` removes only what
    the command created, never a directory or file that was there before it."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _EXISTING
        _CREATED.clear()
        _EXISTING = None
        try:
            path = Path(str(OmegaConf.select(config, "hydra.run.dir"))).absolute()
        except Exception:  # an output directory that cannot be resolved: Hydra reports it
            return
        if path.is_dir():
            _EXISTING = {path, *path.rglob("*")}
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
    r"""After bad input, removes what this command created, if that is nothing but Hydra's
    config copy and logs (no work was done): the run directory and the parents it created
    that are left empty, or, in a directory that existed before (a resumed run's, or one
    given as ``hydra.run.dir``), the files and folders that are new in it."""
    run_dir = Path(run_dir).absolute()
    if not run_dir.is_dir():
        return
    new = [p for p in run_dir.rglob("*") if _EXISTING is None or p not in _EXISTING]
    if any(p.is_file() and p.parts[len(run_dir.parts)] != ".hydra" and p.suffix != ".log" for p in new):
        return
    if run_dir in _CREATED:
        shutil.rmtree(run_dir, ignore_errors=True)
        for directory in _CREATED[_CREATED.index(run_dir) + 1 :]:
            if directory.is_dir() and not any(directory.iterdir()):
                directory.rmdir()
    elif _EXISTING is not None:
        for path in sorted(new, key=lambda p: len(p.parts), reverse=True):  # files before their folders
            if path.is_file():
                path.unlink()
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
