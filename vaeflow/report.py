r"""Sweep reports: which posterior family, at which depth, tightens the bound and improves
the likelihood, and at what cost.

Pure functions over run directories (the ones ``vaeflow train`` writes):

* :func:`collect` finds the runs under sweep or run directories and reads each one's
  config choices (``.hydra/``), ``metrics.json``, its latest test-split ``eval.json``
  (``vaeflow eval`` or ``+eval=true``), ``failed.txt`` or, while it trains, ``train.log``;
* :func:`summarize` averages runs that differ only in their seed;
* :func:`rich_table`, :func:`write_csv`, :func:`write_markdown`, :func:`plot_depth`,
  :func:`plot_curves` and :func:`plot_samples` (what each finished run's best checkpoint
  generates and reconstructs) present them; :func:`write_report` writes them all.

Every run found is shown, whatever its state: ``completed``, ``failed`` (with the first
line of its ``failed.txt``), ``running`` (with its last finished epoch) or ``incomplete``
(stopped without metrics or an error, e.g. killed); jobs of a sweep that have not started
yet are counted from its ``multirun.yaml``.

Families without flow steps (``mean_field``, ``full_cov``, ``autoregressive``: no
``posterior.depth`` key) are reported at depth 0 and drawn as reference lines.
"""

from __future__ import annotations

import csv
import json
import math
import re
import shlex
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf

if TYPE_CHECKING:  # torch and the model are imported where the samples are drawn
    import numpy as np
    from omegaconf import DictConfig
    from torch import Tensor

    from vaeflow.data import DataSplits, Split
    from vaeflow.model import VAE

__all__ = [
    "Run",
    "Group",
    "Sweep",
    "find_runs",
    "load_run",
    "collect",
    "expected_jobs",
    "settings_of",
    "summarize",
    "table_rows",
    "summary_rows",
    "notes",
    "rich_table",
    "summary_table",
    "csv_row",
    "write_csv",
    "write_markdown",
    "plot_depth",
    "plot_curves",
    "SampleImages",
    "sample_images",
    "plot_samples",
    "write_report",
    "CSV_COLUMNS",
]

#: the order of families in tables and legends: baselines first, then the flows
FAMILY_ORDER = (
    "mean_field",
    "full_cov",
    "autoregressive",
    "planar",
    "radial",
    "householder",
    "sylvester",
    "iaf",
    "maf",
    "realnvp",
)

#: config keys that never make two runs different settings
IGNORED_KEYS = (
    "seed",
    "trainer.threads",
    "trainer.device",
    "trainer.progress",
    "dataset.root",
    "dataset.download",
)
IGNORED_PREFIXES = ("eval.", "hydra.")

#: a run is ``running`` if a file in it changed this recently, else ``incomplete``
RUNNING_WINDOW_S = 30 * 60

_EPOCH_LINE = re.compile(
    r"epoch (?P<epoch>\d+)/(?P<max>\d+)\s+train elbo (?P<train>\S+)\s+val elbo (?P<val>\S+)"
    r"(?:.*?val iw-nll (?P<iw>\S+))?"
)


# --------------------------------------------------------------------------------------
# Reading runs
# --------------------------------------------------------------------------------------


@dataclass
class Run:
    r"""One training run as the report sees it.

    ``nll``, ``elbo`` and ``kl`` are the test figures shown: from the run's latest
    test-split ``eval.json`` when it has one (``source == "eval"``, with standard errors
    over the test images), else from its ``metrics.json`` (``source == "train"``, the
    training's final test pass with ``k = trainer.iw_k``, without standard errors).
    """

    path: Path
    name: str  # relative to the report's root
    status: str  # completed | failed | running | incomplete
    family: str
    depth: int  # 0: a family without flow steps
    seed: int | None
    dataset: str
    config: dict[str, Any] = field(repr=False, default_factory=dict)
    overrides: list[str] = field(default_factory=list)
    setting: str = ""  # other config values that differ between the runs of a report
    message: str = ""
    epochs: int | None = None
    max_epochs: int | None = None
    stopped_by: str | None = None
    best_epoch: int | None = None
    parameters: int | None = None
    train_time_s: float | None = None
    images_per_s: float | None = None
    metrics: dict[str, Any] | None = field(repr=False, default=None)
    eval: dict[str, Any] | None = field(repr=False, default=None)
    eval_path: Path | None = None
    eval_failed: str = ""
    samples_skipped: str = ""  # why :func:`plot_samples` could not draw the run
    nll: float | None = None
    nll_se: float | None = None
    elbo: float | None = None
    elbo_se: float | None = None
    kl: float | None = None
    k: int | None = None
    source: str = ""
    history: list[dict[str, float]] = field(repr=False, default_factory=list)
    label: str = ""  # the name without the overrides that every run of the report shares
    delta: tuple[float, float] | None = None  # NLL minus the baseline's, paired s.e. (paired_deltas)
    baseline: str = ""  # the run that delta is against

    @property
    def finished(self) -> bool:
        return self.status == "completed" and _finite(self.nll) and _finite(self.elbo)

    @property
    def seconds_per_epoch(self) -> float | None:
        if self.train_time_s is None or not self.epochs:
            return None
        return self.train_time_s / self.epochs

    @property
    def sort_key(self) -> tuple:
        return (self.dataset, _family_rank(self.family), self.setting, self.depth, self.seed or 0, self.name)


def _family_rank(family: str) -> tuple[int, str]:
    return (FAMILY_ORDER.index(family), "") if family in FAMILY_ORDER else (len(FAMILY_ORDER), family)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


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


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for key, value in obj.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tuple(obj) if isinstance(obj, list) else obj}


def _latest_eval(path: Path) -> tuple[dict[str, Any] | None, Path | None]:
    evals = sorted((path / "eval").glob("*/eval.json"), key=lambda p: (p.stat().st_mtime, p.parent.name))
    for candidate in reversed(evals):
        data = _read_json(candidate)
        if data is not None and data.get("split", "test") == "test" and _finite(data.get("eval/iw_nll")):
            return data, candidate
    return None, None


def _train_log_epochs(path: Path) -> list[dict[str, float]]:
    try:
        text = (path / "train.log").read_text(errors="replace")
    except OSError:
        return []
    rows: dict[int, dict[str, float]] = {}
    for match in _EPOCH_LINE.finditer(text):
        row = {"epoch": int(match["epoch"]), "max_epochs": int(match["max"])}
        for key, group in (("train/elbo", "train"), ("val/elbo", "val"), ("val/iw_nll", "iw")):
            try:
                if match[group] is not None:
                    row[key] = float(match[group])
            except ValueError:
                pass
        rows[row["epoch"]] = row  # a resumed run repeats epochs: keep the last
    return [rows[e] for e in sorted(rows)]


