r"""Exact log-likelihood and true posteriors by quadrature, for latent spaces of 1 or 2 dimensions.

With :math:`D \le 2` the marginal likelihood is a low-dimensional integral that a grid
computes to any accuracy, with no proposal to get wrong:

.. math:: \log p(x) = \log \int p(x|z)\, p(z)\, dz
    \approx \operatorname{logsumexp}_i \log p(x, z_i) + \log \Delta,

the midpoint rule on cells of volume :math:`\Delta`, and on the same grid the true posterior
:math:`p(z_i|x) = p(x, z_i) / p(x)`. For a smooth integrand that vanishes at the edges of
the box, a uniform Riemann sum converges faster than any power of the cell width (the
error of the trapezoid rule for analytic, decaying functions), so a grid a few times finer
than the posterior's width is already exact to many digits; what matters is the box.

**The grid adapts to where the mass is** (:func:`quadrature`): a coarse grid over
:math:`[-L, L]^D` locates the cells holding :math:`\log p(x, z)` within ``threshold`` nats
of its maximum (the box doubles while they touch its edge), and a fine grid of ``points``
cells per axis covers their bounding box, one coarse cell wider on each side, for each
example. Two things can be wrong with the result, and both are reported in ``error``:

- the discretization: estimated by the same sum over every other point of the fine grid
  (twice the cell width), whose difference to the full sum is far larger than the error
  of the full sum whenever the grid resolves the posterior;
- the mass left out: the coarse grid's estimate of the mass outside the fine box.

References:
    | Variational Inference with Normalizing Flows (Rezende & Mohamed, 2015): true and
      approximate posteriors in 2-D, https://arxiv.org/abs/1505.05770
    | Inference Suboptimality in Variational Autoencoders (Cremer, Li & Duvenaud, 2018):
      posteriors of 2-D latent VAEs on a grid, https://arxiv.org/abs/1801.03558
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from vaeflow.errors import ConfigError
from vaeflow.model import VAE

__all__ = ["MAX_QUADRATURE_DIM", "Quadrature", "quadrature", "grid_points"]

#: the largest latent size whose integral is computed on a grid
MAX_QUADRATURE_DIM = 2


@dataclass
class Quadrature:
    r"""Per-example results of :func:`quadrature` for N examples (CPU, float64).

    Attributes:
        log_px: :math:`\log p(x)` ``[N]``.
        error: an estimate of :math:`|\log \hat p(x) - \log p(x)|` ``[N]`` (nats): the
            discretization estimate plus the mass left outside the fine box.
        lo, hi: each example's fine box ``[N, D]``.
        points: cells per axis of the fine grids.
        log_joint: :math:`\log p(x, z)` at the fine grid's cell centres, ``[N, points]``
            (D = 1) or ``[N, points, points]`` (D = 2, first index along :math:`z_1`).
        half_width: :math:`L`, the coarse box's half width.
    """

    log_px: Tensor
    error: Tensor
    lo: Tensor
    hi: Tensor
    points: int
    log_joint: Tensor
    half_width: float

    @property
    def cell(self) -> Tensor:
        r"""The fine grid's cell widths ``[N, D]``."""
        return (self.hi - self.lo) / self.points

    def axes(self, j: int) -> list[Tensor]:
        r"""Example ``j``'s cell centres along each axis."""
        return [grid_axis(float(a), float(b), self.points) for a, b in zip(self.lo[j], self.hi[j])]

    def log_posterior(self, j: int) -> Tensor:
        r""":math:`\log p(z|x)` of example ``j`` at its cell centres (a density)."""
        return self.log_joint[j] - self.log_px[j]


def grid_axis(lo: float, hi: float, n: int) -> Tensor:
    r"""The centres of ``n`` equal cells of ``[lo, hi]``, float64."""
    return lo + (torch.arange(n, dtype=torch.float64) + 0.5) * (hi - lo) / n


def grid_points(axes: list[Tensor]) -> Tensor:
    r"""Every combination of the axes' centres, ``[prod n, D]`` (the first axis slowest)."""
    return torch.cartesian_prod(*axes).reshape(-1, len(axes))


def _log_joint_shared(model: VAE, z: Tensor, x: Tensor, chunk: int) -> Tensor:
    r"""``log p(x, z)`` ``[P, B]`` of points ``z [P, D]`` shared by all examples ``x [B, ...]``:
    each point is decoded once."""
    out = []
    for start in range(0, z.shape[0], chunk):
        zc = z[start : start + chunk]
        params = model.decoder(zc)
        out.append(
            model.likelihood.log_prob(params.unsqueeze(-2), x) + model.prior.log_prob(zc).unsqueeze(-1)
        )
    return torch.cat(out)


def _log_joint_each(model: VAE, z: Tensor, x: Tensor, chunk: int) -> Tensor:
    r"""``log p(x, z)`` ``[P, B]`` of points ``z [P, B, D]`` of each example's own."""
    out = []
    for start in range(0, z.shape[0], chunk):
        log_px, log_pz = model.log_joint(z[start : start + chunk], x)
        out.append(log_px + log_pz)
    return torch.cat(out)


