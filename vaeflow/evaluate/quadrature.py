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
:math:`[-L, L]^D`, shared by a batch of examples, locates the cells holding
:math:`\log p(x, z)` within ``threshold`` nats of its maximum (the box doubles while they
touch its edge). Each connected region of those cells (a posterior mode, or several close
ones) then gets grids of its own: ``points`` cells per axis over the region's box, one cell
wider on each side, zoomed in the same way while the mass it finds fills less than half of
its box, so that a narrow mode far from a broad one is resolved on its own scale. A mode
narrower than about a sixteenth of a coarse cell can fall between the coarse points and
be missed; ``vaeflow eval`` reports the importance-weighted estimate beside, which would
then exceed the quadrature. Two things can be wrong with the result, and both are
reported in ``error``:

- the discretization: the cells of the last grid that hold all but 1e-9 of the mass
  (and their neighbours) are each cut into up to 8 x 8 cells, so that a mode narrower
  than a cell, or a narrow mode beside a broad one, is resolved; the error is estimated by
  the same refined sum over every other sub-cell (twice the width), whose difference to
  the full sum is far larger than the full sum's error whenever the cells resolve the
  posterior (the log-densities are the model's own, float32 for most, summed in float64:
  their rounding, about 1e-4 nats for a 784-pixel image, is not in ``error``);
- the mass left out: each earlier grid's estimate of the mass outside the next one's
  boxes, and the coarse grid's of the mass outside every region.

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
            discretization estimate plus the mass left outside the grids.
        lo, hi: each example's box around its mass ``[N, D]`` (every region of the
            posterior holding more than 1e-6 of it).
        regions: how many separate regions of mass each example's posterior has ``[N]``.
        points: cells per axis of each region's grid.
        half_width: :math:`L`, the largest coarse box's half width.
    """

    log_px: Tensor
    error: Tensor
    lo: Tensor
    hi: Tensor
    regions: Tensor
    points: int
    half_width: float


def grid_axis(lo: float, hi: float, n: int) -> Tensor:
    r"""The centres of ``n`` equal cells of ``[lo, hi]``, float64."""
    return lo + (torch.arange(n, dtype=torch.float64) + 0.5) * (hi - lo) / n


def grid_points(axes: list[Tensor]) -> Tensor:
    r"""Every combination of the axes' centres, ``[prod n, D]`` (the first axis slowest)."""
    return torch.cartesian_prod(*axes).reshape(-1, len(axes))


