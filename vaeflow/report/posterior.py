r"""``posterior.png``: the true posterior :math:`p(z|x)` beside each run's :math:`q(z|x)`, for
runs with 1 or 2 latents (:func:`posterior_panels`, :func:`plot_posteriors`).

For the same seeded test images in every run (:func:`~vaeflow.data.seeded_subset`), the
true posterior :math:`p(z|x) \propto p(x|z)\, p(z)` is computed on the grid of
:func:`~vaeflow.evaluate.quadrature.quadrature`, which fits each image's mass, and
normalized by it; :math:`q(z|x)` is drawn on the same grid: its density where the family can
evaluate :math:`\log q` of a given z, else a 2-D histogram of many of its samples (planar,
radial, Sylvester). Both panels share the colour scale and the contour levels: the
densities that enclose 50%, 90% and 99% of the true posterior's mass. Each q panel gives

.. math:: KL(q(z|x) \| p(z|x)) = \log p(x) - E_q[\log p(x, z) - \log q(z|x)],

with :math:`\log p(x)` by quadrature and the expectation over the samples, and each p panel
:math:`\log p(x)`. Rows are runs, columns images, so families compare side by side.

References:
    | Variational Inference with Normalizing Flows (Rezende & Mohamed, 2015), Fig. 3
    | https://arxiv.org/abs/1505.05770
    | Inference Suboptimality in Variational Autoencoders (Cremer, Li & Duvenaud, 2018), Fig. 2
    | https://arxiv.org/abs/1801.03558
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vaeflow.report.find import Sweep
from vaeflow.report.run import Run
from vaeflow.report.trained import each_trained

if TYPE_CHECKING:
    from torch import Tensor

    from vaeflow.data import Split
    from vaeflow.model import VAE

__all__ = ["PosteriorPanel", "posterior_panels", "plot_posteriors", "IMAGES", "SAMPLES", "MASS_LEVELS"]

#: test images per row, q's samples per image (its histogram, and the KL), and the seed
IMAGES, SAMPLES, SEED = 4, 50_000, 0
#: the true posterior's mass inside each contour
MASS_LEVELS = (0.99, 0.9, 0.5)
#: cells per axis of q's histogram (families without a density), over the same box
HISTOGRAM_BINS = 48
#: cells per axis of the grid the panels show, for 1 and 2 latents
DISPLAY_CELLS = {1: 400, 2: 120}


@dataclass
class PosteriorPanel:
    r"""One image's true and approximate posteriors on the same grid (float64, CPU).

    Attributes:
        edges: the bin edges of each axis of the display grid (``D`` tensors).
        p: :math:`p(z|x)` on the grid's cells, ``[n]`` or ``[n, n]`` (first index: :math:`z_1`).
        q: :math:`q(z|x)` on its own cells (the grid's, or ``HISTOGRAM_BINS`` for a histogram).
        q_edges: the edges of ``q``'s cells.
        q_density: whether ``q`` is q's density (else a histogram of ``samples`` samples).
        log_px: :math:`\log p(x)` by quadrature, and ``log_px_error`` its error estimate.
        kl, kl_se: :math:`KL(q \| p(z|x))` and its Monte Carlo standard error.
        levels: the contour levels (densities) enclosing :data:`MASS_LEVELS` of ``p``.
        samples: q's samples behind the KL (and the histogram).
        view: the box shown, ``(lo, hi)`` per axis: where 99.9% of p's mass and of q's
            samples is, 10% wider (the quadrature grid keeps more, for the integral); ``p``
            and a density ``q`` are evaluated on a grid of it.
    """

    edges: list[Tensor]
    p: Tensor
    q: Tensor
    q_edges: list[Tensor]
    q_density: bool
    log_px: float
    log_px_error: float
    kl: float
    kl_se: float
    levels: list[float]
    samples: int
    view: list[tuple[float, float]]


def hpd_levels(density: Tensor, cell: float, masses: Sequence[float] = MASS_LEVELS) -> list[float]:
    r"""The densities above which the cells hold each of ``masses`` of the distribution
    (highest-density regions), for contour lines."""
    import torch

    values = density.flatten().sort(descending=True).values
    cumulative = torch.cumsum(values * cell, 0)
    out = []
    for mass in masses:
        index = int(torch.searchsorted(cumulative, torch.tensor(mass, dtype=cumulative.dtype)))
        out.append(float(values[min(index, len(values) - 1)]))
    return out


def mass_box(density: Tensor, edges: list[Tensor], mass: float = 0.999) -> list[tuple[float, float]]:
    r"""The bounding box ``(lo, hi)`` per axis of the highest-density cells holding ``mass``."""
    cell = math.prod(float(e[1] - e[0]) for e in edges)
    level = hpd_levels(density, cell, [mass])[0]
    kept = density >= level
    box = []
    for axis, e in enumerate(edges):
        along = kept.movedim(axis, 0).reshape(kept.shape[axis], -1).any(1).nonzero()[:, 0]
        box.append(
            (float(e[int(along.min())]), float(e[int(along.max()) + 1]))
            if len(along)
            else (float(e[0]), float(e[-1]))
        )
    return box


def _union(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> list[tuple[float, float]]:
    r"""The box around both ``a`` and ``b``, 10% wider on each side."""
    out = []
    for (a0, a1), (b0, b1) in zip(a, b):
        lo, hi = min(a0, b0), max(a1, b1)
        margin = 0.1 * (hi - lo)
        out.append((lo - margin, hi + margin))
    return out


def posterior_panels(
    model: VAE, split: Split, images: int = IMAGES, samples: int = SAMPLES, seed: int = SEED
) -> list[PosteriorPanel]:
    r"""The panels of one run: :data:`IMAGES` test images of ``split`` (a seeded subset, the
    same in every run of the dataset), for a model with 1 or 2 latents."""
    import torch

    from vaeflow.data import binarize_fixed, seeded_subset
    from vaeflow.evaluate.quadrature import quadrature
    from vaeflow.randomness import example_noise
    from vaeflow.stats import mean_se

    ids = seeded_subset(len(split), images, seed)
    x = split.images[ids]
    if split.dynamic:
        x = binarize_fixed(x, seed)
    param = next(model.parameters())
    x = x.to(param.device, param.dtype)
    quad = quadrature(model, x)
    d = model.latent_dim
    panels = []
    with torch.inference_mode():
        h = model.encoder(x)
        eps = example_noise(ids, 0, samples, d, seed, device=param.device, dtype=param.dtype)
        z, log_q = model.posterior.reparameterize(h, eps)  # [S, B, D], [S, B]
        log_px_z, log_pz = model.log_joint(z, x)
        elbo = (log_px_z + log_pz - log_q).double().cpu()
    for j in range(x.shape[0]):
        # where p's mass is (on the quadrature grid) and q's (its samples), then a display grid
        # where p's mass is (on a grid of the quadrature's box) and q's (its samples)
        log_px = float(quad.log_px[j])
        box = list(zip(quad.lo[j].tolist(), quad.hi[j].tolist()))
        first_edges, first_p = _posterior_grid(model, x[j : j + 1], box, DISPLAY_CELLS[d], log_px)
        q_box = [(float(v.quantile(0.0005)), float(v.quantile(0.9995))) for v in z[:, j].double().cpu().T]
        view = _union(mass_box(first_p, first_edges), q_box)
        edges, p = _posterior_grid(model, x[j : j + 1], view, DISPLAY_CELLS[d], log_px)
        cell = math.prod(float(e[1] - e[0]) for e in edges)
        if model.posterior.has_log_prob:
            centres = _centres(edges).to(param.device, param.dtype)
            with torch.inference_mode():
                q = (
                    model.posterior.log_prob(centres, h[j : j + 1])[:, 0]
                    .double()
                    .cpu()
                    .exp()
                    .reshape(p.shape)
                )
            q_edges, q_density = edges, True
        else:
            q_edges = [grid_edges(lo, hi, HISTOGRAM_BINS) for lo, hi in view]
            counts = torch.histogramdd(z[:, j].double().cpu(), bins=q_edges).hist
            q_cell = math.prod(float(e[1] - e[0]) for e in q_edges)
            q, q_density = counts / (samples * q_cell), False
        mean, se = mean_se(elbo[:, j])
        panels.append(
            PosteriorPanel(
                edges, p, q, q_edges, q_density, log_px, float(quad.error[j]), log_px - mean, se,
                hpd_levels(p, cell), samples, view,
            )
        )  # fmt: skip
    return panels


def _centres(edges: list[Tensor]) -> Tensor:
    r"""The cell centres of a grid, ``[cells, 1, D]`` (the first axis slowest)."""
    import torch

    return torch.cartesian_prod(*[(e[1:] + e[:-1]) / 2 for e in edges]).reshape(-1, 1, len(edges))


def _posterior_grid(
    model: VAE, x: Tensor, box: list[tuple[float, float]], cells: int, log_px: float
) -> tuple[list[Tensor], Tensor]:
    r""":math:`p(z|x) = \exp(\log p(x, z) - \log p(x))` on a grid of ``cells`` per axis over
    ``box``: ``(edges, density)``."""
    import torch

    edges = [grid_edges(lo, hi, cells) for lo, hi in box]
    param = next(model.parameters())
    with torch.inference_mode():
        log_px_z, log_pz = model.log_joint(_centres(edges).to(param.device, param.dtype), x)
    density = (log_px_z + log_pz)[:, 0].double().cpu().sub(log_px).exp()
    return edges, density.reshape([cells] * len(box))


def grid_edges(lo: float, hi: float, n: int) -> Tensor:
    r"""The ``n + 1`` edges of ``n`` equal cells of ``[lo, hi]``, float64."""
    import torch

    return torch.linspace(lo, hi, n + 1, dtype=torch.float64)


def plot_posteriors(
    runs: Sequence[Run],
    path: str | Path,
    sweeps: Sequence[Sweep] = (),
    images: int = IMAGES,
    samples: int = SAMPLES,
    seed: int = SEED,
) -> Path | None:
    r"""``posterior.png`` of the finished runs with 1 or 2 latents (one row each, the true
    posterior and q side by side for each image), or ``None`` when there are none. A run
    that cannot be loaded is left out with a note (``posterior_skipped``)."""
    small = [r for r in runs if r.finished and isinstance(r.config.get("model.latent_dim"), int)
             and r.config["model.latent_dim"] <= 2]  # fmt: skip
    if not small:
        return None
    for run in small:
        run.posterior_skipped = ""

    def skip(run: Run, why: str) -> None:
        run.posterior_skipped = why

    def draw(trained) -> list[PosteriorPanel]:
        return posterior_panels(trained.model, trained.data.test, images, samples, seed)

    rows = each_trained(small, draw, skip)
    if not rows:
        return None
    return _draw(rows, Path(path), images, seed)


def _draw(rows: list[tuple[Run, list[PosteriorPanel]]], path: Path, images: int, seed: int) -> Path:
    from matplotlib.figure import Figure

    two_d = len(rows[0][1][0].edges) == 2
    per_image = 2 if two_d else 1
    cols = images * per_image
    fig = Figure(figsize=(1.9 * cols + 1.8, 1.95 * len(rows) + 1.2), layout="constrained")
    grid = fig.add_gridspec(len(rows), cols + 1, width_ratios=[1.1] + [1.0] * cols)
    for r, (run, panels) in enumerate(rows):
        label = fig.add_subplot(grid[r, 0])
        label.set_axis_off()
        head = run.family + (f", depth {run.depth}" if run.depth else "")
        meta = [run.dataset, f"seed {run.seed}"] + ([run.setting] if run.setting else [])
        label.text(0, 0.6, head, fontsize=10, fontweight="bold", va="center", transform=label.transAxes)
        label.text(0, 0.35, "\n".join(meta), fontsize=7, va="center", color="#444444", transform=label.transAxes,
                   wrap=True)  # fmt: skip
        for i, panel in enumerate(panels):
            if two_d:
                _panel_2d(fig.add_subplot(grid[r, 1 + 2 * i]), panel, true=True, first=r == 0, index=i)
                _panel_2d(fig.add_subplot(grid[r, 2 + 2 * i]), panel, true=False, first=r == 0, index=i)
            else:
                _panel_1d(fig.add_subplot(grid[r, 1 + i]), panel, first=r == 0, index=i)
    datasets = sorted({run.dataset for run, _ in rows})
    fig.suptitle(
        f"{', '.join(datasets)}: true posterior p(z|x) (by quadrature) beside each run's q(z|x), "
        f"{images} test images",
        fontsize=12, fontweight="bold",
    )  # fmt: skip
    fig.supxlabel(
        f"contours: the densities enclosing {', '.join(f'{m:.0%}' for m in MASS_LEVELS)} of p(z|x), on both panels; "
        f"q as its density, or as a histogram of {rows[0][1][0].samples:,} samples where the family has none; "
        f"KL(q || p(z|x)) = log p(x) - ELBO over those samples; grid cell width beside log p(x); seed {seed}",
        fontsize=7.5, color="#444444",
    )  # fmt: skip
    fig.savefig(path, dpi=100)
    return path


def _panel_2d(ax, panel: PosteriorPanel, true: bool, first: bool, index: int) -> None:
    values, edges = (panel.p, panel.edges) if true else (panel.q, panel.q_edges)
    extent = [float(edges[0][0]), float(edges[0][-1]), float(edges[1][0]), float(edges[1][-1])]
    vmax = float(panel.p.max())
    ax.imshow(values.T.numpy(), origin="lower", extent=extent, aspect="auto", cmap="Blues", vmin=0, vmax=vmax,
              interpolation="nearest")  # fmt: skip
    centres = [((e[1:] + e[:-1]) / 2).numpy() for e in edges]
    levels = sorted(set(panel.levels))
    if len(levels) > 0 and float(values.max()) > levels[0]:
        ax.contour(centres[0], centres[1], values.T.numpy(), levels=levels, colors="#b2182b", linewidths=0.6)
    (x0, x1), (y0, y1) = panel.view
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.tick_params(labelsize=5.5, length=2, pad=1)
    if true:
        cell = float(panel.edges[0][1] - panel.edges[0][0])
        text = f"log p(x) {panel.log_px:.2f}\ncell {cell:.2g}"
    else:
        text = f"KL {panel.kl:.3f}" + ("" if panel.q_density else "\n(histogram)")
    ax.text(0.03, 0.97, text, transform=ax.transAxes, fontsize=6.5, va="top", color="#222222",
            bbox={"facecolor": "white", "alpha": 0.7, "edgecolor": "none", "pad": 1})  # fmt: skip
    if first:
        ax.set_title(f"image {index + 1}: {'p(z|x)' if true else 'q(z|x)'}", fontsize=8)


def _panel_1d(ax, panel: PosteriorPanel, first: bool, index: int) -> None:
    centres = ((panel.edges[0][1:] + panel.edges[0][:-1]) / 2).numpy()
    ax.fill_between(centres, panel.p.numpy(), color="#9ecae1", label="p(z|x)")
    if panel.q_density:
        ax.plot(centres, panel.q.numpy(), color="#b2182b", lw=1.0, label="q(z|x)")
    else:
        q_centres = ((panel.q_edges[0][1:] + panel.q_edges[0][:-1]) / 2).numpy()
        ax.step(q_centres, panel.q.numpy(), where="mid", color="#b2182b", lw=1.0, label="q(z|x) (hist.)")
    ax.set_xlim(*panel.view[0])
    ax.set_yticks([])
    ax.tick_params(labelsize=6)
    ax.text(0.03, 0.97, f"log p(x) {panel.log_px:.2f}\nKL {panel.kl:.3f}", transform=ax.transAxes, fontsize=6.5,
            va="top")  # fmt: skip
    if first:
        ax.set_title(f"image {index + 1}", fontsize=8)
        if index == 0:
            ax.legend(fontsize=6, loc="upper right")
