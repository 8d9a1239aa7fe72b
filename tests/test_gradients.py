"""The gradient estimators of the objectives (issue "Objectives and gradient estimators"):
STL and DReG against the reparameterization gradient of the same bound, in float64."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from vaeflow.errors import ConfigError
from vaeflow.likelihoods import Bernoulli
from vaeflow.model import VAE
from vaeflow.objectives import ElboObjective, IwaeObjective, effective_sample_size
from vaeflow.posteriors import POSTERIORS
from vaeflow.priors import StandardNormal

FAMILIES = {
    "mean_field": {"name": "mean_field"},
    "full_cov": {"name": "full_cov"},
    "iaf": {"name": "iaf", "depth": 2, "hidden_dims": [8]},  # log q of a given z through the inverse
    "realnvp": {"name": "realnvp", "depth": 2, "hidden_dims": [8]},
}


def small_vae(family: dict, latent: int = 2, pixels: int = 4, seed: int = 0) -> VAE:
    """A random float64 VAE on ``pixels`` binary pixels: flattening encoder, an MLP decoder."""
    torch.manual_seed(seed)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(pixels, 6), nn.Tanh())
    encoder.feature_dim = 6
    posterior = POSTERIORS.build(family, latent_dim=latent, feature_dim=6)
    decoder = nn.Sequential(nn.Linear(latent, 6), nn.Tanh(), nn.Linear(6, pixels))
    model = VAE(encoder, posterior, StandardNormal(latent), decoder, Bernoulli(), (1, 1, pixels)).double()
    with torch.no_grad():  # away from the initialization (flows start at the identity)
        for param in model.parameters():
            param.add_(0.3 * torch.randn_like(param))
    return model


def inference_params(model: VAE) -> list[nn.Parameter]:
    return [*model.encoder.parameters(), *model.posterior.parameters()]


def gradients(model: VAE, objective, x: Tensor, eps: Tensor, beta: float = 1.0) -> tuple[Tensor, Tensor]:
    """The (inference network, decoder) gradients of the objective's loss, flattened."""
    model.zero_grad(set_to_none=True)
    loss, _ = objective(model, x, eps, torch.tensor(beta, dtype=torch.float64))
    loss.backward()
    flat = lambda params: torch.cat([p.grad.reshape(-1) for p in params])  # noqa: E731
    return flat(inference_params(model)), flat(model.decoder.parameters())


def mean_and_se(model: VAE, objective, x: Tensor, samples: int, chunks: int, draws: int, seed: int,
                beta: float = 1.0) -> tuple[Tensor, Tensor]:  # fmt: skip
    """The inference network's gradient averaged over ``chunks * draws`` independent draws
    (``x`` repeated ``draws`` times in each batch), with its standard error from the chunks."""
    generator = torch.Generator().manual_seed(seed)
    batch = x.expand(draws, *x.shape[1:])
    means = []
    for _ in range(chunks):
        eps = torch.randn(samples, draws, model.latent_dim, generator=generator, dtype=torch.float64)
        means.append(gradients(model, objective, batch, eps, beta)[0])
    stacked = torch.stack(means)
    return stacked.mean(0), stacked.std(0) / math.sqrt(chunks)


X = torch.tensor([[[[1.0, 0.0, 1.0, 1.0]]]], dtype=torch.float64)


def _z_scores(a: tuple[Tensor, Tensor], b: tuple[Tensor, Tensor]) -> Tensor:
    """|difference| / its standard error (components that are exactly zero in both, such as
    the weights of a pixel that is 0, are 0)."""
    return (a[0] - b[0]).abs() / (a[1].square() + b[1].square()).sqrt().clamp_min(1e-12)


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize(
    ("objective", "options", "beta"),
    [("elbo", {"gradient": "stl"}, 1.0), ("elbo", {"gradient": "stl"}, 0.5),
     ("iwae", {"k": 4, "gradient": "dreg"}, 1.0), ("iwae", {"k": 4, "gradient": "dreg"}, 0.5)],
    ids=["elbo-stl", "elbo-stl-warmup", "iwae-dreg", "iwae-dreg-warmup"],
)  # fmt: skip
def test_stl_and_dreg_are_unbiased_estimates_of_the_reparameterization_gradient(
    family, objective, options, beta
):
    """Averaged over 12,000 draws, every component of the inference network's gradient agrees
    with the reparameterization gradient of the same bound within 4.5 standard errors (the
    warm-up's beta < 1 included: DReG's factor is then 1 - beta + beta w)."""
    model = small_vae(FAMILIES[family])
    cls = ElboObjective if objective == "elbo" else IwaeObjective
    estimator = cls(model, **options)
    reparam = cls(model, **{**options, "gradient": "reparam"})
    a = mean_and_se(model, estimator, X, estimator.samples, chunks=30, draws=400, seed=1, beta=beta)
    b = mean_and_se(model, reparam, X, reparam.samples, chunks=30, draws=400, seed=2, beta=beta)
    assert (a[0].abs() > 10 * a[1]).any()  # the gradient is measured, not noise
    assert _z_scores(a, b).max() < 4.5


def test_stl_for_the_iw_bound_is_biased_and_the_comparison_sees_it():
    """STL on the IW bound with k > 1 drops a score term weighted by the normalized weights,
    which is not zero in expectation (Tucker et al., 2019): the same comparison as above
    tells it from the reparameterization gradient, so it has the power to catch a wrong
    estimator."""
    model = small_vae(FAMILIES["mean_field"])
    stl, reparam = IwaeObjective(model, k=4, gradient="stl"), IwaeObjective(model, k=4)
    a = mean_and_se(model, stl, X, 4, chunks=30, draws=400, seed=1)
    b = mean_and_se(model, reparam, X, 4, chunks=30, draws=400, seed=2)
    assert _z_scores(a, b).max() > 6