def _last_change(path: Path) -> float:
    times = [path.stat().st_mtime]
    for sub in ("train.log", "tb", "checkpoints"):
        p = path / sub
        if p.exists():
            times.append(p.stat().st_mtime)
            if p.is_dir():
                times += [q.stat().st_mtime for q in p.iterdir()]
    return max(times)


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def load_run(path: str | Path, root: str | Path | None = None, now: float | None = None) -> Run:
    r"""Reads one run directory.

    Arguments:
        path: the run directory.
        root: the directory that names are relative to (default: the run's parent).
        now: the current time (for telling ``running`` from ``incomplete``).
    """
    path = Path(path).resolve()
    root = Path(root).resolve() if root is not None else path.parent
    try:
        name = str(path.relative_to(root)) if path != root else path.name
    except ValueError:
        name = path.name
    cfg = OmegaConf.to_container(OmegaConf.load(path / ".hydra" / "config.yaml"), resolve=False)
    try:
        overrides = [
            str(o) for o in OmegaConf.to_container(OmegaConf.load(path / ".hydra" / "overrides.yaml"))
        ]
    except (OSError, ValueError):
        overrides = []
    posterior = cfg.get("posterior") or {}
    depth = posterior.get("depth")
    seed = cfg.get("seed")
    run = Run(
        path=path,
        name=name,
        status="incomplete",
        family=str(posterior.get("name", "?")),
        depth=int(depth) if isinstance(depth, int) else 0,
        seed=int(seed) if isinstance(seed, int) else None,
        dataset=str((cfg.get("dataset") or {}).get("name", "?")),
        config=_flatten(cfg),
        overrides=overrides,
        max_epochs=(cfg.get("trainer") or {}).get("max_epochs"),
    )

    metrics = _read_json(path / "metrics.json")
    failed = path / "failed.txt"
    failed_newer = failed.is_file() and (
        metrics is None or failed.stat().st_mtime >= (path / "metrics.json").stat().st_mtime
    )
    if failed_newer:
        run.status = "failed"
        run.message = _first_line(failed.read_text(errors="replace"))
    elif metrics is not None:
        run.metrics = metrics
        run.status = str(metrics.get("status", "completed"))
        run.epochs = metrics.get("epochs")
        run.stopped_by = metrics.get("stopped_by")
        run.best_epoch = metrics.get("best_epoch")
        run.parameters = metrics.get("parameters")
        run.train_time_s = _number(metrics.get("train_time_s"))
        run.images_per_s = _number(metrics.get("images_per_s"))
        run.history = [dict(h) for h in metrics.get("history") or []]
        run.nll, run.elbo, run.kl = (_number(metrics.get(f"test/{key}")) for key in ("iw_nll", "elbo", "kl"))
        run.nll_se, run.elbo_se = _number(metrics.get("test/iw_nll_se")), _number(metrics.get("test/elbo_se"))
        run.k = metrics.get("iw_k")
        run.source = "train"
        if run.stopped_by == "early_stopping":
            run.message = f"early stopping at epoch {run.epochs} (best {run.best_epoch})"
    if run.status != "failed" and metrics is None:
        epochs = _train_log_epochs(path)
        run.history = epochs
        if epochs:
            run.epochs = epochs[-1]["epoch"]
            run.max_epochs = epochs[-1]["max_epochs"]
        now = time.time() if now is None else now
        run.status = "running" if now - _last_change(path) < RUNNING_WINDOW_S else "incomplete"
        done = f"epoch {run.epochs}/{run.max_epochs}" if run.epochs else "no epoch finished"
        run.message = done if run.status == "running" else f"{done}; no metrics.json and no failed.txt"
    elif run.status == "failed":
        run.history = _train_log_epochs(path)
        if run.history:
            run.epochs = run.history[-1]["epoch"]

    run.eval, run.eval_path = _latest_eval(path)
    if run.eval is not None and run.status == "completed":
        e = run.eval
        run.nll, run.nll_se = _number(e.get("eval/iw_nll")), _number(e.get("eval/iw_nll_se"))
        run.elbo, run.elbo_se = _number(e.get("eval/elbo")), _number(e.get("eval/elbo_se"))
        run.kl, run.k, run.source = _number(e.get("eval/kl")), e.get("k"), "eval"
    if (path / "eval_failed.txt").is_file():
        run.eval_failed = _first_line((path / "eval_failed.txt").read_text(errors="replace"))
    return run


def _settings(runs: Sequence[Run]) -> None:
    r"""Sets each run's ``setting``: the config values (other than the family, depth and
    seed) that differ between runs, e.g. ``model.latent_dim=8``. Keys of the posterior
    are compared only between runs of the same family."""
    for run, setting in zip(runs, settings_of(runs)):
        run.setting = setting


def settings_of(runs: Sequence[Run]) -> list[str]:
    r"""Each run's setting (see :func:`_settings`) among ``runs`` only."""
    keys: set[str] = set()
    for run in runs:
        keys |= set(run.config)
    varying = []
    for key in sorted(keys):
        if (
            key in IGNORED_KEYS
            or key.startswith(IGNORED_PREFIXES)
            or key in ("posterior.name", "posterior.depth")
        ):
            continue
        if key.startswith("posterior."):
            groups: dict[str, set] = {}
            for run in runs:
                groups.setdefault(run.family, set()).add(repr(run.config.get(key, "<missing>")))
            if any(len(values) > 1 for values in groups.values()):
                varying.append(key)
        elif len({repr(run.config.get(key, "<missing>")) for run in runs}) > 1:
            varying.append(key)
    out = []
    for run in runs:
        parts = []
        for key in varying:
            if key.startswith("posterior.") and key not in run.config:
                continue
            value = run.config.get(key, "<missing>")
            value = ",".join(map(str, value)) if isinstance(value, tuple) else value
            parts.append(f"{key}={value}")
        out.append(" ".join(parts))
    return out


def _short_names(runs: Sequence[Run]) -> None:
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
    _settings(runs)
    _short_names(runs)
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


def _per_example_nll(run: Run) -> tuple[Any, Any] | None:
    r"""``(ids, nll)`` of the test images of ``run``'s latest evaluation, if it kept them."""
    if run.eval_path is None:
        return None
    path = run.eval_path.parent / "per_example.pt"
    try:
        import torch

        data = torch.load(path, map_location="cpu", weights_only=True)
        return data["ids"], -data["log_px"].double()
    except Exception:  # no per-example file (older evaluations), or an unreadable one
        return None


