r"""One training run as the report sees it (:class:`Run`), read from its directory by
:func:`load_run`: its config choices (``.hydra/``), ``metrics.json``, its latest test-split
``eval.json``, ``failed.txt`` and, while it trains, ``history.jsonl`` (the per-epoch
records the trainer appends for tools; no log text is parsed).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from vaeflow.checkpoint import upgrade_config
from vaeflow.objectives import objective_label
from vaeflow.report.settings import flatten
from vaeflow.stats import bits_per_dim

__all__ = ["FAMILY_ORDER", "RUNNING_WINDOW_S", "Run", "load_run", "read_history"]

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

#: a run is ``running`` if a file in it changed this recently, else ``incomplete``
RUNNING_WINDOW_S = 30 * 60


@dataclass
class Run:
    r"""One training run as the report sees it.

    ``nll``, ``elbo`` and ``kl`` are the test figures shown: from the run's latest
    test-split ``eval.json`` when it has one (``source == "eval"``), else from its
    ``metrics.json`` (``source == "train"``: the training's final test figures, by the same
    estimator with ``k = trainer.iw_k`` on the seeded subset of ``trainer.iw_limit`` test
    images that ``vaeflow eval limit=<iw_limit>`` scores). Both give standard errors over
    the test images and their ELBO and NLL on the same images (``same_images``), except
    the metrics of runs trained before the trainer said how many images it scored, whose
    ELBO covered the whole test split and whose NLL a subset.
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
    posterior_skipped: str = ""  # why :func:`plot_posteriors` could not draw the run
    nll: float | None = None
    nll_se: float | None = None
    elbo: float | None = None
    elbo_se: float | None = None
    kl: float | None = None
    k: int | None = None
    examples: int | None = None  # test images of the evaluation (fewer with eval's limit=)
    split_size: int | None = None  # test images in the split
    source: str = ""
    history: list[dict[str, Any]] = field(repr=False, default_factory=list)
    same_images: bool = False  # whether the ELBO and the NLL were measured on the same images
    exact: bool = False  # whether the NLL is by quadrature (1 or 2 latents) rather than estimated
    active_units: int | None = None  # latents whose posterior mean varies (vaeflow eval)
    levels: int | None = None  # the evaluated data's levels per pixel (vaeflow eval's likelihood record)
    dims: int | None = None  # dimensions of an image (for bits/dim)
    gaps: dict[str, Any] | None = field(repr=False, default=None)  # the latest vaeflow eval gaps=true
    label: str = ""  # the name without the overrides that every run of the report shares
    delta: tuple[float, float] | None = None  # NLL minus the baseline's, paired s.e. (paired_deltas)
    baseline: str = ""  # the run that delta is against
    paired: int = 0  # how many test images delta is over

    @property
    def bits_per_dim(self) -> float | None:
        r"""The test NLL in bits per dimension, for data that are not binary (8-bit and the like)."""
        if not (self.levels and self.levels > 2 and self.dims and _finite(self.nll)):
            return None
        return bits_per_dim(self.nll, self.dims, self.levels)

    @property
    def objective(self) -> str:
        r"""What the run optimized (:func:`~vaeflow.objectives.objective_label`)."""
        name = str(self.config.get("objective.name", "elbo"))
        k = self.config.get("objective.k") if name == "iwae" else None
        return objective_label(name, k, str(self.config.get("objective.gradient", "reparam")))

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


def _latest_eval(path: Path, key: str = "eval/iw_nll") -> tuple[dict[str, Any] | None, Path | None]:
    r"""The latest test-split ``eval.json`` of the run with a finite ``key``, and its path."""
    evals = sorted((path / "eval").glob("*/eval.json"), key=lambda p: (p.stat().st_mtime, p.parent.name))
    for candidate in reversed(evals):
        data = _read_json(candidate)
        if data is not None and data.get("split", "test") == "test" and _finite(data.get(key)):
            return data, candidate
    return None, None