def _log_joint_shared(model: VAE, z: Tensor, x: Tensor, chunk: int) -> Tensor:
    r"""``log p(x, z)`` ``[P, B]`` of points ``z [P, D]`` shared by all examples ``x [B, ...]``:
    each point is decoded once, and its likelihood of every example is one matrix product
    where the likelihood has ``log_prob_pairs``."""
    pairs = getattr(model.likelihood, "log_prob_pairs", None)
    chunk = max(chunk, 4096) if pairs is not None else chunk  # no [P, B, pixels] tensor then
    out = []
    for start in range(0, z.shape[0], chunk):
        zc = z[start : start + chunk]
        params = model.decoder(zc)
        log_px = pairs(params, x) if pairs is not None else model.likelihood.log_prob(params.unsqueeze(-2), x)
        out.append(log_px + model.prior.log_prob(zc).unsqueeze(-1))
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
        points: cells per axis of each region's grids (default 64 for D = 2, 1024 for D = 1).
        coarse: coarse cells per axis over ``[-L, L]`` (default 256 for D = 2, 4096 for D = 1;
            shared by the examples of a batch, so a fine coarse grid is cheap).
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
        >>> quad = quadrature(model, torch.ones(2, 1, 3, 3))
        >>> quad.log_px.shape, bool((quad.error < 1e-3).all()), quad.regions.tolist()
        (torch.Size([2]), True, [1, 1])
    """
    d = model.latent_dim
    if d > MAX_QUADRATURE_DIM:
        raise ConfigError(f"quadrature needs a latent space of 1 or 2 dimensions, this model has {d}")
    points = int(points or (64 if d == 2 else 1024))
    coarse = int(coarse or (256 if d == 2 else 4096))
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
    log_px, error, lo, hi, regions, widths = (torch.cat(parts) for parts in zip(*results))
    return Quadrature(log_px, error, lo, hi, regions, points, float(widths.max()) if n else half_width)


def _kept_box(kept: Tensor, lo: Tensor, hi: Tensor, n: int) -> tuple[Tensor, Tensor]:
    r"""The box of the ``kept`` cells ``[B, n, ...]`` of grids on ``[lo, hi]`` ``[B, D]`` with
    ``n`` cells per axis, one cell wider on each side (within the grid)."""
    b, d = lo.shape
    cell = (hi - lo) / n
    new_lo, new_hi = lo.clone(), hi.clone()
    index = torch.arange(n)[None].expand(b, n)
    for i in range(d):
        along = kept.movedim(1 + i, 1).reshape(b, n, -1).any(2)  # [B, n]
        first = torch.where(along, index, n).min(1).values
        last = torch.where(along, index, -1).max(1).values
        new_lo[:, i] = lo[:, i] + (first - 1).clamp(min=0) * cell[:, i]
        new_hi[:, i] = lo[:, i] + (last + 2).clamp(max=n) * cell[:, i]
    return new_lo, new_hi


def _centres(lo: Tensor, hi: Tensor, n: int) -> Tensor:
    r"""The cell centres of each example's grid, ``[n^D, B, D]`` (the first axis slowest)."""
    b, d = lo.shape
    frac = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    axes = lo[None] + frac[:, None, None] * (hi - lo)[None]  # [n, B, D]
    if d == 1:
        return axes
    return torch.stack(
        [axes[:, None, :, 0].expand(n, n, b), axes[None, :, :, 1].expand(n, n, b)], -1
    ).reshape(n * n, b, 2)