@pytest.mark.parametrize("family", ["mean_field", "iaf"])
def test_dreg_leaves_the_decoders_gradient_the_iwae_one(family):
    """With the same noise, DReG's decoder gradient is the IWAE reparameterization gradient
    exactly, and its loss has the IW bound's value."""
    model = small_vae(FAMILIES[family])
    eps = torch.randn(5, 3, model.latent_dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = X.expand(3, -1, -1, -1)
    dreg, reparam = IwaeObjective(model, k=5, gradient="dreg"), IwaeObjective(model, k=5)
    beta = torch.tensor(1.0, dtype=torch.float64)
    assert torch.allclose(dreg(model, x, eps, beta)[0], reparam(model, x, eps, beta)[0], atol=1e-12)
    _, dec_dreg = gradients(model, dreg, x, eps)
    inf_reparam, dec_reparam = gradients(model, reparam, x, eps)
    assert torch.allclose(dec_dreg, dec_reparam, atol=1e-12)
    assert not torch.allclose(gradients(model, dreg, x, eps)[0], inf_reparam)


class FixedGaussian(nn.Module):
    """``p(x|z) = N(x; out, sigma^2 I)`` with a fixed sigma."""

    def __init__(self, sigma: float) -> None:
        super().__init__()
        self.sigma = sigma

    def log_prob(self, out: Tensor, x: Tensor) -> Tensor:
        return torch.distributions.Normal(out, self.sigma).log_prob(x.flatten(1)).sum(-1)

    def mean(self, out: Tensor) -> Tensor:
        return out


def linear_gaussian_at_its_posterior() -> VAE:
    """``p(z) = N(0, I)``, ``p(x|z) = N(Wz + b, sigma^2 I)`` with orthogonal columns of W, so
    that the true posterior ``N(S W^T (x - b) / sigma^2, S)``, ``S = (I + W^T W / sigma^2)^-1``,
    is diagonal; the mean-field encoder is set to it exactly."""
    w = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]], dtype=torch.float64)
    b = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64)
    sigma = 0.5
    cov = torch.linalg.inv(torch.eye(2, dtype=torch.float64) + w.T @ w / sigma**2)
    assert torch.equal(cov, torch.diag(cov.diagonal()))
    encoder = nn.Flatten()
    encoder.feature_dim = 3
    posterior = POSTERIORS.build({"name": "mean_field"}, latent_dim=2, feature_dim=3).double()
    decoder = nn.Linear(2, 3).double()
    with torch.no_grad():
        gain = cov @ w.T / sigma**2  # mu = gain (x - b)
        posterior.base.linear.weight.copy_(torch.cat([gain, torch.zeros(2, 3, dtype=torch.float64)]))
        posterior.base.linear.bias.copy_(torch.cat([-gain @ b, 0.5 * cov.diagonal().log()]))
        decoder.weight.copy_(w)
        decoder.bias.copy_(b)
    return VAE(encoder, posterior, StandardNormal(2), decoder, FixedGaussian(sigma), (1, 1, 3))


def test_stl_and_dreg_inference_gradients_vanish_where_q_is_the_true_posterior():
    """log p(x, z) - log q(z|x) = log p(x) for every z when q is the true posterior: STL's
    and DReG's inference-network gradients are exactly zero (to rounding) for every draw,
    while the reparameterization gradient keeps its score term's noise."""
    model = linear_gaussian_at_its_posterior()
    x = torch.tensor([[[[0.7, -1.1, 0.4]], [[-0.3, 0.5, 2.0]]]], dtype=torch.float64).view(2, 1, 1, 3)
    eps = torch.randn(4, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    log_w = model(x, eps=eps)
    log_w = log_w.log_px + log_w.log_pz - log_w.log_q
    assert torch.allclose(log_w, log_w[:1].expand_as(log_w), atol=1e-12)  # q is the posterior
    for objective in (ElboObjective(model, samples=4, gradient="stl"), IwaeObjective(model, k=4, gradient="stl"),
                      IwaeObjective(model, k=4, gradient="dreg")):  # fmt: skip
        assert gradients(model, objective, x, eps)[0].abs().max() < 1e-12, objective.label
    assert gradients(model, ElboObjective(model, samples=4), x, eps)[0].abs().max() > 1e-2


def test_effective_sample_size_runs_from_one_to_k():
    log_w = torch.tensor([[0.0, 0.0], [0.0, -1e4], [0.0, -1e4]], dtype=torch.float64)
    assert torch.allclose(effective_sample_size(log_w), torch.tensor([3.0, 1.0], dtype=torch.float64))


@pytest.mark.parametrize("family", [{"name": "planar", "depth": 2}, {"name": "sylvester", "depth": 1}])
def test_families_without_a_density_of_a_given_z_refuse_stl_and_dreg(family):
    model = small_vae(family)
    with pytest.raises(
        ConfigError, match=rf"objective.gradient=dreg needs log q.*posterior={family['name']} cannot"
    ):
        IwaeObjective(model, gradient="dreg", family=family["name"])
    with pytest.raises(ConfigError, match="objective.gradient=dreg is for objective=iwae"):
        ElboObjective(small_vae(FAMILIES["mean_field"]), gradient="dreg")
    with pytest.raises(ConfigError, match="stl needs the Monte Carlo KL"):
        ElboObjective(small_vae(FAMILIES["mean_field"]), kl="analytic", gradient="stl")