def read_history(path: Path) -> list[dict[str, Any]]:
    r"""The records of ``<run>/history.jsonl``, one per epoch, in order. A line cut short by
    a kill is skipped; an epoch written twice (trained again after a resume) keeps its last
    record."""
    try:
        lines = (Path(path) / "history.jsonl").read_text(errors="replace").splitlines()
    except OSError:
        return []
    rows: dict[int, dict[str, Any]] = {}
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("epoch"), int):
            rows[row["epoch"]] = row
    return [rows[e] for e in sorted(rows)]


def _effective_max_epochs(metrics: dict[str, Any], configured: Any) -> Any:
    r"""The epoch budget a finished run ended with. A run resumed with a larger
    ``trainer.max_epochs`` keeps the config it was started with in ``.hydra/``, so the
    budget comes from ``metrics.json`` (runs written before it recorded one: at least the
    epochs it trained)."""
    if isinstance(metrics.get("max_epochs"), int):
        return metrics["max_epochs"]
    epochs = metrics.get("epochs")
    if isinstance(epochs, int) and isinstance(configured, int):
        return max(epochs, configured)
    return configured


def _last_change(path: Path) -> float:
    times = [path.stat().st_mtime]
    for sub in ("train.log", "history.jsonl", "tb", "checkpoints"):
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
    cfg = upgrade_config(
        OmegaConf.to_container(OmegaConf.load(path / ".hydra" / "config.yaml"), resolve=False)
    )
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
        config=flatten(cfg),
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
        run.max_epochs = _effective_max_epochs(metrics, run.max_epochs)
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
        # the trainer's test ELBO and NLL share their images since metrics.json said how many
        run.same_images = isinstance(metrics.get("test_examples"), int)
        run.examples = metrics.get("test_examples") if run.same_images else None
        split_size = metrics.get("test_split_size")
        run.split_size = split_size if isinstance(split_size, int) else None
        if run.stopped_by == "early_stopping":
            run.message = f"early stopping at epoch {run.epochs} (best {run.best_epoch})"
    if run.status != "failed" and metrics is None:
        run.history = read_history(path)
        if run.history:
            run.epochs = run.history[-1]["epoch"]
            run.max_epochs = run.history[-1].get("max_epochs", run.max_epochs)
        now = time.time() if now is None else now
        run.status = "running" if now - _last_change(path) < RUNNING_WINDOW_S else "incomplete"
        done = f"epoch {run.epochs}/{run.max_epochs}" if run.epochs else "no epoch finished"
        run.message = done if run.status == "running" else f"{done}; no metrics.json and no failed.txt"
    elif run.status == "failed":
        run.history = read_history(path)
        if run.history:
            run.epochs = run.history[-1]["epoch"]

    run.eval, run.eval_path = _latest_eval(path)
    if run.eval is not None and run.status == "completed":
        e = run.eval
        run.nll, run.nll_se = _number(e.get("eval/iw_nll")), _number(e.get("eval/iw_nll_se"))
        run.elbo, run.elbo_se = _number(e.get("eval/elbo")), _number(e.get("eval/elbo_se"))
        run.kl, run.k, run.source = _number(e.get("eval/kl")), e.get("k"), "eval"
        run.same_images = True
        run.examples = e.get("examples") if isinstance(e.get("examples"), int) else None
        run.split_size = e.get("split_size") if isinstance(e.get("split_size"), int) else None
        if _finite(e.get("eval/quad_nll")):  # 1 or 2 latents: the exact NLL, not an estimate
            run.nll, run.nll_se, run.exact = e["eval/quad_nll"], _number(e.get("eval/quad_nll_se")), True
        units = e.get("eval/active_units")
        run.active_units = units if isinstance(units, int) else None
        levels = (e.get("likelihood") or {}).get("levels")
        run.levels = levels if isinstance(levels, int) else None
        run.dims = e.get("dims") if isinstance(e.get("dims"), int) else None
    gaps, _ = _latest_eval(path, "eval/gaps/approximation")
    if gaps is not None and run.status == "completed" and isinstance(gaps.get("gaps"), dict):
        run.gaps = gaps["gaps"]
    if (path / "eval_failed.txt").is_file():
        run.eval_failed = _first_line((path / "eval_failed.txt").read_text(errors="replace"))
    return run
