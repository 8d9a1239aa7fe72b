"""Quadrature against closed forms and brute force: log p(x) and the true posterior of 1- and
2-D latent models, on grids that find the mass wherever it is."""

from __future__ import annotations

import math

import pytest
import torch
from model_helpers import FlattenEncoder, GaussianLikelihood, LinearGaussian
from torch import Tensor, nn

from vaeflow.errors import ConfigError
from vaeflow.evaluate import importance_weighted
from vaeflow.evaluate.quadrature import grid_points, quadrature
from vaeflow.model import VAE
from vaeflow.posteriors.mean_field import MeanField
from vaeflow.priors import StandardNormal


@pytest.mark.parametrize("latent", [1, 2])
def test_log_px_and_the_posterior_of_a_linear_gaussian_model(latent):
    lg = LinearGaussian(dims=6, latent=latent, sigma=0.3, orthogonal=False, seed=2)
    x = lg.sample(5, seed=3)
    model = lg.model()
    quad = quadrature(model, x)
    exact = lg.log_px(x)
    assert torch.allclose(quad.log_px, exact, atol=1e-8, rtol=0), quad.log_px - exact
    assert (quad.error < 1e-6).all() and (quad.regions == 1).all()
    # log p(x, z) - log p(x) is the posterior N(gain (x - b), cov), across the box of its mass
    for j in range(x.shape[0]):
        axes = [
            torch.linspace(float(a), float(b), 40, dtype=torch.float64)
            for a, b in zip(quad.lo[j], quad.hi[j])
        ]
        z = grid_points(axes)
        with torch.no_grad():
            log_px_z, log_pz = model.log_joint(z[:, None, :], x[j : j + 1])
        got = (log_px_z + log_pz)[:, 0] - quad.log_px[j]
        mean = lg.gain @ (x[j].flatten() - lg.bias)
        exact_post = torch.distributions.MultivariateNormal(mean, lg.cov).log_prob(z)
        assert exact_post.max() - exact_post.min() > 20  # the box holds the tails as well
        assert torch.allclose(got, exact_post, atol=1e-7)


def test_the_fine_grid_goes_where_the_mass_is():
    # a narrow posterior far from the origin, in the prior's tail
    lg = LinearGaussian(dims=6, latent=2, sigma=0.05, orthogonal=False, seed=5)
    x = (lg.bias + lg.weight @ torch.tensor([4.0, -3.0], dtype=torch.float64)).reshape(1, 1, 1, 6)
    quad = quadrature(lg.model(), x, points=64)
    assert torch.allclose(quad.log_px, lg.log_px(x), atol=1e-8, rtol=0)
    width = (quad.hi - quad.lo)[0]
    assert (width < 2.0).all()  # not the coarse box's 12
    centre = (quad.hi + quad.lo)[0] / 2
    assert torch.allclose(centre, lg.gain @ (x.flatten() - lg.bias), atol=0.3)


class SquareDecoder(nn.Module):
    r"""``z -> w z^2 + b``: the posterior of ``x`` near ``w c^2 + b`` has two modes, ``±c``."""

    def __init__(self, w: Tensor, b: Tensor) -> None:
        super().__init__()
        self.w, self.b = nn.Parameter(w), nn.Parameter(b)

    def forward(self, z: Tensor) -> Tensor:
        return z.square() @ self.w.T + self.b


def bimodal_model(mean: float) -> VAE:
    r"""A 1-D latent model with a two-mode posterior, and a mean-field posterior on the mode at
    ``mean`` (its width roughly the mode's)."""
    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(4, 1, generator=g, dtype=torch.float64), torch.zeros(4, dtype=torch.float64)
    posterior = MeanField(1, 4).double()
    with torch.no_grad():
        posterior.base.linear.weight.zero_()
        posterior.base.linear.bias.copy_(torch.tensor([mean, math.log(0.08)], dtype=torch.float64))
    return VAE(
        FlattenEncoder(4),
        posterior,
        StandardNormal(1),
        SquareDecoder(w, b),
        GaussianLikelihood(0.2),
        (1, 1, 4),
    )