def _outside(log_joint: Tensor, z: Tensor, log_cell: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    r"""The log-mass ``[B]`` of the cells (centres ``z [P, B, D]``) outside each example's
    box ``[lo, hi]``."""
    inside = ((z >= lo[None]) & (z <= hi[None])).all(-1)  # [P, B]
    return torch.logsumexp(torch.where(inside, -math.inf, log_joint), 0) + log_cell


#: grid passes after the coarse one, each on the box of the last one's mass (fewer when it stops shrinking)
ZOOMS = 4


def _quadrature_block(
    model: VAE, x: Tensor, d: int, points: int, coarse: int, half_width: float, threshold: float, chunk: int
) -> tuple[Tensor, ...]:
    from scipy import ndimage

    dtype, device = x.dtype, x.device
    b = x.shape[0]
    # 1. the coarse grid, shared by the examples (each point decoded once): where is the mass?
    width = half_width
    for _ in range(4):
        zc = grid_points([grid_axis(-width, width, coarse)] * d)
        lj_c = _log_joint_shared(model, zc.to(device, dtype), x, chunk).double().cpu()  # [Pc, B]
        kept = (lj_c >= lj_c.max(0).values - threshold).T.reshape(b, *[coarse] * d)
        edges = [kept.select(1 + i, 0) | kept.select(1 + i, coarse - 1) for i in range(d)]
        if not any(bool(e.any()) for e in edges):
            break
        width *= 2
    coarse_log_cell = d * math.log(2 * width / coarse)
    # 2. each separate region of mass gets grids of its own, zoomed onto it and refined
    out = torch.empty(4, b, dtype=torch.float64)
    lo_all, hi_all = torch.empty(b, d, dtype=torch.float64), torch.empty(b, d, dtype=torch.float64)
    full = torch.tensor([[-width] * d], dtype=torch.float64)
    for j in range(b):
        labels, count = ndimage.label(kept[j].numpy(), structure=ndimage.generate_binary_structure(d, d))
        labels = torch.from_numpy(labels)
        boxes = _merge(
            [_kept_box((labels == region)[None], full, -full, coarse) for region in range(1, count + 1)]
        )
        inside = torch.zeros(lj_c.shape[0], dtype=torch.bool)
        for lo, hi in boxes:
            inside |= ((zc >= lo) & (zc <= hi)).all(-1)
        masses, errors = [], []
        for lo, hi in boxes:
            mass, error = _region(model, x[j : j + 1], lo, hi, points, threshold, chunk)
            masses.append(mass)
            errors.append(error)
        region_mass = torch.stack(masses)
        outside = torch.logsumexp(torch.where(inside, -math.inf, lj_c[:, j]), 0) + coarse_log_cell
        total = torch.logaddexp(torch.logsumexp(region_mass, 0), outside)
        shares = (region_mass - total).exp()
        error = float((torch.tensor(errors, dtype=torch.float64) * shares).sum()) + float(
            (outside - total).exp()
        )
        heavy = [box for box, share in zip(boxes, shares) if share > 1e-6] or boxes
        lo_all[j] = torch.stack([box[0][0] for box in heavy]).min(0).values
        hi_all[j] = torch.stack([box[1][0] for box in heavy]).max(0).values
        out[:, j] = torch.tensor([float(total), error, len(heavy), width], dtype=torch.float64)
    total, error, heavy, widths = out
    return total, error, lo_all, hi_all, heavy.long(), widths


def _merge(boxes: list[tuple[Tensor, Tensor]]) -> list[tuple[Tensor, Tensor]]:
    r"""Boxes ``(lo, hi)`` with the overlapping ones replaced by their bounding box, until
    none overlap (so that no mass is integrated twice)."""
    boxes = list(boxes)
    merged = True
    while merged:
        merged = False
        for a in range(len(boxes)):
            for b in range(a + 1, len(boxes)):
                (lo_a, hi_a), (lo_b, hi_b) = boxes[a], boxes[b]
                if bool(((lo_a < hi_b) & (lo_b < hi_a)).all()):
                    boxes[a] = (torch.minimum(lo_a, lo_b), torch.maximum(hi_a, hi_b))
                    del boxes[b]
                    merged = True
                    break
            if merged:
                break
    return boxes


def _region(
    model: VAE, x: Tensor, lo: Tensor, hi: Tensor, points: int, threshold: float, chunk: int
) -> tuple[Tensor, float]:
    r"""The log-mass of one example's region of mass ``[lo, hi]`` ``[1, D]`` and its error
    estimate (nats): grids zoomed while the mass fills less than half of theirs, the last one
    refined (:func:`_refine`), and the mass between successive boxes from the earlier grid."""
    d = lo.shape[1]
    outside = torch.tensor([-math.inf], dtype=torch.float64)
    for zoom in range(ZOOMS):
        z = _centres(lo, hi, points)
        param = next(model.parameters())
        lj = _log_joint_each(model, z.to(param.device, param.dtype), x, chunk).double().cpu()  # [P, 1]
        grid = lj.T.reshape(1, *[points] * d)
        kept = grid >= grid.max() - threshold
        new_lo, new_hi = _kept_box(kept, lo, hi, points)
        if zoom == ZOOMS - 1 or not ((new_hi - new_lo) < 0.5 * (hi - lo)).any():
            break
        log_cell = torch.log(hi - lo).sum(1) - d * math.log(points)
        outside = torch.logaddexp(outside, _outside(lj, z, log_cell, new_lo, new_hi))
        lo, hi = new_lo, new_hi
    log_mass, error = _refine(model, x, lj, lo, hi, points, chunk)
    total = torch.logaddexp(log_mass, outside)
    return total[0], float(error[0]) + float((total - log_mass)[0])


#: the share of a grid's mass that its refined cells must hold (the rest keeps its coarse sum)
REFINED_MASS = 1 - 1e-9
#: nats of discretization error estimate below which a grid is not refined
TOLERANCE = 1e-3


def _refine(
    model: VAE, x: Tensor, lj: Tensor, lo: Tensor, hi: Tensor, n: int, chunk: int
) -> tuple[Tensor, Tensor]:
    r"""Each example's integral over its grid ``[lo, hi]`` (``n`` cells per axis, ``lj [n^D, B]``
    at the centres); where the grid's own error estimate exceeds :data:`TOLERANCE`, with the
    cells that hold the mass refined: the fewest cells holding
    :data:`REFINED_MASS` of it, and their neighbours, are each cut into ``r^D`` cells (``r``
    = 8, or 4 or 2 when they are many), so that a posterior narrower than a cell, or a
    narrow mode in a box made wide by another, is resolved. Returns ``(log p(x), error)``,
    the error by the same refined sum on every other sub-cell."""
    b, d = lo.shape
    cell = (hi - lo) / n  # [B, D]
    log_cells = torch.log(cell).sum(1)
    grid = lj.T.reshape(b, *[n] * d)
    log_px = torch.logsumexp(lj, 0) + log_cells
    half = torch.logsumexp(grid[(slice(None), *[slice(None, None, 2)] * d)].reshape(b, -1), 1)
    error = (log_px - (half + log_cells + d * math.log(2))).abs()
    for j in (error > TOLERANCE).nonzero()[:, 0].tolist():  # the grid alone does not resolve these
        log_cell = float(log_cells[j])
        masses = lj[:, j] + log_cell
        order = masses.argsort(descending=True)
        share = torch.cumsum((masses[order] - torch.logsumexp(masses, 0)).exp(), 0)
        count = int(torch.searchsorted(share, torch.tensor(REFINED_MASS, dtype=share.dtype))) + 1
        chosen = torch.zeros(n**d, dtype=torch.bool)
        chosen[order[:count]] = True
        chosen = _dilate(chosen.reshape(*[n] * d)).reshape(-1)
        index = chosen.nonzero()[:, 0]
        r = 8 if len(index) * 64 <= n**d else 4 if len(index) * 16 <= n**d else 2
        cells = torch.stack(torch.unravel_index(index, (n,) * d), -1).double()  # [K, D] cell coordinates
        sub = (torch.cartesian_prod(*[torch.arange(r, dtype=torch.float64)] * d).reshape(-1, d) + 0.5) / r
        z = lo[j] + (cells[:, None, :] + sub[None]) * cell[j]  # [K, r^D, D]
        param = next(model.parameters())
        values = _log_joint_each(
            model, z.reshape(-1, 1, d).to(param.device, param.dtype), x[j : j + 1], chunk
        )
        values = values.double().cpu().reshape(len(index), *[r] * d) + log_cell - d * math.log(r)
        refined = torch.logsumexp(values.reshape(-1), 0)
        half = torch.logsumexp(
            values[(slice(None), *[slice(None, None, 2)] * d)].reshape(-1), 0
        ) + d * math.log(2)
        rest = torch.logsumexp(torch.where(chosen, -math.inf, masses), 0)
        log_px[j] = torch.logaddexp(refined, rest)
        error[j] = (refined - half).abs() * (refined - log_px[j]).exp() + (rest - log_px[j]).exp()
    return log_px, error


def _dilate(mask: Tensor) -> Tensor:
    r"""``mask`` with every neighbour (diagonals included) of a true cell set too."""
    out = mask.clone()
    for axis in range(mask.dim()):
        for shift in (1, -1):
            out |= torch.roll(mask, shift, axis) & _not_wrapped(mask.shape, axis, shift)
    if mask.dim() == 2:  # the diagonal neighbours
        for s0 in (1, -1):
            for s1 in (1, -1):
                rolled = torch.roll(mask, (s0, s1), (0, 1))
                out |= rolled & _not_wrapped(mask.shape, 0, s0) & _not_wrapped(mask.shape, 1, s1)
    return out


def _not_wrapped(shape: torch.Size, axis: int, shift: int) -> Tensor:
    r"""False on the slice that ``torch.roll`` by ``shift`` along ``axis`` wrapped around."""
    keep = torch.ones(shape, dtype=torch.bool)
    keep.select(axis, 0 if shift > 0 else shape[axis] - 1).fill_(False)
    return keep
