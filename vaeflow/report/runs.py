r"""The runs of a report: finding run directories and reading each one (:class:`Run`),
the sweeps they belong to (:class:`Sweep`), what sets runs apart (:func:`settings_of`),
their NLL differences on the same test images (:func:`paired_deltas`), and their means
over seeds (:class:`Group`, :func:`summarize`).

:func:`collect` reads every run at or under some directories: its config choices
(``.hydra/``), ``metrics.json``, its latest test-split ``eval.json``, ``failed.txt`` or,
while it trains, ``train.log``.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

__all__ = [
    "Run",
    "Group",
    "Sweep",
    "find_runs",
    "load_run",
    "collect",
    "expected_jobs",
    "settings_of",
    "paired_deltas",
    "summarize",
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
    "eval",  # +eval=true: whether the job also evaluated itself
    "trainer.resume",  # how a run was started, not what it trains
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
    examples: int | None = None  # test images of the evaluation (fewer with eval's limit=)
    split_size: int | None = None  # test images in the split
    source: str = ""
    history: list[dict[str, float]] = field(repr=False, default_factory=list)
    label: str = ""  # the name without the overrides that every run of the report shares
    delta: tuple[float, float] | None = None  # NLL minus the baseline's, paired s.e. (paired_deltas)
    baseline: str = ""  # the run that delta is against
    paired: int = 0  # how many test images delta is over

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


def _effective_max_epochs(path: Path, metrics: dict[str, Any], configured: Any) -> Any:
    r"""The epoch budget a finished run ended with. A run resumed with a larger
    ``trainer.max_epochs`` keeps the config it was started with in ``.hydra/``, so the
    budget comes from ``metrics.json`` or else from the last epoch line of ``train.log``."""
    if isinstance(metrics.get("max_epochs"), int):
        return metrics["max_epochs"]
    epochs = _train_log_epochs(path)
    return epochs[-1]["max_epochs"] if epochs else configured


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
        run.max_epochs = _effective_max_epochs(path, metrics, run.max_epochs)
        if "trainer.max_epochs" in run.config:  # the budget it ran with is what sets it apart
            run.config["trainer.max_epochs"] = run.max_epochs
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
        run.examples = e.get("examples") if isinstance(e.get("examples"), int) else None
        run.split_size = e.get("split_size") if isinstance(e.get("split_size"), int) else None
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

    A run evaluated on a seeded subset of the test images (``vaeflow eval limit=N``, for
    the families that are slow to sample) is paired with the baseline on the images they
    share; ``run.paired`` says how many.

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
    import torch

    evaluated = [r for r in runs if r.finished and r.source == "eval"]
    if baseline:
        chosen = [r for r in evaluated if baseline in (r.name, r.label)]
    else:
        chosen = [r for r in evaluated if r.family == "mean_field"]
    base, figures = None, None
    for candidate in chosen:
        figures = _per_example_nll(candidate)
        if figures is not None:
            base = candidate
            break
    if base is None or figures is None:
        return None
    base_ids, base_nll = figures
    for run in evaluated:
        if run.dataset != base.dataset:
            continue
        figures = (base_ids, base_nll) if run is base else _per_example_nll(run)
        if figures is None:
            continue
        ids, nll = figures
        if ids.equal(base_ids):
            diff = nll - base_nll
        else:  # ids are sorted and unique (vaeflow eval's seeded subsets): pair the shared ones
            diff = nll[torch.isin(ids, base_ids)] - base_nll[torch.isin(base_ids, ids)]
            if len(diff) == 0:
                continue
        se = float(diff.std() / math.sqrt(len(diff))) if len(diff) > 1 else math.nan
        run.delta, run.baseline = (float(diff.mean()), se), base.label or base.name
        run.paired = len(diff)
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