def paired_deltas(runs: Sequence[Run], baseline: str | None = None) -> Run | None:
    r"""Sets ``run.delta``: each run's test NLL minus the baseline's on the same test images,
    with the standard error of the per-image differences.

    Models evaluated on the same images share most of their per-image variation (hard
    digits are hard for every model), so the paired standard error of a difference is
    several times smaller than the two runs' own standard errors combined: it is the one
    that says whether two families differ.

    Arguments:
        runs: the report's runs, in order.
        baseline: the baseline's name or label; default: the first mean-field run, in the
            report's order, whose evaluation kept its per-image figures.

    Returns:
        The baseline run, or ``None`` when there is none (no deltas are set).
    """
    evaluated = [r for r in runs if r.finished and r.source == "eval"]
    if baseline:
        chosen = [r for r in evaluated if baseline in (r.name, r.label)]
    else:
        chosen = [r for r in evaluated if r.family == "mean_field"]
    base = next((r for r in chosen if _per_example_nll(r) is not None), None)
    if base is None:
        return None
    base_ids, base_nll = _per_example_nll(base)
    for run in evaluated:
        if run.dataset != base.dataset:
            continue
        figures = (base_ids, base_nll) if run is base else _per_example_nll(run)
        if figures is None or not figures[0].equal(base_ids):
            continue
        diff = figures[1] - base_nll
        se = float(diff.std() / math.sqrt(len(diff))) if len(diff) > 1 else math.nan
        run.delta, run.baseline = (float(diff.mean()), se), base.label or base.name
    return base


def _common_parent(paths: Sequence[Path]) -> Path:
    parts = [p.parent.parts for p in paths]
    common = []
    for items in zip(*parts):
        if len(set(items)) != 1:
            break
        common.append(items[0])
    return Path(*common) if common else Path("/")


# --------------------------------------------------------------------------------------
# Aggregating over seeds
# --------------------------------------------------------------------------------------


@dataclass
class Group:
    r"""The finished runs of one (dataset, setting, family, depth): their mean figures
    and standard errors (over seeds where there are several runs, else the run's own
    standard error over test images, where its evaluation gives one)."""

    dataset: str
    setting: str
    family: str
    depth: int
    runs: list[Run]
    nll: float
    nll_se: float | None
    neg_elbo: float
    neg_elbo_se: float | None
    gap: float
    gap_se: float | None
    seconds_per_epoch: float | None
    parameters: int | None

    @property
    def n(self) -> int:
        return len(self.runs)

    @property
    def label(self) -> str:
        return self.family + (f" ({self.setting})" if self.setting else "")


def _mean_se(values: Sequence[float], own_se: float | None = None) -> tuple[float, float | None]:
    values = [v for v in values if _finite(v)]
    if not values:
        return math.nan, None
    mean = sum(values) / len(values)
    if len(values) == 1:
        return mean, own_se if _finite(own_se) else None
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var / len(values))


def summarize(runs: Sequence[Run]) -> list[Group]:
    r"""Groups the finished runs by (dataset, setting, family, depth), where a setting
    holds the config values that differ between finished runs (unfinished runs do not
    split the groups)."""
    finished = [run for run in runs if run.finished]
    groups: dict[tuple, list[Run]] = {}
    for run, setting in zip(finished, settings_of(finished)):
        groups.setdefault((run.dataset, setting, run.family, run.depth), []).append(run)
    out = []
    for (dataset, setting, family, depth), members in groups.items():
        one = members[0] if len(members) == 1 else None
        nll, nll_se = _mean_se([r.nll for r in members], one.nll_se if one else None)
        neg_elbo, elbo_se = _mean_se([-r.elbo for r in members], one.elbo_se if one else None)
        gap, gap_se = _mean_se([-r.elbo - r.nll for r in members])
        if one is not None and one.eval is not None:
            gap_se = _number(one.eval.get("eval/iw_gain_se"))
        spe = [r.seconds_per_epoch for r in members if r.seconds_per_epoch is not None]
        out.append(
            Group(
                dataset, setting, family, depth, members, nll, nll_se, neg_elbo, elbo_se, gap, gap_se,
                sum(spe) / len(spe) if spe else None, members[0].parameters,
            )
        )  # fmt: skip
    out.sort(key=lambda g: (g.dataset, _family_rank(g.family), g.setting, g.depth))
    return out


# --------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------


def _f(value: float | None, digits: int = 2) -> str:
    return f"{value:.{digits}f}" if _finite(value) else ("nan" if isinstance(value, float) else "—")


def _pm(value: float | None, se: float | None, digits: int = 2) -> str:
    if not _finite(value):
        return _f(value, digits)
    return f"{value:.{digits}f} ± {se:.{digits}f}" if _finite(se) else f"{value:.{digits}f}"


