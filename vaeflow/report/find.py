r"""Finding the runs of a report: run directories under the directories given
(:func:`find_runs`), the sweeps among them and their jobs not started yet (:class:`Sweep`,
:func:`expected_jobs`), and everything read and compared at once (:func:`collect`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from vaeflow.report.compare import paired_deltas
from vaeflow.report.run import Run, load_run
from vaeflow.report.settings import assign_labels, assign_settings

__all__ = ["find_runs", "Sweep", "expected_jobs", "collect"]


def _is_train_run(path: Path) -> bool:
    config = path / ".hydra" / "config.yaml"
    if not config.is_file():
        return False
    try:
        cfg = OmegaConf.load(config)
    except Exception:
        return False
    return "trainer" in cfg and "posterior" in cfg


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    r"""The training runs at or under ``paths``: directories holding a
    ``.hydra/config.yaml`` of ``vaeflow train`` (the search does not go into a run, nor
    into hidden directories such as ``.submitit``)."""
    found: dict[Path, None] = {}

    def walk(path: Path) -> None:
        if _is_train_run(path):
            found[path.resolve()] = None
            return
        try:
            children = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
        except OSError:
            return
        for child in children:
            walk(child)

    for path in paths:
        walk(Path(path))
    return list(found)


@dataclass
class Sweep:
    r"""A sweep directory (it holds Hydra's ``multirun.yaml``) and how many of its jobs
    have a directory yet."""

    path: Path
    expected: int | None
    present: int

    @property
    def pending(self) -> int:
        return max(0, (self.expected or 0) - self.present)


def expected_jobs(sweep_dir: str | Path) -> int | None:
    r"""The number of jobs that the sweep in ``sweep_dir`` launches, from its
    ``multirun.yaml`` (the basic sweeper's grid: ``hydra.sweeper.params`` and the command
    line's sweep overrides), or ``None`` when it cannot be told."""
    try:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.override_parser.overrides_parser import OverridesParser

        cfg = OmegaConf.load(Path(sweep_dir) / "multirun.yaml")
        sweeper = OmegaConf.select(cfg, "hydra.sweeper._target_", default="") or ""
        if not sweeper.endswith("BasicSweeper") or OmegaConf.select(cfg, "hydra.job.name") != "train":
            return None  # another sweeper's grid, or another command's sweep (eval jobs write into runs)
        params = OmegaConf.select(cfg, "hydra.sweeper.params", default=None) or {}
        args = [f"{k}={v}" for k, v in params.items()]
        args += list(OmegaConf.select(cfg, "hydra.overrides.task", default=[]) or [])
        overrides = OverridesParser.create().parse_overrides(args)
        batches = BasicSweeper.split_arguments(overrides, None)
        return sum(len(batch) for batch in batches)
    except Exception:
        return None


def collect(
    paths: Iterable[str | Path], now: float | None = None, baseline: str | None = None
) -> tuple[list[Run], list[Sweep]]:
    r"""Reads every run at or under ``paths``, sorted by dataset, setting, family, depth
    and seed; and the sweeps among ``paths`` and their subdirectories, with how many of
    their jobs have not started. Runs evaluated on the same test images as a baseline get
    their NLL difference with its paired standard error (:func:`paired_deltas`).

    Returns:
        ``(runs, sweeps)``.
    """
    paths = [Path(p).resolve() for p in paths]
    run_dirs = find_runs(paths)
    root = paths[0] if len(paths) == 1 and paths[0].is_dir() and paths[0] not in run_dirs else None
    if root is None and run_dirs:
        root = Path(_common_parent(run_dirs))
    runs = [load_run(p, root, now) for p in run_dirs]
    assign_settings(runs)
    assign_labels(runs)
    runs.sort(key=lambda r: r.sort_key)
    paired_deltas(runs, baseline)

    sweeps = []
    for sweep_file in sorted(
        {f for p in paths for f in [*p.glob("multirun.yaml"), *p.glob("**/multirun.yaml")]}
    ):
        sweep_dir = sweep_file.parent
        present = sum(1 for r in run_dirs if r.parent == sweep_dir)
        sweeps.append(Sweep(sweep_dir, expected_jobs(sweep_dir), present))
    return runs, sweeps


def _common_parent(paths: Sequence[Path]) -> Path:
    parts = [p.parent.parts for p in paths]
    common = []
    for items in zip(*parts):
        if len(set(items)) != 1:
            break
        common.append(items[0])
    return Path(*common) if common else Path("/")