@torch.inference_mode()
def quadrature(
    model: VAE,
    images: Tensor,
    *,
    points: int | None = None,
    coarse: int | None = None,
    half_width: float = 6.0,
    threshold: float = 30.0,
    batch_size: int = 64,
    progress: Callable[[int], None] | None = None,
) -> Quadrature:
    r""":math:`\log p(x)` of every example by the midpoint rule on a grid fitted to its
    posterior, with the grid itself (see the module's docstring).

    Arguments:
        model: a VAE with 1 or 2 latent dimensions.
        images: examples ``[N, ...]``.
        points: fine cells per axis (default 128 for D = 2, 2048 for D = 1).
        coarse: coarse cells per axis over ``[-L, L]`` (default 64 for D = 2, 1024 for D = 1).
        half_width: :math:`L` to start from (doubled while the mass touches the edge).
        threshold: nats below the maximum of :math:`\log p(x, z)` that the fine box keeps.
        batch_size: examples per pass.
        progress: called with the examples done.

    Example:
        >>> from vaeflow.model import build_model
        >>> cfg = {"model": {"latent_dim": 2}, "encoder": {"name": "mlp", "hidden_dims": [8]},
        ...        "decoder": {"name": "mlp", "hidden_dims": [8]},
        ...        "posterior": {"name": "mean_field"}, "prior": {"name": "standard_normal"}}
        >>> model = build_model(cfg, (1, 3, 3))
        >>> quad = quadrature(model, torch.ones(2, 1, 3, 3), points=64)
        >>> quad.log_joint.shape, bool((quad.error < 1e-3).all())
        (torch.Size([2, 64, 64]), True)
    """
    d = model.latent_dim
    if d > MAX_QUADRATURE_DIM:
        raise ConfigError(f"quadrature needs a latent space of 1 or 2 dimensions, this model has {d}")
    points = int(points or (128 if d == 2 else 2048))
    coarse = int(coarse or (64 if d == 2 else 1024))
    if points < 2 or coarse < 4:
        raise ConfigError(f"quadrature: points={points} and coarse={coarse} are too few (>= 2 and >= 4)")
    param = next(model.parameters())
    dtype, device = param.dtype, param.device
    model.eval()
    n = images.shape[0]
    results: list[tuple[Tensor, ...]] = []
    for e0 in range(0, n, batch_size):
        x = images[e0 : e0 + batch_size].to(device=device, dtype=dtype)
        chunk = max(1, 8192 // x.shape[0])  # points per decoder pass: 8,192 (point, example) pairs
        results.append(_quadrature_block(model, x, d, points, coarse, half_width, threshold, chunk))
        if progress is not None:
            progress(min(n, e0 + batch_size))
    log_px, error, lo, hi, log_joint, widths = (torch.cat(parts) for parts in zip(*results))
    return Quadrature(log_px, error, lo, hi, points, log_joint, float(widths.max()) if n else half_width)


def _quadrature_block(
    model: VAE, x: Tensor, d: int, points: int, coarse: int, half_width: float, threshold: float, chunk: int
) -> tuple[Tensor, ...]:
    dtype, device = x.dtype, x.device
    b = x.shape[0]
    # 1. the coarse grid, shared by the examples: where is the mass?
    width = half_width
    for _ in range(4):
        axis = grid_axis(-width, width, coarse)
        zc = grid_points([axis] * d)
        lj_c = _log_joint_shared(model, zc.to(device, dtype), x, chunk).double().cpu()  # [Pc, B]
        kept = (lj_c >= lj_c.max(0).values - threshold).reshape(*[coarse] * d, b)
        edges = [kept.select(i, 0) | kept.select(i, coarse - 1) for i in range(d)]
        if not any(bool(e.any()) for e in edges):
            break
        width *= 2
    coarse_cell = 2 * width / coarse
    # each example's box: the kept coarse cells, one cell wider on each side
    lo, hi = torch.empty(b, d, dtype=torch.float64), torch.empty(b, d, dtype=torch.float64)
    for i in range(d):
        along = kept.movedim(i, 0).reshape(coarse, -1, b).any(1)  # [coarse, B]
        index = torch.arange(coarse)[:, None].expand(coarse, b)
        first = torch.where(along, index, coarse).min(0).values
        last = torch.where(along, index, -1).max(0).values
        lo[:, i] = -width + (first - 1).clamp(min=0) * coarse_cell
        hi[:, i] = -width + (last + 2).clamp(max=coarse) * coarse_cell
    # 2. each example's fine grid
    frac = (torch.arange(points, dtype=torch.float64) + 0.5) / points
    axes = lo[None] + frac[:, None, None] * (hi - lo)[None]  # [points, B, D]
    if d == 1:
        zf = axes  # [points, B, 1]
    else:
        zf = torch.stack(
            [axes[:, None, :, 0].expand(points, points, b), axes[None, :, :, 1].expand(points, points, b)], -1
        ).reshape(points * points, b, 2)
    lj_f = _log_joint_each(model, zf.to(device, dtype), x, chunk).double().cpu()  # [Pf, B]
    log_cell = torch.log(hi - lo).sum(1) - d * math.log(points)
    log_px = torch.logsumexp(lj_f, 0) + log_cell
    grid = lj_f.T.reshape(b, *[points] * d)
    every_other = grid[(slice(None), *[slice(None, None, 2)] * d)]
    half = torch.logsumexp(every_other.reshape(b, -1), 1) + log_cell + d * math.log(2)
    # the mass outside the fine box, by the coarse grid
    inside = torch.ones(lj_c.shape, dtype=torch.bool)
    coords = zc.to(torch.float64)
    for i in range(d):
        inside &= (coords[:, i : i + 1] >= lo[None, :, i]) & (coords[:, i : i + 1] <= hi[None, :, i])
    outside = torch.logsumexp(torch.where(inside, -math.inf, lj_c), 0) + d * math.log(coarse_cell)
    total = torch.logaddexp(log_px, outside)
    error = (log_px - half).abs() + (total - log_px)
    return total, error, lo, hi, grid, torch.full((b,), width, dtype=torch.float64)