def _duration(seconds: float | None) -> str:
    if not _finite(seconds):
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, s = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {s:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def _count(value: float | None) -> str:
    return f"{value:,.0f}" if _finite(value) else "—"


def _status(run: Run) -> str:
    if run.status == "completed":
        return "early stop" if run.stopped_by == "early_stopping" else "completed"
    if run.status == "running":
        return f"running ({run.epochs or 0}/{run.max_epochs or '?'})"
    return run.status


def _depth(run_or_group: Run | Group) -> str:
    return str(run_or_group.depth) if run_or_group.depth else "—"


def _delta(run: Run) -> str:
    if run.delta is None:
        return "—"
    if run.baseline == (run.label or run.name):
        return "baseline"
    mean, se = run.delta
    return f"{mean:+.2f} ± {se:.2f}"


def table_rows(runs: Sequence[Run]) -> tuple[list[str], list[list[str]]]:
    r"""The report's table as text: ``(header, rows)``, one row per run."""
    show_setting = any(r.setting for r in runs)
    show_dataset = len({r.dataset for r in runs}) > 1
    header = [*(["dataset"] if show_dataset else []), "family", "depth", "seed"]
    header += [*(["setting"] if show_setting else []), "status", "epochs", "parameters"]
    show_delta = any(r.delta for r in runs)
    header += ["test ELBO", "test NLL ± se", *(["Δ NLL ± paired se"] if show_delta else [])]
    header += ["k", "KL", "train time", "images/s", "run"]
    rows = []
    for r in runs:
        row = [*([r.dataset] if show_dataset else []), r.family, _depth(r), str(r.seed)]
        row += [*([r.setting] if show_setting else []), _status(r)]
        row += [str(r.epochs) if r.epochs is not None else "—", _count(r.parameters)]
        row += [_f(r.elbo), _pm(r.nll, r.nll_se)]
        if show_delta:
            row.append(_delta(r))
        row += [str(r.k) if r.k else "—", _f(r.kl)]
        row += [_duration(r.train_time_s), _count(r.images_per_s), r.label or r.name]
        rows.append(row)
    return header, rows


def summary_rows(groups: Sequence[Group]) -> tuple[list[str], list[list[str]]]:
    r"""The table of :func:`summarize`'s groups: ``(header, rows)``."""
    show_setting = any(g.setting for g in groups)
    show_dataset = len({g.dataset for g in groups}) > 1
    header = [
        *(["dataset"] if show_dataset else []),
        "family",
        "depth",
        *(["setting"] if show_setting else []),
    ]
    header += ["runs", "test NLL", "test -ELBO", "-ELBO - NLL", "s/epoch"]
    rows = [
        [*([g.dataset] if show_dataset else []), g.family, _depth(g), *([g.setting] if show_setting else []),
         str(g.n), _pm(g.nll, g.nll_se), _pm(g.neg_elbo, g.neg_elbo_se), _pm(g.gap, g.gap_se),
         _f(g.seconds_per_epoch)]
        for g in groups
    ]  # fmt: skip
    return header, rows


def notes(runs: Sequence[Run], sweeps: Sequence[Sweep] = ()) -> list[str]:
    r"""One line per run that is not finished (failed, running, incomplete, or completed
    without test figures), per failed evaluation, per run left out of ``samples.png``
    (:func:`plot_samples`) and per sweep with jobs not started."""
    lines = []
    for r in runs:
        if r.status in ("failed", "incomplete"):
            lines.append(f"{r.status}: {r.label or r.name}: {r.message}")
        elif r.status == "running":
            lines.append(f"running: {r.label or r.name}: {r.message}")
        elif not r.finished:
            lines.append(f"{r.status} without finite test figures: {r.label or r.name}")
        if r.eval_failed:
            lines.append(f"eval failed: {r.label or r.name}: {r.eval_failed}")
        if r.samples_skipped:
            lines.append(f"samples skipped: {r.label or r.name}: {r.samples_skipped}")
    for s in sweeps:
        if s.pending:
            lines.append(f"pending: {s.pending} of {s.expected} jobs of {s.path} have not started")
    return lines


def _caption(runs: Sequence[Run]) -> str:
    sources = {r.source for r in runs if r.finished}
    parts = ["ELBO, NLL and KL in nats per image on the test split, from the best validation checkpoint"]
    if "eval" in sources:
        parts.append("NLL ± s.e. over test images from `vaeflow eval` where a run has one")
    if "train" in sources:
        parts.append(
            "NLL without s.e.: the training's final importance-weighted estimate with k = trainer.iw_k"
        )
    base = next((r.baseline for r in runs if r.delta is not None), None)
    if base:
        parts.append(
            f"Δ NLL: NLL minus that of {base} on the same test images, with the standard error of "
            "the per-image differences"
        )
    return "; ".join(parts) + "."


def rich_table(runs: Sequence[Run], title: str | None = None):
    r"""A :class:`rich.table.Table` of the runs, one row per run."""
    from rich.table import Table

    header, rows = table_rows(runs)
    styles = {"completed": "", "early stop": "", "failed": "red", "incomplete": "yellow"}
    numeric = {
        "depth",
        "seed",
        "epochs",
        "parameters",
        "test ELBO",
        "test NLL ± se",
        "Δ NLL ± paired se",
        "k",
        "KL",
        "train time",
        "images/s",
    }
    table = Table(title=title, caption=_caption(runs), caption_justify="left")
    for name in header:
        table.add_column(
            name, justify="right" if name in numeric else "left", no_wrap=name not in ("setting", "run")
        )
    for run, row in zip(runs, rows):
        status = _status(run)
        style = styles.get(status, "cyan" if status.startswith("running") else "")
        table.add_row(*row, style=style or None)
    return table


def summary_table(groups: Sequence[Group], title: str | None = None):
    r"""A :class:`rich.table.Table` of :func:`summarize`'s groups."""
    from rich.table import Table

    header, rows = summary_rows(groups)
    table = Table(title=title)
    for name in header:
        table.add_column(name, justify="left" if name in ("dataset", "family", "setting") else "right")
    for row in rows:
        table.add_row(*row)
    return table


# --------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------

CSV_COLUMNS = [
    "run", "status", "message", "dataset", "family", "depth", "seed", "setting", "epochs",
    "max_epochs", "stopped_by", "best_epoch", "parameters", "train_time_s", "images_per_s",
    "test_elbo", "test_nll", "test_nll_se", "test_kl", "test_elbo_se", "k", "source",
    "metrics_test_elbo", "metrics_test_rec", "metrics_test_kl", "metrics_test_iw_nll",
    "metrics_iw_k", "metrics_val_elbo", "metrics_val_iw_nll", "eval_iw_nll", "eval_iw_nll_se",
    "eval_elbo", "eval_elbo_se", "eval_kl", "eval_k", "delta_nll", "delta_nll_se", "baseline",
    "eval_json", "overrides", "path",
]  # fmt: skip


def csv_row(run: Run) -> dict[str, Any]:
    r"""One run as a CSV row (full precision; empty where there is no value)."""
    m, e = run.metrics or {}, run.eval or {}
    row = {
        "run": run.name, "status": run.status, "message": run.message, "dataset": run.dataset,
        "family": run.family, "depth": run.depth, "seed": run.seed, "setting": run.setting,
        "epochs": run.epochs, "max_epochs": run.max_epochs, "stopped_by": run.stopped_by,
        "best_epoch": run.best_epoch, "parameters": run.parameters, "train_time_s": run.train_time_s,
        "images_per_s": run.images_per_s, "test_elbo": run.elbo, "test_nll": run.nll,
        "test_nll_se": run.nll_se, "test_kl": run.kl, "test_elbo_se": run.elbo_se, "k": run.k,
        "source": run.source, "metrics_test_elbo": m.get("test/elbo"), "metrics_test_rec": m.get("test/rec"),
        "metrics_test_kl": m.get("test/kl"), "metrics_test_iw_nll": m.get("test/iw_nll"),
        "metrics_iw_k": m.get("iw_k"), "metrics_val_elbo": m.get("val/elbo"),
        "metrics_val_iw_nll": m.get("val/iw_nll"), "eval_iw_nll": e.get("eval/iw_nll"),
        "eval_iw_nll_se": e.get("eval/iw_nll_se"), "eval_elbo": e.get("eval/elbo"),
        "eval_elbo_se": e.get("eval/elbo_se"), "eval_kl": e.get("eval/kl"), "eval_k": e.get("k"),
        "delta_nll": run.delta[0] if run.delta else None, "delta_nll_se": run.delta[1] if run.delta else None,
        "baseline": run.baseline, "eval_json": str(run.eval_path or ""), "overrides": " ".join(run.overrides),
        "path": str(run.path),
    }  # fmt: skip
    return {k: ("" if v is None else v) for k, v in row.items()}


def write_csv(runs: Sequence[Run], path: str | Path) -> Path:
    r"""Writes one row per run (:data:`CSV_COLUMNS`, floats at full precision)."""
    path = Path(path)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for run in runs:
            writer.writerow(csv_row(run))
    return path


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|")

    right = {"depth", "seed", "epochs", "parameters", "test ELBO", "test NLL ± se", "Δ NLL ± paired se", "k", "KL",
             "train time", "images/s", "runs", "test NLL", "test -ELBO", "-ELBO - NLL", "s/epoch"}  # fmt: skip
    lines = ["| " + " | ".join(cell(h) for h in header) + " |"]
    lines.append("| " + " | ".join("---:" if h in right else "---" for h in header) + " |")
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def train_command(run: Run) -> str:
    r"""The ``vaeflow train`` command line that repeats ``run``: its overrides, shell-quoted."""
    return " ".join(["vaeflow train", *(shlex.quote(o) for o in run.overrides)])


def write_markdown(
    runs: Sequence[Run],
    path: str | Path,
    sweeps: Sequence[Sweep] = (),
    images: Sequence[str] = (),
    sources: Sequence[str | Path] = (),
) -> Path:
    r"""Writes the report as Markdown: the per-run table, the per-(family, depth) means
    when some runs differ only in their seed, the notes, and links to the plots."""
    path = Path(path)
    out = ["# vaeflow report", ""]
    if sources:
        out += ["Runs under " + ", ".join(f"`{s}`" for s in sources) + ".", ""]
    out += [_markdown(*table_rows(runs)), "", _caption(runs), ""]
    groups = summarize(runs)
    if any(g.n > 1 for g in groups):
        out += ["## Mean over seeds (± standard error)", "", _markdown(*summary_rows(groups)), ""]
    lines = notes(runs, sweeps)
    if lines:
        out += ["## Not finished", ""] + [f"- {line}" for line in lines] + [""]
    commands = [(r.label or r.name, train_command(r)) for r in runs if r.overrides]
    if commands:
        out += ["## Commands", "", "Each run again (its `.hydra/overrides.yaml`):", ""]
        out += [f"- {name}: `{command}`" for name, command in commands] + [""]
    for image in images:
        out += [f"![{Path(image).stem}]({Path(image).name})", ""]
    path.write_text("\n".join(out))
    return path


# --------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------


def _x(depth: int) -> float:
    r"""Depth on a log2 axis, with depth 0 (no flow) one step left of depth 1."""
    return 0.0 if depth <= 0 else 1.0 + math.log2(depth)


def _styles(labels: Sequence[str], families: Sequence[str]) -> dict[str, dict[str, Any]]:
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"]  # fmt: skip
    markers = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "*"]
    lines = ["-", "--", ":", "-."]
    order = sorted(set(families), key=_family_rank)
    settings: dict[str, int] = {}
    out = {}
    for label, family in zip(labels, families):
        i = order.index(family)
        setting = label[len(family) :]
        j = settings.setdefault(setting, len(settings))
        out[label] = {
            "color": palette[i % len(palette)],
            "marker": markers[i % len(markers)],
            "ls": lines[j % len(lines)],
        }
    return out


