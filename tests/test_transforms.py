"""The univariate transforms (issue "Neural spline flows"): the rational-quadratic spline's
inverse in its tails and at its bin edges, its derivative, its bounds and its identity
start, in float64 and float32; the affine transforms undo themselves."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from vaeflow.errors import ConfigError
from vaeflow.posteriors import POSTERIORS
from vaeflow.posteriors.transforms import Affine, GatedAffine, RationalQuadraticSpline


def shared_params(transform, n: int, dtype: torch.dtype, scale: float, seed: int = 0) -> list[Tensor]:
    """One random spline, the same for all ``n`` points."""
    g = torch.Generator().manual_seed(seed)
    return [scale * torch.randn((), generator=g, dtype=dtype).expand(n) for _ in range(transform.n_params)]


def probe_points(spline: RationalQuadraticSpline, p: list[Tensor], dtype: torch.dtype) -> Tensor:
    """A grid across and past [-B, B], every knot, points a hair either side of each knot
    and of +-B, and far tails."""
    bound = spline.tail_bound
    xs = spline._knots([q[:1] for q in p])[0][:, 0]
    hair = 1e-9 if dtype == torch.float64 else 1e-5
    far = torch.tensor([1e6, -1e6, 1e3, -1e3], dtype=dtype)
    grid = torch.linspace(-2 * bound, 2 * bound, 801, dtype=dtype)
    return torch.cat([grid, xs, xs + hair, xs - hair, far])


@pytest.mark.parametrize("bins", [2, 8, 32])
@pytest.mark.parametrize("scale", [0.5, 3.0])
def test_spline_inverse_undoes_forward_everywhere_in_float64(bins: int, scale: float):
    """inverse(forward(x)) = x to 1e-10 on both sides of every knot and of +-B and far in the
    tails (the identity there), and the log-derivatives of both directions agree with each
    other and with autograd."""
    spline = RationalQuadraticSpline(bins=bins, tail_bound=2.5)
    p0 = shared_params(spline, 1, torch.float64, scale)
    x = probe_points(spline, p0, torch.float64).requires_grad_(True)
    p = [q[:1].expand_as(x) for q in p0]
    y, log_det = spline.forward(x, p)
    back, log_det_back = spline.inverse(y.detach(), p)
    assert (back - x).abs().max() < 1e-10
    assert (log_det_back - log_det).abs().max() < 1e-8
    (grad,) = torch.autograd.grad(y.sum(), x)
    assert (grad.log() - log_det).abs().max() < 1e-9
    outside = x.abs() > 2.5
    assert torch.equal(y[outside], x[outside]) and (log_det[outside] == 0).all()
    order = torch.argsort(x.detach())
    assert (y.detach()[order].diff() >= 0).all()  # monotonic


def test_spline_in_float32_is_accurate_where_it_is_well_conditioned():
    """In float32 the round trip in y is at rounding level; in x it is at rounding level
    divided by the slope (a flat bin magnifies y's rounding, as it must)."""
    spline = RationalQuadraticSpline(bins=8, tail_bound=3.0)
    p0 = shared_params(spline, 1, torch.float32, 2.0)
    x = probe_points(spline, p0, torch.float32)
    p = [q[:1].expand_as(x) for q in p0]
    y, log_det = spline.forward(x, p)
    back, _ = spline.inverse(y, p)
    again, _ = spline.forward(back, p)
    assert (again - y).abs().max() < 1e-5
    assert ((back - x).abs() * log_det.exp()).max() < 1e-5
    assert torch.isfinite(log_det).all()


def test_spline_parameters_are_bounded_whatever_the_network_says():
    """Raw values of +-1e4 still give bins of at least min_bin and derivatives of at least
    min_derivative: a strictly increasing, finite map with a finite inverse."""
    spline = RationalQuadraticSpline(bins=6, tail_bound=3.0)
    g = torch.Generator().manual_seed(0)
    x = torch.linspace(-3.5, 3.5, 301, dtype=torch.float64)
    p = [1e4 * torch.randn(x.shape, generator=g, dtype=torch.float64).sign() for _ in range(spline.n_params)]
    xs, ys, ds, widths, heights = spline._knots(p)
    assert (widths >= spline.min_bin * (1 - 1e-12)).all() and (heights >= spline.min_bin * (1 - 1e-12)).all()
    assert (ds >= spline.min_derivative).all()
    assert (xs.diff(dim=-2) > 0).all() and (ys.diff(dim=-2) > 0).all()  # knots on the axis before x's
    y, log_det = spline.forward(x, p)
    back, _ = spline.inverse(y, p)
    assert torch.isfinite(y).all() and torch.isfinite(log_det).all()
    assert ((back - x).abs() * log_det.exp()).max() < 1e-12  # in y: the flattest bins magnify x's error


def test_zero_parameters_are_the_identity():
    spline = RationalQuadraticSpline(bins=5, tail_bound=2.0)
    x = torch.linspace(-4, 4, 101, dtype=torch.float64)
    y, log_det = spline.forward(x, [torch.zeros_like(x)] * spline.n_params)
    assert (y - x).abs().max() < 1e-14 and log_det.abs().max() < 1e-14


@pytest.mark.parametrize("name", ["nsf_ar", "nsf_maf", "nsf_coupling"])
def test_spline_posteriors_start_at_their_gaussian_base(name: str):
    """At initialization every step is the identity: q(z|x) is the diagonal Gaussian base,
    and the output layer that makes it so still receives gradients."""
    torch.manual_seed(0)
    q = POSTERIORS.build(
        {"name": name, "depth": 3, "hidden_dims": [16], "bins": 4}, latent_dim=4, feature_dim=3
    )
    q = q.double()
    h, eps = torch.randn(5, 3, dtype=torch.float64), torch.randn(2, 5, 4, dtype=torch.float64)
    z, log_q = q.reparameterize(h, eps)
    z0, log_q0 = q.base.reparameterize(h, eps)
    assert (z - z0).abs().max() < 1e-12 and (log_q - log_q0).abs().max() < 1e-12
    log_q.sum().backward()
    outputs = [[m for m in step.modules() if isinstance(m, nn.Linear)][-1].weight for step in q.steps]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in outputs)


