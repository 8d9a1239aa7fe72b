r"""The report's figures: ``depth.png`` (:func:`plot_depth`: the finished runs' test
figures and training cost against the flow depth, one line per family) and ``curves.png``
(:func:`plot_curves`: every run's validation ELBO over epochs, one panel per family) and
``gaps.png`` (:func:`plot_gaps`: the inference gaps of the runs that have them).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vaeflow.report.compare import summarize
from vaeflow.report.find import Sweep
from vaeflow.report.run import Run, _family_rank, _finite
from vaeflow.report.settings import settings_of
from vaeflow.report.tables import _unfinished_note

__all__ = ["plot_depth", "plot_curves", "plot_gaps"]


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


def _references(run: Run, baselines: Sequence[Run], settings: dict[int, str]) -> list[tuple[Run, list[str]]]:
    r"""The runs without flow steps to draw beside ``run``'s panel: those whose setting
    shares the most ``key=value`` items with ``run``'s (so a flow's own options, such as
    ``posterior.variant``, do not part it from its baselines), each with the items of its
    setting that ``run``'s lacks."""

    mine = set(settings[id(run)].split())
    theirs = [set(settings[id(b)].split()) for b in baselines]
    most = max((len(t & mine) for t in theirs), default=0)
    return [(b, sorted(t - mine)) for b, t in zip(baselines, theirs) if len(t & mine) == most]


def plot_curves(runs: Sequence[Run], path: str | Path, title: str | None = None) -> Path:
    r"""Validation ELBO over epochs: one panel per family (and setting), one line per run
    coloured by depth; runs still training dashed, failed ones dotted; a dot at each run's
    best epoch; the families without flow steps in grey, dashed, in every flow family's
    panel: those whose setting is closest to the panel's (see :func:`_references`)."""
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
        members = [r for r in with_curves if panel_of(r) == panel]
        if any(r.depth > 0 for r in members):
            for i, (r, differs) in enumerate(_references(members[0], baselines, settings)):
                points = [(h["epoch"], h["val/elbo"]) for h in r.history if _finite(h.get("val/elbo"))]
                label = f"{r.family} (no flow{''.join(', ' + d for d in differs)})"
                ax.plot(
                    *zip(*points),
                    color=("#777777", "#aaaaaa", "#cccccc")[i % 3],
                    ls=((0, (4, 3)), (0, (1, 1.5)), (0, (6, 2, 1, 2)))[i // 3 % 3],
                    lw=1.2,
                    label=None if label in seen else label,
                )
                seen.add(label)
        for r in members:
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
        lines = textwrap.wrap(panel, width=52)
        ax.set_title("\n".join(lines), fontsize=11 if len(lines) == 1 else 9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8 if len(seen) <= 4 else 6, loc="lower right")
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
    heading = title or f"{', '.join(datasets)}: validation ELBO during training (• best epoch)"
    width = int(7.5 * fig.get_figwidth())  # characters of 13 pt bold text that fit: one panel wraps
    fig.suptitle("\n".join(textwrap.wrap(heading, width)), fontsize=13, fontweight="bold")
    fig.savefig(path, dpi=110)
    return path


def plot_gaps(runs: Sequence[Run], path: str | Path) -> Path | None:
    r"""``gaps.png``: each run's approximation and amortization gaps (Cremer et al. 2018)
    side by side, ± one standard error over the evaluated images, in the report's order; or
    ``None`` when no run has a ``vaeflow eval gaps=true``."""
    from matplotlib.figure import Figure

    with_gaps = [r for r in runs if r.gaps]
    if not with_gaps:
        return None
    labels = [
        r.family + (f" {r.depth}" if r.depth else "") + (f" ({r.setting})" if r.setting else "")
        for r in with_gaps
    ]
    fig = Figure(figsize=(8.5, 1.2 + 0.42 * len(with_gaps)), layout="constrained")
    ax = fig.subplots()
    height = 0.38
    for offset, (key, color) in enumerate(
        (("approximation_same", "#1f77b4"), ("amortization_same", "#ff7f0e"))
    ):
        cells = [r.gaps.get("rows", {}).get(key, {}) for r in with_gaps]
        means = [c.get("mean") if _finite(c.get("mean")) else 0.0 for c in cells]
        errors = [c.get("se") if _finite(c.get("se")) else 0.0 for c in cells]
        ys = [i + (offset - 0.5) * height for i in range(len(with_gaps))]
        label = key.removesuffix("_same") + " gap"
        ax.barh(ys, means, height=height, xerr=errors, color=color, label=label, capsize=2)
    ax.set_yticks(range(len(with_gaps)), [textwrap.shorten(label, 48) for label in labels], fontsize=8)
    ax.invert_yaxis()
    ax.axvline(0, color="black", lw=0.6)
    ax.set_xlabel("nats per image (± standard error over the evaluated images)")
    ax.legend(fontsize=8, loc="lower right")
    datasets = sorted({r.dataset for r in with_gaps})
    images = sorted({r.gaps.get("n") for r in with_gaps if isinstance(r.gaps.get("n"), int)})
    ax.set_title(
        f"{', '.join(datasets)}: inference gaps of each run ({', '.join(map(str, images))} test images; "
        "approximation: the family's best posterior for each image, its distance to p(z|x); amortization: "
        "the encoder's distance to that best one)",
        fontsize=9,
        wrap=True,
    )
    fig.savefig(path, dpi=110)
    return Path(path)