def _unfinished_note(runs: Sequence[Run], sweeps: Sequence[Sweep]) -> str:
    counts: dict[str, int] = {}
    for r in runs:
        if not r.finished:
            key = r.status if r.status != "completed" else "without test figures"
            counts[key] = counts.get(key, 0) + 1
    pending = sum(s.pending for s in sweeps)
    if pending:
        counts["not started"] = pending
    if not counts:
        return ""
    return "not shown: " + ", ".join(f"{n} {what}" for what, n in counts.items()) + " (see the table)"


def plot_depth(
    runs: Sequence[Run], path: str | Path, sweeps: Sequence[Sweep] = (), title: str | None = None
) -> Path:
    r"""The answer in one picture: test NLL, test -ELBO, the gap between them and the
    training time per epoch against the flow depth (log2 axis), one line per family
    (and setting); families without flow steps at depth 0 with a dashed reference line.
    Error bars are ±1 standard error (over seeds where a point has several runs, else
    over test images where the run has an evaluation)."""
    from matplotlib.figure import Figure

    groups = summarize(runs)
    path = Path(path)
    fig = Figure(figsize=(12, 8.6), layout="constrained")
    axes = fig.subplots(2, 2, sharex=True).ravel()
    panels = [
        ("nll", "nll_se", "test NLL (nats)", "importance-weighted NLL (lower is better)"),
        ("neg_elbo", "neg_elbo_se", "test −ELBO (nats)", "negative ELBO (lower is better)"),
        ("gap", "gap_se", "−ELBO − NLL (nats)", "looseness of the bound (lower is tighter)"),
        ("seconds_per_epoch", None, "seconds per training epoch", "cost: training time per epoch"),
    ]
    labels = list(dict.fromkeys(g.label for g in groups))
    families = [next(g.family for g in groups if g.label == label) for label in labels]
    style = _styles(labels, families)
    depths = sorted({g.depth for g in groups})
    flow_depths = [d for d in depths if d > 0]
    x_lo = _x(min(depths)) - 0.35 if depths else -0.35
    x_hi = _x(max(depths)) + 0.35 if depths else 1.35
    for ax, (key, se_key, ylabel, heading) in zip(axes, panels):
        for label in labels:
            members = [g for g in groups if g.label == label]
            xs = [_x(g.depth) for g in members]
            ys = [getattr(g, key) for g in members]
            es = [getattr(g, se_key) if se_key else None for g in members]
            keep = [i for i, y in enumerate(ys) if _finite(y)]
            if not keep:
                continue
            xs, ys, es = [xs[i] for i in keep], [ys[i] for i in keep], [es[i] for i in keep]
            yerr = [e if _finite(e) else 0.0 for e in es] if any(_finite(e) for e in es) else None
            s = style[label]
            flow = any(g.depth > 0 for g in members)
            name = label if flow else f"{label} (no flow)"
            ax.errorbar(xs, ys, yerr=yerr, color=s["color"], marker=s["marker"], ls=s["ls"] if flow else "none",
                        lw=1.8, ms=6, capsize=4, elinewidth=1.2, label=name)  # fmt: skip
            if not flow:
                ax.axhline(ys[0], color=s["color"], ls=(0, (4, 3)), lw=1.1, alpha=0.8)
                if yerr:
                    ax.axhspan(ys[0] - yerr[0], ys[0] + yerr[0], color=s["color"], alpha=0.08, lw=0)
        ax.set_title(heading, fontsize=11)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.set_xlim(x_lo, x_hi)
    ticks = ([0] if 0 in depths else []) + flow_depths
    for ax in axes[2:]:
        ax.set_xticks([_x(d) for d in ticks], [("none" if d == 0 else str(d)) for d in ticks])
        ax.set_xlabel("flow depth K (number of steps, log2 scale)")
    for ax in axes[:2]:
        ax.tick_params(labelbottom=False)
    if labels:
        handles, names = axes[0].get_legend_handles_labels()
        fig.legend(handles, names, loc="outside right upper", title="posterior", frameon=False)
    else:
        axes[0].text(0.5, 0.5, "no finished runs", transform=axes[0].transAxes, ha="center")
    datasets = sorted({g.dataset for g in groups}) or sorted({r.dataset for r in runs})
    heading = title or f"{', '.join(datasets)}: test figures against flow depth"
    fig.suptitle(heading, fontsize=13, fontweight="bold")
    if any(_finite(g.nll_se) or _finite(g.neg_elbo_se) for g in groups):
        footer = "error bars: ±1 s.e. (over seeds where a point has several runs, else over test images)"
    else:
        footer = "no error bars: one run per point and no standard error over test images; add seed=1,2,3 or +eval=true to the sweep"
    note = _unfinished_note(runs, sweeps)
    fig.text(0.01, 0.002, footer + (f"\n{note}" if note else ""), fontsize=8.5, color="#444", va="bottom")
    fig.get_layout_engine().set(rect=(0, 0.04 if note else 0.025, 1, 1 - (0.04 if note else 0.025)))
    fig.savefig(path, dpi=120)
    return path


