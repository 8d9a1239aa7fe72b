"""The ELBO, its KL estimators, warm-up and free bits, checked against hand computations."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vaeflow.errors import ConfigError
from vaeflow.likelihoods import Bernoulli
from vaeflow.model import VAE
from vaeflow.objectives import ElboTerms, elbo, kl_beta, resolve_kl, training_loss
from vaeflow.posteriors import POSTERIORS
from vaeflow.priors import StandardNormal


def tiny_vae(posterior: str = "mean_field", **options) -> VAE:
    """x (2 pixels) -> h = x (flattening encoder) -> z (1-D) -> 2 logits, with fixed weights."""
    encoder = nn.Flatten()
    encoder.feature_dim = 2
    posterior_module = POSTERIORS.build({"name": posterior, **options}, latent_dim=1, feature_dim=2).double()
    decoder = nn.Linear(1, 2).double()
    with torch.no_grad():
        posterior_module.base.linear.weight.copy_(
            torch.tensor([[0.5, -0.25], [0.1, 0.2]], dtype=torch.float64)
        )
        posterior_module.base.linear.bias.copy_(torch.tensor([0.3, -0.4], dtype=torch.float64))
        decoder.weight.copy_(torch.tensor([[1.5], [-0.7]], dtype=torch.float64))
        decoder.bias.copy_(torch.tensor([0.2, 0.1], dtype=torch.float64))
    return VAE(encoder, posterior_module, StandardNormal(1), decoder, Bernoulli(), (1, 1, 2))


def log_sigmoid(v: float) -> float:
    return -math.log1p(math.exp(-v))


@pytest.mark.parametrize("estimator", ["analytic", "mc"])
def test_elbo_of_a_tiny_model_matches_a_hand_computation(estimator: str):
    model = tiny_vae()
    x = torch.tensor([[[[1.0, 0.0]]], [[[0.0, 1.0]]]], dtype=torch.float64)
    torch.manual_seed(0)
    terms = elbo(model, x, kl=estimator, n=1)
    torch.manual_seed(0)
    eps = torch.randn(1, 2, 1, dtype=torch.float64)[0, :, 0].tolist()

    for b, (x1, x2) in enumerate([(1.0, 0.0), (0.0, 1.0)]):
        mu = 0.5 * x1 - 0.25 * x2 + 0.3
        log_sigma = 0.1 * x1 + 0.2 * x2 - 0.4
        z = mu + math.exp(log_sigma) * eps[b]
        l1, l2 = 1.5 * z + 0.2, -0.7 * z + 0.1
        rec = (
            x1 * log_sigmoid(l1)
            + (1 - x1) * log_sigmoid(-l1)
            + x2 * log_sigmoid(l2)
            + (1 - x2) * log_sigmoid(-l2)
        )
        if estimator == "analytic":
            kl = 0.5 * (math.exp(2 * log_sigma) + mu**2 - 1) - log_sigma
        else:
            log_q = -0.5 * eps[b] ** 2 - log_sigma - 0.5 * math.log(2 * math.pi)
            log_p = -0.5 * z**2 - 0.5 * math.log(2 * math.pi)
            kl = log_q - log_p
        assert terms.rec[b].item() == pytest.approx(rec, abs=1e-12)
        assert terms.kl[b].item() == pytest.approx(kl, abs=1e-12)
        assert terms.elbo[b].item() == pytest.approx(rec - kl, abs=1e-12)


def test_analytic_and_monte_carlo_kl_agree_within_their_standard_error():
    torch.manual_seed(1)
    q = POSTERIORS.build({"name": "mean_field"}, latent_dim=5, feature_dim=3).double()
    prior = StandardNormal(5)
    h = 0.5 * torch.randn(4, 3, dtype=torch.float64)
    n = 100_000
    z, log_q = q(h, n)
    samples = log_q - prior.log_prob(z)  # [n, B]
    mc, se = samples.mean(0), samples.std(0) / math.sqrt(n)
    exact = q.analytic_kl(h)
    assert torch.all((mc - exact).abs() < 4 * se), (mc, exact, se)
    assert torch.all(se < 0.05)  # the tolerance is tight enough to catch a constant error


def test_kl_estimator_resolution():
    mean_field, iaf = tiny_vae("mean_field"), tiny_vae("iaf", depth=2, hidden_dims=[8])
    assert resolve_kl("auto", mean_field) == "analytic"
    assert resolve_kl("auto", iaf) == "mc"
    assert resolve_kl("mc", mean_field) == "mc"
    with pytest.raises(ConfigError, match="kl=analytic: posterior=iaf has no closed-form KL.*kl=mc"):
        resolve_kl("analytic", iaf, "iaf")
    with pytest.raises(ConfigError, match="kl=exact"):
        resolve_kl("exact", mean_field)


def test_warmup_rises_linearly_to_one():
    assert kl_beta(0.0, 10) == 0.0
    assert kl_beta(2.5, 10) == pytest.approx(0.25)
    assert kl_beta(10.0, 10) == 1.0
    assert kl_beta(30.0, 10) == 1.0
    assert kl_beta(0.0, 0) == 1.0


def test_training_loss_applies_beta_and_free_bits():
    terms = ElboTerms(rec=torch.tensor([-10.0, -12.0]), kl=torch.tensor([1.0, 3.0]))
    assert training_loss(terms).item() == pytest.approx(11.0 + 2.0)
    assert training_loss(terms, beta=0.5).item() == pytest.approx(11.0 + 1.0)
    # mean KL 2 nats over 4 latent dims is below 1 nat/dim: the floor 4 applies
    assert training_loss(terms, free_bits=1.0, latent_dim=4).item() == pytest.approx(11.0 + 4.0)
    assert training_loss(terms, free_bits=0.25, latent_dim=4).item() == pytest.approx(11.0 + 2.0)
    # the floor passes no gradient to the KL
    kl = torch.tensor([1.0, 3.0], requires_grad=True)
    training_loss(ElboTerms(torch.zeros(2), kl), free_bits=1.0, latent_dim=4).backward()
    assert torch.all(kl.grad == 0)
