r"""What sets the runs of a report apart: each run's *setting* (the config values, other than
the family, depth and seed, that differ between the runs) and its short *label*."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vaeflow.report.run import Run

__all__ = [
    "IGNORED_KEYS",
    "IGNORED_PREFIXES",
    "OBJECTIVE_KEYS",
    "flatten",
    "settings_of",
    "assign_settings",
    "assign_labels",
]

#: config keys that never make two runs different settings
IGNORED_KEYS = (
    "seed",
    "eval",  # +eval=true: whether the job also evaluated itself
    "trainer.resume",  # how a run was started, not what it trains
    "trainer.threads",
    "trainer.device",
    "trainer.progress",
    "dataset.root",
    "dataset.download",
)
IGNORED_PREFIXES = ("eval.", "hydra.")
#: config keys that the report's objective column shows (:attr:`~vaeflow.report.run.Run.objective`)
OBJECTIVE_KEYS = ("objective.name", "objective.k", "objective.gradient")


#: the groups whose keys are compared only between runs of the same choice of the group
_WITHIN = ("posterior", "objective", "prior")


def _group(key: str) -> str:
    return key.split(".", 1)[0]


def _within_choice(key: str) -> bool:
    r"""Whether ``key`` is an option of a group's choice (``prior.components``), compared
    only between runs that made the same choice (not the choice, ``prior.name``, itself)."""
    return _group(key) in _WITHIN and key != _group(key) + ".name"


def _value(run: Run, key: str) -> Any:
    r"""A run's value of ``key``; absent and ``null`` are the same (a key added later with
    a null default)."""
    value = run.config.get(key)
    return "<missing>" if value is None else value


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for key, value in obj.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tuple(obj) if isinstance(obj, list) else obj}


def assign_settings(runs: Sequence[Run]) -> None:
    r"""Sets each run's ``setting``: the config values (other than the family, depth, seed
    and objective) that differ between runs, e.g. ``model.latent_dim=8``. Keys of the
    posterior are compared only between runs of the same family, and those of the
    objective between runs of the same objective."""
    for run, setting in zip(runs, settings_of(runs)):
        run.setting = setting


def settings_of(runs: Sequence[Run]) -> list[str]:
    r"""Each run's setting (see :func:`assign_settings`) among ``runs`` only."""
    keys: set[str] = set()
    for run in runs:
        keys |= set(run.config)
    varying = []
    for key in sorted(keys):
        if (
            key in IGNORED_KEYS
            or key.startswith(IGNORED_PREFIXES)
            or key in ("posterior.name", "posterior.depth", *OBJECTIVE_KEYS)
        ):
            continue
        if _within_choice(key):  # compared between runs of one family, objective, prior
            choice = _group(key) + ".name"
            groups: dict[str, set] = {}
            for run in runs:
                groups.setdefault(str(run.config.get(choice)), set()).add(repr(_value(run, key)))
            if any(len(values) > 1 for values in groups.values()):
                varying.append(key)
        elif len({repr(_value(run, key)) for run in runs}) > 1:
            varying.append(key)
    out = []
    for run in runs:
        parts = []
        for key in varying:
            if _within_choice(key) and _value(run, key) == "<missing>":
                continue
            value = run.config.get(key, "<missing>")
            value = ",".join(map(str, value)) if isinstance(value, tuple) else value
            parts.append(f"{key}={value}")
        out.append(" ".join(parts))
    return out


def assign_labels(runs: Sequence[Run]) -> None:
    r"""Sets each run's ``label``: its name without the ``key=value`` items that every
    job directory name shares (``0_posterior.depth=1,seed=1,trainer.max_epochs=5`` ->
    ``0_posterior.depth=1,seed=1`` when all runs have ``trainer.max_epochs=5``)."""
    split = []
    for run in runs:
        head, _, tail = run.name.rpartition("/")
        match = re.fullmatch(r"(\d+)_(.*)", tail)
        items = match[2].split(",") if match and "=" in match[2] else None
        split.append((head, match[1] if match else tail, items))
    common = (
        set.intersection(*(set(items) for _, _, items in split if items))
        if any(i for *_, i in split)
        else set()
    )
    if len(runs) < 2:
        common = set()
    for run, (head, num, items) in zip(runs, split):
        if items is None:
            run.label = run.name
            continue
        rest = [item for item in items if item not in common]
        tail = f"{num}_{','.join(rest)}" if rest else num
        run.label = f"{head}/{tail}" if head else tail
