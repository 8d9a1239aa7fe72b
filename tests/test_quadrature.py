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
    quad = quadrature(lg.model(), x)
    exact = lg.log_px(x)
    assert torch.allclose(quad.log_px, exact, atol=1e-8, rtol=0), quad.log_px - exact
    assert (quad.error < 1e-6).all()
    # the posterior on the grid is N(gain (x - b), cov), exactly
    for j in range(x.shape[0]):
        z = grid_points(quad.axes(j))
        mean = lg.gain @ (x[j].flatten() - lg.bias)
        exact_post = torch.distributions.MultivariateNormal(mean, lg.cov).log_prob(z)
        got = quad.log_posterior(j).reshape(-1)
        keep = exact_post > exact_post.max() - 20
        assert torch.allclose(got[keep], exact_post[keep], atol=1e-7)


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
    post = quad.log_posterior(0).exp() * quad.cell[0, 0]
    axis = quad.axes(0)[0]
    assert abs(post[axis > 0].sum().item() - 0.5) < 1e-6
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