def test_a_two_mode_posterior_by_quadrature_and_what_iw_misses():
    model = bimodal_model(mean=1.2)
    x = (model.decoder.w[:, 0] * 1.2**2).reshape(1, 1, 1, 4).detach()
    quad = quadrature(model, x)
    # brute force: the trapezoid rule on 400,001 points of [-8, 8]
    z = torch.linspace(-8, 8, 400_001, dtype=torch.float64)[:, None]
    with torch.no_grad():
        log_px_z, log_pz = model.log_joint(z[:, None, :], x)
    brute = torch.logsumexp((log_px_z + log_pz)[:, 0], 0) + math.log(16 / 400_000)
    assert abs(quad.log_px.item() - brute.item()) < 1e-7
    # both modes carry half the mass; a proposal on one of them misses half of p(x) with a
    # tiny Monte Carlo standard error: the standard error cannot see missing modes
    assert quad.regions.tolist() == [2]
    assert float(quad.lo[0, 0]) < -1.2 and float(quad.hi[0, 0]) > 1.2
    est = importance_weighted(model, x, 5000)
    assert abs(est.log_px.item() - (quad.log_px.item() - math.log(2))) < 0.05
    assert est.mc_se.item() < 0.05


def test_more_than_two_latents_is_a_config_error():
    lg = LinearGaussian(dims=6, latent=3)
    with pytest.raises(
        ConfigError, match="quadrature needs a latent space of 1 or 2 dimensions, this model has 3"
    ):
        quadrature(lg.model(), lg.sample(1))


def test_inference_gaps_are_never_negative_on_a_two_mode_posterior():
    # the amortized posterior and both local ones sit on one of two equal modes: choosing the
    # IW estimate with the smallest standard error took log p(x) log 2 too low and made the
    # approximation gap negative; the largest estimate, or quadrature, cannot
    from vaeflow.evaluate import inference_gaps

    model = bimodal_model(mean=1.2)
    x = (model.decoder.w[:, 0] * 1.2**2).reshape(1, 1, 1, 4).detach().expand(3, 1, 1, 4).clone()
    kwargs = {"k": 2000, "steps": 30, "lr": 0.01, "samples": 8, "flow_depth": 1, "seed": 0}
    by_iw = inference_gaps(model, x, **kwargs)
    assert min(by_iw["per_example"]["approximation"]) >= 0
    assert by_iw["log_px_rule"] == "the largest of the IW estimates"
    exact = quadrature(model, x).log_px
    by_quadrature = inference_gaps(model, x, log_px=exact, **kwargs)
    assert by_quadrature["log_px_rule"] == "quadrature"
    # a one-mode posterior is at least log 2 from a two-mode one of equal halves
    assert by_quadrature["rows"]["approximation"]["mean"] > math.log(2) - 0.05
    assert by_quadrature["best_iw_below_exact"] > math.log(2) - 0.05


class KinkDecoder(nn.Module):
    r"""``z -> w f(z) + b`` with ``f(z) = -z`` for ``z < 0`` and ``40 z`` for ``z > 0``: the
    posterior of ``x = w + b`` has a mode at -1 and one 40 times narrower at 1/40."""

    def __init__(self, w: Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, z: Tensor) -> Tensor:
        return torch.where(z < 0, -z, 40 * z) @ self.w.T


@pytest.mark.parametrize("points", [16, 64])
def test_a_narrow_mode_beside_a_broad_one_is_refined(points):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(4, 1, generator=g, dtype=torch.float64)
    model = VAE(FlattenEncoder(4), MeanField(1, 4).double(), StandardNormal(1), KinkDecoder(w),
                GaussianLikelihood(0.05), (1, 1, 4))  # fmt: skip
    x = w[:, 0].reshape(1, 1, 1, 4)
    quad = quadrature(model, x, points=points)
    z = torch.linspace(-8, 8, 1_600_001, dtype=torch.float64)[:, None]
    with torch.no_grad():
        log_px_z, log_pz = model.log_joint(z[:, None, :], x)
    brute = torch.logsumexp((log_px_z + log_pz)[:, 0], 0) + math.log(16 / 1_600_000)
    assert abs(quad.log_px.item() - brute.item()) < 1e-5
    assert quad.error.item() < 1e-3