@pytest.mark.parametrize(
    "transform", [Affine(6.0), Affine(), GatedAffine()], ids=["affine", "affine-free", "gated"]
)
def test_affine_transforms_undo_themselves(transform):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(100, generator=g, dtype=torch.float64)
    p = [torch.randn(100, generator=g, dtype=torch.float64) for _ in range(transform.n_params)]
    y, log_det = transform.forward(x, p)
    back, log_det_back = transform.inverse(y, p)
    assert (back - x).abs().max() < 1e-12 and torch.equal(log_det, log_det_back)
    assert torch.equal(transform.log_abs_det(x, p), log_det)


def test_spline_options_are_checked():
    with pytest.raises(ConfigError, match="posterior.bins=1: a spline needs at least 2 bins"):
        RationalQuadraticSpline(bins=1)
    with pytest.raises(ConfigError, match="posterior.tail_bound=0"):
        RationalQuadraticSpline(tail_bound=0.0)


def test_an_iaf_checkpoint_from_before_the_univariate_layer_loads():
    """IAF held its MADE as ``made``; it is now ``transform.made``, and old state dicts load."""
    q = POSTERIORS.build({"name": "iaf", "depth": 2, "hidden_dims": [8]}, latent_dim=3, feature_dim=2)
    state = {k.replace("transform.made.", "made."): v + 1 for k, v in q.state_dict().items()}
    q.load_state_dict(state)
    assert all(
        torch.equal(v, state[k.replace("transform.made.", "made.")]) for k, v in q.state_dict().items()
    )