def plot_curves(runs: Sequence[Run], path: str | Path, title: str | None = None) -> Path:
    r"""Validation ELBO over epochs: one panel per family, one line per run coloured by
    depth; runs still training dashed, failed ones dotted; a dot at each run's best epoch;
    the families without flow steps in grey, dashed, in every flow family's panel."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    path = Path(path)
    with_curves = [r for r in runs if any(_finite(h.get("val/elbo")) for h in r.history)]
    settings = dict(zip(map(id, with_curves), settings_of(with_curves)))

    def panel_of(r: Run) -> str:
        return r.family + (f" ({settings[id(r)]})" if settings[id(r)] else "")

    panels = list(dict.fromkeys(map(panel_of, with_curves)))
    panels.sort(key=lambda p: _family_rank(p.split(" ")[0]))
    n = max(1, len(panels))
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(4.6 * cols + 1.2, 3.4 * rows + 0.8), layout="constrained")
    axes = fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False).ravel()
    cmap = colormaps["viridis"]
    depths = sorted({r.depth for r in with_curves if r.depth > 0})
    span = max(1.0, math.log2(max(depths)) if depths else 1.0)
    values = [h["val/elbo"] for r in with_curves for h in r.history if _finite(h.get("val/elbo"))]
    baselines = [r for r in with_curves if r.depth == 0 and r.status == "completed"]
    for ax, panel in zip(axes, panels):
        seen = set()
        if any(panel_of(r) == panel and r.depth > 0 for r in with_curves):
            for r in baselines:  # the families without flow steps, for reference
                points = [(h["epoch"], h["val/elbo"]) for h in r.history if _finite(h.get("val/elbo"))]
                label = f"{r.family} (no flow)"
                ax.plot(
                    *zip(*points),
                    color="#999999",
                    ls=(0, (4, 3)),
                    lw=1.2,
                    label=None if label in seen else label,
                )
                seen.add(label)
        for r in with_curves:
            if panel_of(r) != panel:
                continue
            points = [(h["epoch"], h["val/elbo"]) for h in r.history if _finite(h.get("val/elbo"))]
            color = "#555555" if r.depth == 0 else cmap(0.05 + 0.75 * math.log2(r.depth) / span)
            ls = {"running": "--", "failed": ":", "incomplete": ":"}.get(r.status, "-")
            label = ("no flow" if r.depth == 0 else f"depth {r.depth}") + (
                "" if r.status == "completed" else f" ({r.status})"
            )
            ax.plot(
                *zip(*points), color=color, ls=ls, lw=1.6, alpha=0.9, label=None if label in seen else label
            )
            seen.add(label)
            best = r.best_epoch
            if best and r.status == "completed":
                y = next((v for e, v in points if e == best), None)
                if y is not None:
                    ax.plot([best], [y], "o", color=color, ms=4)
        ax.set_title(panel, fontsize=11)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    if not panels:
        axes[0].set_visible(True)
        axes[0].text(0.5, 0.5, "no validation curves", transform=axes[0].transAxes, ha="center")
    elif values:
        values.sort()
        top, low = values[-1], values[int(0.1 * (len(values) - 1))]
        margin = 0.08 * max(top - low, 1e-6)
        axes[0].set_ylim(low - margin, top + margin)
    axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))
    for i, ax in enumerate(axes[: len(panels)]):
        if i % cols == 0:
            ax.set_ylabel("validation ELBO (nats)")
        if i >= len(panels) - cols:
            ax.set_xlabel("epoch")
            ax.tick_params(labelbottom=True)
    datasets = sorted({r.dataset for r in with_curves}) or sorted({r.dataset for r in runs})
    fig.suptitle(
        title or f"{', '.join(datasets)}: validation ELBO during training (• best epoch)",
        fontsize=13,
        fontweight="bold",
    )
    fig.savefig(path, dpi=110)
    return path


# --------------------------------------------------------------------------------------
# Samples and reconstructions
# --------------------------------------------------------------------------------------

#: what each row of ``samples.png`` shows: prior draws, and test images with their
#: reconstructions; the seed fixes the draws, the test images and the posterior noise
SAMPLES, PAIRS, SAMPLES_SEED = 16, 8, 0

# The layout of samples.png in pixels (figures are saved at _DPI): per row, the label, the
# strip of samples and the strip of pairs, each strip 2 lines of _COLS tiles of _TILE px.
_DPI = 100
_MARGIN, _LABEL_W, _GAP_LABEL, _GAP_STRIPS, _ROW_GAP = 10, 210, 14, 20, 12
_COLS, _PAD, _TILE = 8, 2, 56  # 8 * (56 + 2) + 2 = 466 px per strip: 1,196 px in all
_HEAD_H, _FOOT_H = 66, 40
_WRAP = 32  # characters of 8.5 pt text in the label column


@dataclass
class SampleImages:
    r"""What one row of ``samples.png`` shows: ``[n, C, H, W]`` tensors in ``[0, 1]`` on
    the CPU.

    Attributes:
        samples: the mean images ``E[x|z]`` of prior draws ``z ~ N(0, I)``.
        originals: test images.
        reconstructions: the mean images of one draw ``z ~ q(z|x)`` per test image.
    """

    samples: Tensor
    originals: Tensor
    reconstructions: Tensor


def sample_images(
    model: VAE, test: Split, samples: int = SAMPLES, pairs: int = PAIRS, seed: int = SAMPLES_SEED
) -> SampleImages:
    r"""Decodes ``samples`` prior draws and reconstructs ``pairs`` test images with ``model``
    (a :class:`~vaeflow.model.VAE` in eval mode).

    Everything random is seeded, so that rows compare: every model with the same latent
    size decodes the same draws ``z`` (the prior is ``N(0, I)``), every model of the same
    dataset reconstructs the same test images, a seeded random subset in file order (test
    files can be sorted by class), and the posterior noise is seeded too.

    Arguments:
        model: the VAE.
        test: its test split (:class:`~vaeflow.data.base.Split`).
        samples: prior draws to decode.
        pairs: test images to reconstruct.
        seed: seeds the draws, the choice of test images and the posterior noise.
    """
    import torch

    from vaeflow.data import binarize_fixed

    device = next(model.parameters()).device
    z = torch.randn(samples, model.latent_dim, generator=torch.Generator().manual_seed(seed))
    ids = torch.randperm(len(test), generator=torch.Generator().manual_seed(seed))[:pairs].sort().values
    x = test.images[ids]
    if test.dynamic:  # a static image to compare with: binarize once, seeded
        x = binarize_fixed(x, seed)
    with torch.inference_mode(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)  # reconstruct() draws z ~ q(z|x) from the global generator
        means = model.decode_mean(z.to(device))
        reconstructions = model.reconstruct(x.to(device))
    return SampleImages(means.clamp(0, 1).cpu(), x.cpu(), reconstructions.clamp(0, 1).cpu())


@contextmanager
def _one_thread() -> Iterator[None]:
    r"""torch on one CPU thread for the duration: a few small batches gain nothing from
    more, and a report should not compete with training runs for cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _last_dataset_loader() -> Callable[[DictConfig], DataSplits]:
    r"""``load_dataset`` that keeps the last dataset it loaded: the report's runs are sorted
    by dataset, so each is read once, and only one is held in memory at a time."""
    from vaeflow.data import load_dataset

    last: dict[str, DataSplits] = {}

    def load(cfg: DictConfig) -> DataSplits:
        key = json.dumps(OmegaConf.to_container(cfg, resolve=True), sort_keys=True, default=str)
        if key not in last:
            last.clear()
            last[key] = load_dataset(cfg)
        return last[key]

    return load


