r"""``vaeflow train [overrides]``: trains one VAE per job (``conf/train.yaml``).

In a sweep run by a parallel launcher (``hydra/launcher=joblib``, ``submitit_*``) each job
gets its share of the cores as torch threads unless ``trainer.threads`` is set; with
``+eval=true`` each job also runs ``vaeflow eval`` on its run at the end (options of
``conf/eval.yaml`` as ``+eval.k=1000``, ``+eval.split=val``, ...), so that a sweep
directory is complete by itself.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from vaeflow.commands import run_command
from vaeflow.errors import ConfigError, VaeflowError
from vaeflow.launchers import job_threads, quiet_preset_warning
from vaeflow.training import train

__all__ = ["main", "train_job", "evaluate_run"]

log = logging.getLogger("vaeflow")

# here at import, because a joblib worker composes its job's config (and warns) after
# importing this module and before running any of it
quiet_preset_warning()


def _share_cores(cfg: DictConfig, multirun: bool) -> None:
    if not multirun or cfg.trainer.get("threads") is not None:
        return
    try:
        launcher = OmegaConf.to_container(HydraConfig.get().launcher, resolve=False)
    except ValueError:  # not inside a Hydra job
        return
    threads = job_threads(launcher)
    if threads is not None:
        with open_dict(cfg):
            cfg.trainer.threads = threads
        log.info("parallel launcher: torch threads for this job: %d (trainer.threads=N to change)", threads)


def evaluate_run(
    run_dir: str | Path, options: Mapping[str, Any] | None = None, *, multirun: bool = True, **defaults: Any
) -> dict | None:
    r"""Runs ``vaeflow eval`` on a finished run, writing ``<run>/eval/<time>_<split>_k<k>/``.

    Arguments:
        run_dir: the training run's directory.
        options: keys of ``conf/eval.yaml`` to change (``k``, ``split``, ``limit``, ...).
        multirun: whether this is one job of a sweep (plain progress lines).
        defaults: keys set before ``options`` (the training job's device and threads).

    Returns:
        What ``eval.json`` holds, or ``None`` when :mod:`vaeflow.evaluate` is not available
        (a warning is logged).
    """
    try:
        from vaeflow.evaluate import evaluate
    except ImportError as e:
        log.warning("+eval: vaeflow.evaluate is not available (%s); evaluation skipped", e)
        return None
    base = OmegaConf.create((resources.files("vaeflow.conf") / "eval.yaml").read_text())
    base.pop("hydra", None)
    cfg = OmegaConf.merge(base, defaults, dict(options or {}), {"run": str(run_dir)})
    out_dir = Path(run_dir) / "eval" / f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_{cfg.split}_k{cfg.k}"
    log.info("+eval: evaluating %s (k=%s, %s split) into %s", run_dir, cfg.k, cfg.split, out_dir)
    return evaluate(cfg, out_dir, multirun=multirun)


def train_job(cfg: DictConfig, run_dir: str | Path, *, multirun: bool = False) -> dict[str, Any] | None:
    r"""One job of ``vaeflow train``: :func:`~vaeflow.training.train`, then the evaluation
    that ``+eval`` asks for.

    An evaluation that fails with a :class:`~vaeflow.errors.VaeflowError` is recorded in
    ``<run>/eval_failed.txt`` and logged; the training run stays a success.
    """
    option = cfg.get("eval")
    if option is not None and not isinstance(option, bool | DictConfig):
        raise ConfigError(f"eval={option}: use +eval=true, or eval options such as +eval.k=1000")
    _share_cores(cfg, multirun)
    metrics = train(cfg, run_dir, multirun=multirun)
    options = OmegaConf.to_container(option) if isinstance(option, DictConfig) else {}
    if option is True or (isinstance(option, DictConfig) and options.pop("enabled", True)):
        defaults = {
            "device": cfg.trainer.device,
            "threads": cfg.trainer.threads,
            "progress": cfg.trainer.progress,
        }
        try:
            evaluate_run(run_dir, options, multirun=multirun, **defaults)
        except VaeflowError as e:
            log.error("+eval failed: %s", e)
            (Path(run_dir) / "eval_failed.txt").write_text(f"{type(e).__name__}: {e}\n")
    return metrics


def _has_depth(family: str) -> bool | None:
    path = resources.files("vaeflow.conf") / "posterior" / f"{family}.yaml"
    try:
        return "depth" in (OmegaConf.create(path.read_text()) or {})
    except (OSError, ValueError):
        return None  # not one of ours: Hydra reports it


def check_depth_sweep(args: list[str]) -> str | None:
    r"""One line when ``args`` set ``posterior.depth`` for a family without flow steps
    (``posterior=mean_field,iaf posterior.depth=1,2``), which Hydra would report as an
    unknown key; else ``None``."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        overrides = OverridesParser.create().parse_overrides([a for a in args if not a.startswith("-")])
    except Exception:
        return None  # Hydra reports the syntax error itself
    depth = next((o for o in overrides if o.key_or_group == "posterior.depth"), None)
    chosen = next((o for o in overrides if o.key_or_group == "posterior"), None)
    if depth is None or chosen is None or chosen.is_delete():
        return None
    values = list(chosen.sweep_string_iterator()) if chosen.is_sweep_override() else [str(chosen.value())]
    flat = [v for v in values if _has_depth(v) is False]
    if not flat:
        return None
    flows = [v for v in values if v not in flat]
    if not flows:
        return f"posterior={','.join(flat)} has no flow steps, so no posterior.depth: leave it out"
    return (
        f"posterior={','.join(flat)} has no flow steps, so no posterior.depth; sweep it on its own into "
        f"the same directory: `vaeflow train -m posterior={','.join(flat)} hydra.sweep.dir=D` and "
        f"`vaeflow train -m posterior={','.join(flows)} {depth.input_line} hydra.sweep.dir=D`, "
        "then `vaeflow report D`"
    )


@hydra.main(version_base="1.3", config_path="pkg://vaeflow.conf", config_name="train")
def _main(cfg: DictConfig) -> dict | None:
    return run_command(train_job, cfg)


def main() -> None:
    if problem := check_depth_sweep(sys.argv[1:]):
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    _main()
