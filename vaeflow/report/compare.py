r"""Comparing runs: NLL differences on the same test images with their paired standard
errors (:func:`paired_deltas`), and means over seeds (:class:`Group`, :func:`summarize`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vaeflow.errors import ConfigError
from vaeflow.report.run import Run, _family_rank, _finite, _number
from vaeflow.report.settings import settings_of
from vaeflow.stats import mean_se

__all__ = ["paired_deltas", "Group", "summarize"]


def _per_example_nll(run: Run) -> tuple[Any, Any] | None:
    r"""``(ids, nll)`` of the test images of ``run``'s latest evaluation, if it kept them: by
    quadrature where the run's NLL is (``run.exact``), else the IW estimates."""
    if run.eval_path is None:
        return None
    path = run.eval_path.parent / "per_example.pt"
    try:
        import torch

        data = torch.load(path, map_location="cpu", weights_only=True)
        return data["ids"], -data["log_px_quad" if run.exact else "log_px"].double()
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

    Raises:
        ConfigError: ``baseline`` names no run that can be one; the message lists those that can.
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
    if baseline and base is None:
        raise ConfigError(_no_baseline(runs, baseline))
    if base is None or figures is None:
        return None
    base_ids, base_nll = figures
    for run in evaluated:
        if run.dataset != base.dataset or run.exact != base.exact:  # exact NLLs pair only with exact ones
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
        run.delta, run.baseline = mean_se(diff), base.label or base.name
        run.paired = len(diff)
    return base


def _no_baseline(runs: Sequence[Run], baseline: str) -> str:
    named = [r for r in runs if baseline in (r.name, r.label)]
    usable = [r.label or r.name for r in runs if r.finished and r.source == "eval" and _per_example_nll(r)]
    there = (
        f"runs that can be one: {', '.join(usable)}"
        if usable
        else "no run here has a vaeflow eval of the test split"
    )
    if named:
        return (
            f"--baseline {baseline}: that run has no vaeflow eval of the test split with per-image figures "
            f"(run `vaeflow eval {named[0].path}`); {there}"
        )
    return f"--baseline {baseline}: no run of this report has that name or label; {there}"


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
    def objective(self) -> str:
        return self.runs[0].objective

    @property
    def label(self) -> str:
        parts = [p for p in (self.objective if self.objective != "elbo" else "", self.setting) if p]
        return self.family + (f" ({', '.join(parts)})" if parts else "")


def _mean_se(values: Sequence[float | None], own_se: float | None = None) -> tuple[float, float | None]:
    r""":func:`~vaeflow.stats.mean_se` over seeds; one run's own standard error (over test
    images) when there is one run."""
    mean, se = mean_se(values)
    if sum(_finite(v) for v in values) == 1:
        se = own_se
    return mean, se if _finite(se) else None


def summarize(runs: Sequence[Run]) -> list[Group]:
    r"""Groups the finished runs by (dataset, setting, family, depth, objective), where a setting
    holds the config values that differ between finished runs (unfinished runs do not
    split the groups)."""
    finished = [run for run in runs if run.finished]
    groups: dict[tuple, list[Run]] = {}
    for run, setting in zip(finished, settings_of(finished)):
        groups.setdefault((run.dataset, setting, run.family, run.depth, run.objective), []).append(run)
    out = []
    for (dataset, setting, family, depth, _), members in groups.items():
        one = members[0] if len(members) == 1 else None
        nll, nll_se = _mean_se([r.nll for r in members], one.nll_se if one else None)
        neg_elbo, elbo_se = _mean_se([-r.elbo for r in members], one.elbo_se if one else None)
        # -ELBO - NLL only where both are of the same images (not in older runs' metrics)
        gap, gap_se = _mean_se([-r.elbo - r.nll if r.same_images else None for r in members])
        if one is not None and one.eval is not None:
            gap_se = _number(one.eval.get("eval/iw_gain_se"))
        spe = [r.seconds_per_epoch for r in members if r.seconds_per_epoch is not None]
        out.append(
            Group(
                dataset, setting, family, depth, members, nll, nll_se, neg_elbo, elbo_se, gap, gap_se,
                sum(spe) / len(spe) if spe else None, members[0].parameters,
            )
        )  # fmt: skip
    out.sort(key=lambda g: (g.dataset, _family_rank(g.family), g.objective, g.setting, g.depth))
    return out