def _run_samples(runs: Sequence[Run], seed: int) -> list[tuple[Run, SampleImages]]:
    r"""The images of each finished run, from its best checkpoint loaded as ``vaeflow eval``
    loads it; a run that cannot be loaded or drawn gets a ``samples_skipped`` note instead."""
    from vaeflow.errors import VaeflowError
    from vaeflow.evaluate import load_trained

    load = _last_dataset_loader()
    rows = []
    with _one_thread():
        for run in runs:
            run.samples_skipped = ""
            if not run.finished:
                continue
            try:
                trained = load_trained(run.path, "best", device="cpu", load_data=load)
                rows.append((run, sample_images(trained.model, trained.data.test, seed=seed)))
            except VaeflowError as e:
                run.samples_skipped = _first_line(str(e))
            except Exception as e:  # a report draws what it can; the note names the error
                run.samples_skipped = f"{type(e).__name__}: {_first_line(str(e))}"
    return rows


def _strip(images: Tensor, cols: int) -> np.ndarray:
    r"""``images`` as a grid of ``cols`` columns of tiles of about ``_TILE`` pixels (an
    integer nearest-neighbour upscaling, so pixels stay sharp); ``[H, W, 3]`` NumPy array."""
    from torchvision.utils import make_grid

    scale = max(1, _TILE // max(images.shape[-2:]))
    big = images.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)
    grid = make_grid(big, nrow=cols, padding=_PAD, pad_value=1.0)
    return grid.permute(1, 2, 0).numpy()


def _pairs_strip(images: SampleImages) -> np.ndarray:
    r"""The test images on the first line, each above its reconstruction."""
    import torch

    return _strip(torch.cat([images.originals, images.reconstructions]), len(images.originals))


def _samples_footer(runs: Sequence[Run], sweeps: Sequence[Sweep], seed: int) -> str:
    r"""What the images are, and which runs are not shown and why."""
    lines = [
        f"images: Bernoulli means E[x|z] of the decoder; a reconstruction decodes one z ~ q(z|x); seed {seed}"
    ]
    note = _unfinished_note(runs, sweeps).removesuffix(" (see the table)")
    skipped = sum(1 for r in runs if r.samples_skipped)
    if skipped:
        note = (
            f"{note}, " if note else "not shown: "
        ) + f"{skipped} whose checkpoint or data could not be loaded"
    if note:
        lines.append(f"{note} (see results.md)")
    return "\n".join(lines)


