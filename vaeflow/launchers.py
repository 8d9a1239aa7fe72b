r"""Hydra launchers for sweeps: the optional extras they need and per-job resources.

``vaeflow <command> -m hydra/launcher=<name> ...`` picks a preset of
``conf/hydra/launcher/``: ``basic`` (Hydra's own, one job after another), ``joblib``
(parallel jobs on this machine), ``submitit_slurm`` (a Slurm cluster) and
``submitit_local`` (submitit on this machine). All but ``basic`` come from the optional
extra ``pip install 'vaeflow[launchers]'``; :func:`missing_launcher` turns a missing one
into one line before Hydra starts, and :func:`job_threads` gives each job of a parallel
sweep its share of the cores.
"""

from __future__ import annotations

import importlib
import os
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = [
    "LAUNCHER_PLUGINS",
    "EXTRA",
    "missing_launcher",
    "available_cores",
    "job_threads",
    "quiet_preset_warning",
]

#: launcher preset -> the module of the Hydra plugin that provides it
LAUNCHER_PLUGINS: dict[str, str] = {
    "joblib": "hydra_plugins.hydra_joblib_launcher",
    "submitit_slurm": "hydra_plugins.hydra_submitit_launcher",
    "submitit_local": "hydra_plugins.hydra_submitit_launcher",
}

EXTRA = "pip install 'vaeflow[launchers]'"

_LAUNCHER_OVERRIDE = re.compile(r"^(?:\+{1,2}|override\s+)?hydra/launcher=(?P<name>[\w-]+)$")


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def missing_launcher(args: Sequence[str], importable: Callable[[str], bool] = _importable) -> str | None:
    r"""One line naming the extra to install when ``args`` select a launcher whose plugin
    is not importable, else ``None``.

    Hydra's own error for a missing plugin is a multi-line "Error locating target"
    traceback; this check runs before Hydra does.

    Arguments:
        args: the command's arguments (Hydra overrides and flags).
        importable: ``importable(module) -> bool`` (replaceable in tests).

    Example:
        >>> missing_launcher(["-m", "hydra/launcher=joblib"], importable=lambda m: False)
        "hydra/launcher=joblib needs the Hydra joblib launcher plugin, which is not installed: pip install 'vaeflow[launchers]'"
        >>> missing_launcher(["-m", "seed=1,2"]) is None
        True
    """
    for arg in args:
        match = _LAUNCHER_OVERRIDE.match(arg.strip())
        if match is None or match["name"] not in LAUNCHER_PLUGINS:
            continue
        name = match["name"]
        if not importable(LAUNCHER_PLUGINS[name]):
            plugin = "joblib" if name == "joblib" else "submitit"
            return (
                f"hydra/launcher={name} needs the Hydra {plugin} launcher plugin, which is not installed: "
                f"{EXTRA}"
            )
    return None


def available_cores() -> int:
    r"""The CPU cores this process may use (its affinity mask and cgroup quota, via joblib
    where available)."""
    try:
        from joblib import cpu_count

        return max(1, int(cpu_count()))
    except ImportError:
        pass
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def job_threads(launcher: Mapping[str, Any] | None, cores: int | None = None) -> int | None:
    r"""Torch threads for one job of a sweep run by ``launcher`` (``hydra.launcher``),
    or ``None`` to keep torch's default.

    * joblib: ``max(1, cores // n_jobs)``, with joblib's meaning of ``n_jobs`` (``-1`` is
      one job per core, ``-2`` all cores but one, ...), so parallel jobs share the cores;
    * submitit: ``cpus_per_task`` when it is set;
    * anything else (the basic launcher runs one job at a time): ``None``.

    Example:
        >>> target = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
        >>> job_threads({"_target_": target, "n_jobs": 2}, cores=16)
        8
        >>> job_threads({"_target_": target, "n_jobs": -1}, cores=16)
        1
    """
    if not launcher:
        return None
    target = str(launcher.get("_target_", ""))
    cores = available_cores() if cores is None else max(1, int(cores))
    if "joblib" in target.lower():
        n_jobs = launcher.get("n_jobs")
        n_jobs = -1 if n_jobs is None else int(n_jobs)
        if n_jobs < 0:
            n_jobs = max(1, cores + 1 + n_jobs)
        return max(1, cores // max(n_jobs, 1))
    if "submitit" in target.lower():
        cpus = launcher.get("cpus_per_task")
        return int(cpus) if cpus else None
    return None


def quiet_preset_warning() -> None:
    r"""Silences Hydra's deprecation warning about our launcher presets.

    ``conf/hydra/launcher/joblib.yaml`` (and the submitit ones) have the names of the
    plugins' own structured configs, so that ``hydra/launcher=joblib`` selects our preset;
    Hydra 1.3 then validates the preset against the plugin's schema (which catches a
    mistyped key) and warns that this matching is deprecated, in the main process and
    again in every worker. Only that warning, for those presets, is filtered.
    """
    names = "|".join(LAUNCHER_PLUGINS)
    warnings.filterwarnings(
        "ignore",
        message=rf"\s*'hydra/launcher/({names})' is validated against ConfigStore schema",
        category=UserWarning,
    )
