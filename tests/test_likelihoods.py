"""Likelihoods against brute force: every discrete one's probabilities over all the values of
a pixel sum to 1 (end bins and extreme parameters included), the Gaussian's density
integrates to 1, samples and means agree with the probabilities, and bits/dim of a known
distribution come out exactly."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import Tensor

from vaeflow.data import DataSplits, Split, dequantized
from vaeflow.data.base import BatchLoader, dequantize
from vaeflow.errors import ConfigError
from vaeflow.evaluate import importance_weighted
from vaeflow.likelihoods import (
    LIKELIHOODS,
    Bernoulli,
    DiscretizedLogistic,
    DiscretizedLogisticMixture,
    Gaussian,
    Likelihood,
)
from vaeflow.likelihoods.logistic import discretized_logistic_log_prob
from vaeflow.model import build_model
from vaeflow.stats import bits_per_dim


@pytest.fixture(autouse=True)
def float64():
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def all_values(levels: int, channels: int = 1) -> Tensor:
    """Every image of one pixel with ``channels`` channels: ``[levels^C, C, 1, 1]``."""
    grid = list(itertools.product(range(levels), repeat=channels))
    return torch.tensor(grid, dtype=torch.float64).div(levels - 1).view(-1, channels, 1, 1)


def total(likelihood: Likelihood, out: Tensor, levels: int, channels: int = 1) -> Tensor:
    """``sum_x p(x|out)`` over every value of one pixel, for each row of ``out [R, P]``."""
    x = all_values(levels, channels)
    logp = likelihood.log_prob(out[:, None, :].expand(-1, x.shape[0], -1), x)  # [R, values]
    return torch.logsumexp(logp, dim=-1).exp()


EXTREME = [-60.0, -8.0, -1.0, 0.0, 0.7, 3.0, 60.0]


@pytest.mark.parametrize("levels", [2, 17, 256])
def test_discretized_logistic_sums_to_one_over_every_level(levels):
    lik = DiscretizedLogistic((1, 1, 1), levels)
    out = torch.tensor(list(itertools.product(EXTREME, EXTREME)))  # (mean, log-scale) raw pairs
    sums = total(lik, out, levels)
    assert torch.allclose(sums, torch.ones_like(sums), atol=1e-12, rtol=0)


def test_the_bin_probabilities_are_logistic_cdf_differences():
    """Against the definition, in exact rational arithmetic of the bin edges."""
    levels, mean, log_scale = 8, 0.37, math.log(0.09)
    x = torch.arange(levels) / (levels - 1)
    got = discretized_logistic_log_prob(x, torch.tensor(mean), torch.tensor(log_scale), levels).exp()

    def cdf(v: float) -> float:
        return 1 / (1 + math.exp(-(v - mean) / math.exp(log_scale)))

    delta = 1 / (levels - 1)
    want = [
        (1.0 if k == levels - 1 else cdf(k * delta + delta / 2))
        - (0.0 if k == 0 else cdf(k * delta - delta / 2))
        for k in range(levels)
    ]
    assert torch.allclose(got, torch.tensor(want), atol=1e-15, rtol=1e-12)


def test_far_tails_keep_their_log_probability():
    """A bin 40 scales away from the mean: sigma(a) - sigma(b) underflows in a naive
    difference; the log-form stays exact (against the log of the density times the width,
    which the bin's mass approaches)."""
    levels = 256
    x = torch.tensor([200 / 255])
    mean, log_scale = torch.tensor(0.1), torch.tensor(math.log(0.0025))
    got = discretized_logistic_log_prob(x.float(), mean.float(), log_scale.float(), levels)
    s, delta = math.exp(float(log_scale)), 1 / 255
    t = (200 / 255 - 0.1) / s
    approx = -t - 2 * math.log1p(math.exp(-t)) - math.log(s) + math.log(delta)
    assert torch.isfinite(got).all() and abs(float(got) - approx) < 1e-2 * abs(approx)


@pytest.mark.parametrize("conditioning", ["paper", "independent"])
def test_mixture_sums_to_one_over_every_colour(conditioning):
    levels, k = 8, 3
    lik = DiscretizedLogisticMixture((3, 1, 1), levels, components=k, conditioning=conditioning)
    generator = torch.Generator().manual_seed(0)
    p = lik.channels(3)
    out = torch.cat(
        [torch.randn(4, p, generator=generator) * 3, torch.full((1, p), 40.0), torch.full((1, p), -40.0)]
    )
    sums = total(lik, out, levels, channels=3)
    assert torch.allclose(sums, torch.ones_like(sums), atol=1e-12, rtol=0)


def test_mixture_sums_to_one_at_eight_bits_grey():
    lik = DiscretizedLogisticMixture((1, 1, 1), 256, components=4)
    out = torch.randn(6, lik.channels(1), generator=torch.Generator().manual_seed(1)) * 5
    sums = total(lik, out, 256)
    assert torch.allclose(sums, torch.ones_like(sums), atol=1e-12, rtol=0)


def test_mixture_log_prob_against_a_brute_force_sum_over_components():
    """PixelCNN++'s RGB model written out for one pixel: pi_k prod_c P(x_c | mu_kc + ...)."""
    levels, k = 16, 2
    lik = DiscretizedLogisticMixture((3, 1, 1), levels, components=k, conditioning="paper")
    out = torch.randn(lik.channels(3), generator=torch.Generator().manual_seed(2))
    x = torch.tensor([3.0, 9.0, 15.0]) / (levels - 1)
    got = float(lik.log_prob(out[None], x.view(1, 3, 1, 1)))
    logits, means, raw_scales, raw_coeffs = out.split([k, 3 * k, 3 * k, 3 * k])
    pi = torch.softmax(logits, 0)
    means, coeffs = means.view(k, 3), torch.tanh(raw_coeffs).view(k, 3)
    scales = (-8.0 + torch.nn.functional.softplus(raw_scales + 8.0)).view(k, 3)
    want = 0.0
    for j in range(k):
        mus = [
            means[j, 0],
            means[j, 1] + coeffs[j, 0] * x[0],
            means[j, 2] + coeffs[j, 1] * x[0] + coeffs[j, 2] * x[1],
        ]
        prob = math.prod(
            float(discretized_logistic_log_prob(x[c], mus[c], scales[j, c], levels).exp()) for c in range(3)
        )
        want += float(pi[j]) * prob
    assert got == pytest.approx(math.log(want), abs=1e-12)


@pytest.mark.parametrize(
    "lik",
    [
        DiscretizedLogistic((2, 1, 1), 16),
        DiscretizedLogisticMixture((3, 1, 1), 16, components=2),
        DiscretizedLogisticMixture((3, 1, 1), 16, components=2, conditioning="independent"),
    ],
    ids=["logistic", "mixture-paper", "mixture-independent"],
)
def test_samples_and_means_follow_the_probabilities(lik):
    c = lik.shape[0]
    out = torch.randn(lik.channels(c), generator=torch.Generator().manual_seed(3))
    values = all_values(16, c)
    probs = lik.log_prob(out.expand(values.shape[0], -1), values).exp()
    mean = (probs[:, None] * values.flatten(1)).sum(0)
    assert (
        torch.allclose(lik.mean(out[None])[0], mean, atol=1e-10) or lik.name == "discretized_logistic_mixture"
    )
    draws = lik.sample(out.expand(40_000, -1), torch.Generator().manual_seed(4))
    assert torch.allclose(draws.mean(0), mean, atol=0.02)
    codes = (draws * 15).round().long() @ torch.tensor([16**i for i in reversed(range(c))])
    freq = torch.bincount(codes, minlength=16**c).double() / draws.shape[0]
    assert (freq - probs).abs().max() < 0.01


def test_mixture_mean_is_exact_without_conditioning():
    lik = DiscretizedLogisticMixture((1, 1, 1), 64, components=3)
    out = torch.randn(lik.channels(1), generator=torch.Generator().manual_seed(5))
    values = all_values(64)
    probs = lik.log_prob(out.expand(64, -1), values).exp()
    assert float(lik.mean(out[None])) == pytest.approx(float((probs * values.flatten()).sum()), abs=1e-10)


@pytest.mark.parametrize("scale", ["pixel", "shared"])
@pytest.mark.parametrize("levels", [None, 256])
def test_gaussian_density_integrates_to_one(scale, levels):
    lik = Gaussian((1, 1, 1), levels, scale=scale)
    if scale == "shared":
        with torch.no_grad():
            lik.shared_log_scale.fill_(math.log(0.05))
    out = torch.tensor([0.3, math.log(0.05)] if scale == "pixel" else [0.3])
    y = torch.linspace(-1, 2, 300_001)
    logp = lik.log_prob(out.expand(y.numel(), -1), y.view(-1, 1, 1, 1))
    density = (logp + (math.log(levels) if levels else 0.0)).exp()  # without the bin width
    assert float(torch.trapezoid(density.detach(), y)) == pytest.approx(1.0, abs=1e-9)


def test_gaussian_never_reduces_to_a_mean_squared_error():
    lik = Gaussian((1, 2, 2), None)
    out = torch.cat([torch.full((4,), 0.5), torch.full((4,), math.log(0.1))])
    x = torch.full((1, 1, 2, 2), 0.7)
    log_sigma = -7.0 + math.log1p(math.exp(math.log(0.1) + 7.0))  # the soft lower bound at -7
    want = 4 * (-0.5 * (0.2 / math.exp(log_sigma)) ** 2 - log_sigma - 0.5 * math.log(2 * math.pi))
    assert float(lik.log_prob(out[None], x)) == pytest.approx(want, abs=1e-12)


def test_gradients_stay_finite_at_extreme_parameters():
    lik = DiscretizedLogisticMixture((3, 2, 2), 256, components=2)
    out = (torch.randn(2, lik.channels(3) * 4) * 200).requires_grad_()
    x = torch.randint(0, 256, (2, 3, 2, 2)).double() / 255
    lik.log_prob(out, x).sum().backward()
    assert torch.isfinite(out.grad).all()


def test_data_must_suit_the_likelihood():
    with pytest.raises(ConfigError, match="binary pixels.*dataset.binarize=dynamic"):
        Bernoulli((1, 8, 8), 256)
    with pytest.raises(ConfigError, match="likelihood.bits=5 gives 32 bins.*256 levels"):
        DiscretizedLogistic((1, 8, 8), 256, bits=5)
    with pytest.raises(ConfigError, match="continuous values.*likelihood=gaussian"):
        DiscretizedLogisticMixture((1, 8, 8), None)
    with pytest.raises(ConfigError, match="likelihood.conditioning"):
        DiscretizedLogisticMixture((1, 8, 8), 256, conditioning="joint")
    with pytest.raises(ConfigError, match="unknown likelihood"):
        LIKELIHOODS.build({"name": "poisson"}, shape=(1, 8, 8), levels=256)


@pytest.mark.parametrize(
    "cfg, p",
    [
        ({"name": "bernoulli"}, 3),
        ({"name": "discretized_logistic"}, 6),
        ({"name": "discretized_logistic_mixture", "components": 5}, 50),
        ({"name": "discretized_logistic_mixture", "components": 5, "conditioning": "independent"}, 45),
        ({"name": "gaussian"}, 6),
        ({"name": "gaussian", "scale": "shared"}, 3),
    ],
)
def test_the_decoder_emits_what_the_likelihood_reads(cfg, p):
    levels = 2 if cfg["name"] == "bernoulli" else 256
    model = build_model(
        {
            "model": {"latent_dim": 2},
            "likelihood": cfg,
            "encoder": {"name": "mlp", "hidden_dims": [8]},
            "decoder": {"name": "mlp", "hidden_dims": [8]},
            "posterior": {"name": "mean_field"},
            "prior": {"name": "standard_normal"},
        },
        (3, 4, 4),
        levels,
    )
    assert model.likelihood.param_shape == (p, 4, 4)
    out = model.decoder(torch.zeros(5, 2))
    assert out.shape == (5, p * 16)
    assert model.decode_mean(torch.zeros(5, 2)).shape == (5, 3, 4, 4)


class Uniform(Likelihood):
    """The uniform distribution over the L levels of every sub-pixel: ``-D log L``."""

    name = "uniform"

    def channels(self, c: int) -> int:
        return c

    def log_prob(self, out: Tensor, x: Tensor) -> Tensor:
        return torch.full(out.shape[:-1], -self.dims * math.log(self.levels), dtype=out.dtype)


@pytest.mark.parametrize("bits", [1, 5, 8])
def test_bits_per_dim_of_a_uniform_decoder_is_exactly_the_bit_depth(bits):
    """q(z|x) = p(z) exactly (the posterior heads zeroed), so every importance weight is
    p(x|z) and the IW-NLL is ``D log L``: bits/dim must be ``bits``."""
    levels, shape = 2**bits, (3, 4, 4)
    model = build_model(
        {
            "model": {"latent_dim": 2},
            "encoder": {"name": "mlp", "hidden_dims": [8]},
            "decoder": {"name": "mlp", "hidden_dims": [8]},
            "posterior": {"name": "mean_field"},
            "prior": {"name": "standard_normal"},
        },
        shape,
    ).double()
    model.likelihood = Uniform(shape, levels)
    for p in model.posterior.parameters():
        torch.nn.init.zeros_(p)
    x = torch.randint(0, levels, (6, *shape)).double() / (levels - 1)
    est = importance_weighted(model, x, k=16)
    nll = float(-est.log_px.mean())
    assert bits_per_dim(nll, 48, levels) == pytest.approx(bits, abs=1e-12)
    assert bits_per_dim(nll, 48, None) is None


def test_dequantization_stays_in_the_level_bins_and_is_fixed_for_evaluation():
    levels = 4
    images = torch.arange(levels).double().div(levels - 1).repeat(50).view(-1, 1, 2, 2).float()
    y = dequantize(images, levels, torch.Generator().manual_seed(0))
    assert torch.equal(torch.floor(y * levels), torch.round(images * (levels - 1)))
    data = DataSplits("toy", Split(images), Split(images), Split(images), levels=levels)
    once, again = dequantized(data), dequantized(data)
    assert torch.equal(once.test.images, again.test.images) and not torch.equal(
        once.val.images, once.test.images
    )
    assert once.train.dequantize == levels and torch.equal(once.train.images, images)
    loader = BatchLoader(once.train, 10, shuffle=False, seed=0)
    first, second = next(loader.epoch(0)), next(loader.epoch(1))
    assert torch.equal(first, next(loader.epoch(0))) and not torch.equal(first, second)
    assert torch.equal(torch.floor(first * levels), torch.round(images[:10] * (levels - 1)))