def _label_lines(run: Run, height: float, datasets: int) -> list[tuple[str, float, str, str]]:
    r"""The label of a row as ``(text, font size, weight, colour)`` lines that fit in
    ``height`` pixels: family and depth, the setting (wrapped), seed and test NLL, and the
    run's name (wrapped at its commas) in what room is left."""
    import textwrap

    head = run.family + (f", depth {run.depth}" if run.depth else "")
    meta = " · ".join(
        [*([run.dataset] if datasets > 1 else []), f"seed {run.seed}", f"test NLL {_f(run.nll)}"]
    )
    room = max(1, int((height - _line_px(10.5) - _line_px(8.5)) // _line_px(8.5)))
    setting = _fit(textwrap.wrap(run.setting, _WRAP), max(1, room - 1))
    name = _fit(_wrap_name(run.label or run.name, _WRAP), min(2, room - len(setting)))
    return [
        (head, 10.5, "bold", "black"),
        *((line, 8.5, "normal", "#222222") for line in setting),
        (meta, 8.5, "normal", "#444444"),
        *((line, 8, "normal", "#777777") for line in name),
    ]


def _fit(lines: list[str], n: int) -> list[str]:
    r"""The first ``n`` lines, the last of them ending in an ellipsis if some are left out."""
    if len(lines) <= n:
        return lines
    if n <= 0:
        return []
    return [*lines[: n - 1], lines[n - 1][: _WRAP - 1] + "…"]


def _wrap_name(name: str, width: int) -> list[str]:
    r"""A run name (``3_posterior.depth=8,posterior=planar``) in lines of at most ``width``
    characters, broken after its commas and slashes where it can be."""
    parts = re.findall(r"[^,/]*[,/]?", name)
    lines = [""]
    for part in filter(None, parts):
        if lines[-1] and len(lines[-1]) + len(part) > width:
            lines.append("")
        lines[-1] += part
    return [line[i : i + width] for line in lines for i in range(0, len(line), width)]


def _line_px(points: float) -> float:
    return points * _DPI / 72 * 1.3


def plot_samples(
    runs: Sequence[Run],
    path: str | Path,
    sweeps: Sequence[Sweep] = (),
    title: str | None = None,
    seed: int = SAMPLES_SEED,
) -> Path:
    r"""What the models generate, side by side: one row per finished run, in the report's
    order, with (left) the mean images of the same :data:`SAMPLES` prior draws in every row
    and (right) :data:`PAIRS` test images above their reconstructions (see
    :func:`sample_images`).

    Each run's best checkpoint is loaded as ``vaeflow eval`` loads it
    (:func:`~vaeflow.evaluate.load_trained`), on the CPU with one thread. A run that
    cannot be loaded is left out and gets a ``samples_skipped`` note (:func:`notes`).
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    path = Path(path)
    rows = _run_samples(runs, seed)
    strips = [(run, _strip(images.samples, _COLS), _pairs_strip(images)) for run, images in rows]
    sample_w = max((s.shape[1] for _, s, _ in strips), default=8 * (_TILE + _PAD) + _PAD)
    pairs_w = max((p.shape[1] for *_, p in strips), default=sample_w)
    heights = [max(s.shape[0], p.shape[0]) for _, s, p in strips]
    x_samples = _MARGIN + _LABEL_W + _GAP_LABEL
    x_pairs = x_samples + sample_w + _GAP_STRIPS
    width = x_pairs + pairs_w + _MARGIN
    height = _HEAD_H + sum(h + _ROW_GAP for h in heights) + (_FOOT_H if strips else 60 + _FOOT_H)
    fig = Figure(figsize=(width / _DPI, height / _DPI), dpi=_DPI)

    def text(x: float, y: float, s: str, **kwargs: Any) -> None:  # (x, y): pixels from the top left
        fig.text(x / width, 1 - y / height, s, va="top", ha="left", **kwargs)

    def image(x: float, y: float, pixels: np.ndarray) -> None:
        h, w = pixels.shape[:2]
        ax = fig.add_axes((x / width, 1 - (y + h) / height, w / width, h / height))
        ax.imshow(pixels, interpolation="nearest", aspect="auto")
        ax.set_axis_off()

    datasets = sorted({r.dataset for r, *_ in strips}) or sorted({r.dataset for r in runs})
    heading = title or f"{', '.join(datasets)}: samples and reconstructions (best checkpoint of each run)"
    text(_MARGIN, 10, heading, fontsize=13, fontweight="bold")
    text(x_samples, 44, f"{SAMPLES} samples: the same draws z ~ N(0, I) in every row", fontsize=9.5)
    text(x_pairs, 44, f"{PAIRS} test images (top), reconstructions (bottom)", fontsize=9.5)
    y = _HEAD_H
    for (run, samples, pairs), h in zip(strips, heights):
        line_y = y
        for line, size, weight, color in _label_lines(run, h, len(datasets)):
            text(_MARGIN, line_y, line, fontsize=size, fontweight=weight, color=color)
            line_y += _line_px(size)
        image(x_samples, y, samples)
        image(x_pairs, y, pairs)
        y += h + _ROW_GAP
        if y < height - _FOOT_H - _ROW_GAP:  # a rule between rows
            rule = 1 - (y - _ROW_GAP / 2) / height
            fig.add_artist(
                Line2D([_MARGIN / width, 1 - _MARGIN / width], [rule, rule], lw=0.6, color="#cccccc")
            )
    if not strips:
        empty = "no finished run" if not any(r.finished for r in runs) else "no run could be loaded"
        text(_MARGIN, y + 10, empty, fontsize=10, color="#444444")
        y += 60
    text(_MARGIN, y + 4, _samples_footer(runs, sweeps, seed), fontsize=8.5, color="#444444", linespacing=1.4)
    fig.savefig(path, dpi=_DPI)
    return path


def write_report(
    runs: Sequence[Run],
    out_dir: str | Path,
    sweeps: Sequence[Sweep] = (),
    sources: Sequence[str | Path] = (),
    plots: bool = True,
    samples: bool = True,
) -> dict[str, Path]:
    r"""Writes ``results.csv``, ``results.md``, ``depth.png``, ``curves.png`` and
    ``samples.png`` under ``out_dir``; returns their paths by name.

    Arguments:
        runs: the runs, in the report's order (:func:`collect`).
        out_dir: where to write.
        sweeps: the sweeps among the report's directories (for the jobs not started).
        sources: the directories given, named in ``results.md``.
        plots: whether to draw the figures (else only the CSV and Markdown files).
        samples: whether to draw ``samples.png`` (it loads every finished run's best
            checkpoint and dataset; runs left out are noted in ``results.md``).
    """
    import matplotlib

    matplotlib.use("Agg")  # no display: the figures are files
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"csv": write_csv(runs, out_dir / "results.csv")}
    images = []
    if plots:
        files["depth"] = plot_depth(runs, out_dir / "depth.png", sweeps)
        files["curves"] = plot_curves(runs, out_dir / "curves.png")
        if samples:
            files["samples"] = plot_samples(runs, out_dir / "samples.png", sweeps)
        images = [files[name].name for name in ("depth", "curves", "samples") if name in files]
    files["markdown"] = write_markdown(runs, out_dir / "results.md", sweeps, images, sources)
    return files
