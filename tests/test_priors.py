r"""Every prior, checked the same way, in float64.

:data:`PRIORS_UNDER_TEST` names a configuration of every registered prior (a test fails
if one is registered and not listed); each is given non-trivial random parameters and
checked for: a density that integrates to 1 (quadrature on a fine 2-D grid), samples
whose mean and covariance match the density's, gradients reaching every parameter, and
seeded, reproducible sampling. The mixture's log-density is compared with a brute-force
sum over its components, the options are checked, and every ``conf/prior`` file builds.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf
from torch import Tensor

from vaeflow.errors import ConfigError
from vaeflow.model import build_model
from vaeflow.posteriors.base import standard_normal_log_prob
from vaeflow.priors import PRIORS, Gaussian, MixtureOfGaussians, Prior, StandardNormal

CONF = Path(__file__).resolve().parents[1] / "conf" / "prior"
PRIORS_UNDER_TEST: dict[str, dict[str, Any]] = {
    "standard_normal": {"name": "standard_normal"},
    "gaussian": {"name": "gaussian"},
    "mog": {"name": "mog", "components": 3},
}
CASES = list(PRIORS_UNDER_TEST)
#: the quadrature grid: [-L, L]^2 in steps of L / HALF (the scales below are >= exp(-0.6),
#: the means within about 6 of 0, so the box holds every component to > 7 standard deviations)
L, HALF = 16.0, 320


def randomized(case: str, seed: int = 0) -> Prior:
    r"""The prior ``case`` in float64 with random parameters: means ~ N(0, 1.5^2),
    log-scales ~ U(-0.6, 0.5), logits ~ N(0, 1)."""
    prior = PRIORS.build(PRIORS_UNDER_TEST[case], latent_dim=2).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in prior.named_parameters():
            if "log_scale" in name:
                p.copy_(torch.rand(p.shape, generator=g, dtype=p.dtype) * 1.1 - 0.6)
            elif "mean" in name:
                p.copy_(1.5 * torch.randn(p.shape, generator=g, dtype=p.dtype))
            elif name == "logits":
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
            else:
                raise AssertionError(f"no rule for the parameter {name} of {case}")
    return prior


def grid() -> tuple[Tensor, float]:
    r"""The grid's points ``[N^2, 2]`` and the area of a cell."""
    x = torch.linspace(-L, L, 2 * HALF + 1, dtype=torch.float64)
    return torch.cartesian_prod(x, x), (L / HALF) ** 2


def quadrature_moments(prior: Prior) -> tuple[Tensor, Tensor, Tensor]:
    r"""The density's mass, mean ``[2]`` and covariance ``[2, 2]`` by quadrature."""
    z, cell = grid()
    with torch.no_grad():
        w = prior.log_prob(z).exp() * cell
    mass = w.sum()
    mean = (w[:, None] * z).sum(0) / mass
    centred = z - mean
    cov = (w[:, None, None] * centred[:, :, None] * centred[:, None, :]).sum(0) / mass
    return mass, mean, cov


def closed_form_moments(prior: Prior) -> tuple[Tensor, Tensor]:
    r"""Mean and covariance of a (mixture of) diagonal Gaussian(s):
    ``m = sum_k pi_k mu_k``, ``C = sum_k pi_k (diag sigma_k^2 + mu_k mu_k^T) - m m^T``."""
    with torch.no_grad():
        if isinstance(prior, MixtureOfGaussians):
            log_w, mu, log_s = prior.mixture_params()
        else:
            mu, log_s = prior.gaussian_params()
            log_w, mu, log_s = torch.zeros(1, dtype=mu.dtype), mu[None], log_s[None]
        w = log_w.exp()
        mean = (w[:, None] * mu).sum(0)
        second = (
            w[:, None, None] * (torch.diag_embed(torch.exp(2 * log_s)) + mu[:, :, None] * mu[:, None, :])
        ).sum(0)
        return mean, second - torch.outer(mean, mean)


#: priors built from parts of a model (tested below through a small VAE)
MODEL_PRIORS = {"vamp", "flow"}


def test_every_registered_prior_is_tested_and_has_a_config():
    assert set(PRIORS.names()) == set(CASES) | MODEL_PRIORS
    assert set(PRIORS.names()) == {y.stem for y in CONF.glob("*.yaml")}


@pytest.mark.parametrize("case", CASES)
def test_density_integrates_to_one_and_has_the_closed_form_moments(case: str):
    prior = randomized(case)
    mass, mean, cov = quadrature_moments(prior)
    assert abs(mass.item() - 1) < 1e-9
    exact_mean, exact_cov = closed_form_moments(prior)
    torch.testing.assert_close(mean, exact_mean, rtol=0, atol=1e-8)
    torch.testing.assert_close(cov, exact_cov, rtol=0, atol=1e-8)


@pytest.mark.parametrize("case", CASES)
def test_samples_match_the_density_moments(case: str):
    prior = randomized(case)
    _, mean, cov = quadrature_moments(prior)
    n = 200_000
    with torch.no_grad():
        z = prior.sample(n, torch.Generator().manual_seed(1))
    assert z.shape == (n, 2) and z.dtype == torch.float64
    se_mean = (torch.diagonal(cov) / n).sqrt()
    assert ((z.mean(0) - mean).abs() < 4 * se_mean).all(), (z.mean(0), mean)
    centred = z - mean  # the density's mean: the products' mean is then unbiased for C
    products = centred[:, :, None] * centred[:, None, :]
    se_cov = products.std(0) / math.sqrt(n)
    assert ((products.mean(0) - cov).abs() < 4 * se_cov).all(), (products.mean(0), cov)


def test_mixture_log_density_is_the_sum_over_components():
    prior = randomized("mog", seed=3)
    z = torch.randn(50, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 3
    logits, means, raw = prior.logits.tolist(), prior.means.tolist(), prior.log_scales_raw.tolist()
    m = prior.log_scale_min
    weights = [math.exp(a) / sum(math.exp(b) for b in logits) for a in logits]
    expected = []
    for point in z.tolist():
        total = 0.0
        for k, weight in enumerate(weights):
            density = weight
            for i, value in enumerate(point):
                sigma = math.exp(m + math.log1p(math.exp(raw[k][i] - m)))
                density *= math.exp(-0.5 * ((value - means[k][i]) / sigma) ** 2) / (
                    sigma * math.sqrt(2 * math.pi)
                )
            total += density
        expected.append(math.log(total))
    torch.testing.assert_close(
        prior.log_prob(z), torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=1e-12
    )
    far = prior.log_prob(torch.full((2,), 1e3, dtype=torch.float64))  # every component underflows
    assert torch.isfinite(far) and far < -1e4


@pytest.mark.parametrize("case", CASES)
def test_log_prob_broadcasts_over_leading_dimensions(case: str):
    prior = randomized(case)
    z = torch.randn(4, 3, 2, dtype=torch.float64)
    out = prior.log_prob(z)
    assert out.shape == (4, 3)
    torch.testing.assert_close(out[2, 1], prior.log_prob(z[2, 1]))


@pytest.mark.parametrize("case", [c for c in CASES if c != "standard_normal"])
def test_gradients_reach_every_parameter(case: str):
    prior = randomized(case)
    z = torch.randn(16, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    prior.log_prob(z).sum().backward()
    for name, p in prior.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and (p.grad != 0).all(), name
    prior.zero_grad(set_to_none=True)
    prior.sample(16, torch.Generator().manual_seed(2)).square().sum().backward()
    for name, p in prior.named_parameters():  # reparameterized: the means and scales, not the component draw
        if name != "logits":
            assert p.grad is not None and (p.grad != 0).any(), name


@pytest.mark.parametrize("case", CASES)
def test_sampling_is_reproducible_and_leaves_the_global_generator_alone(case: str):
    prior = randomized(case)
    state = torch.get_rng_state()
    a = prior.sample(64, torch.Generator().manual_seed(7))
    b = prior.sample(64, torch.Generator().manual_seed(7))
    c = prior.sample(64, torch.Generator().manual_seed(8))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_the_mixture_means_are_spread_seeded_by_the_run_and_drawn_privately():
    torch.manual_seed(0)
    state = torch.get_rng_state()
    a = MixtureOfGaussians(4, components=10)
    assert torch.equal(torch.get_rng_state(), state)  # the encoder and decoder start as with any prior
    torch.manual_seed(0)
    b = MixtureOfGaussians(4, components=10)
    torch.manual_seed(1)
    c = MixtureOfGaussians(4, components=10)
    assert torch.equal(a.means, b.means) and not torch.equal(a.means, c.means)
    assert torch.cdist(a.means, a.means).add(torch.eye(10) * 1e9).min() > 0.1  # distinct components
    assert 0.5 < a.means.std().item() < 1.5  # at the scale of N(0, I)
    assert torch.equal(MixtureOfGaussians(4, init_spread=0.0).means, torch.zeros(10, 4))
    torch.testing.assert_close(a.logits.softmax(-1), torch.full((10,), 0.1))
    torch.testing.assert_close(a.mixture_params()[2], torch.zeros(10, 4), rtol=0, atol=1e-6)


def test_the_learned_gaussian_starts_as_the_standard_normal():
    z = torch.randn(5, 3)
    torch.testing.assert_close(Gaussian(3).log_prob(z), StandardNormal(3).log_prob(z))
    mean, log_scale = Gaussian(3).gaussian_params()
    assert torch.equal(mean, torch.zeros(3))
    torch.testing.assert_close(log_scale, torch.zeros(3), rtol=0, atol=1e-6)


@pytest.mark.parametrize("case", CASES)
def test_gaussian_params_describe_the_density(case: str):
    prior = randomized(case)
    params = prior.gaussian_params()
    if case == "mog":
        assert params is None
        prior = MixtureOfGaussians(2, components=1).double()
        params = prior.gaussian_params()
    mean, log_scale = params
    assert mean.shape == log_scale.shape == (2,)
    z = torch.randn(9, 2, dtype=torch.float64)
    expected = torch.distributions.Normal(mean, log_scale.exp()).log_prob(z).sum(-1)
    torch.testing.assert_close(prior.log_prob(z), expected)


def test_the_standard_normal_is_unchanged():
    prior = StandardNormal(5)
    assert prior.state_dict() == {} and not list(prior.parameters())
    z = torch.randn(3, 4, 5)
    assert torch.equal(prior.log_prob(z), standard_normal_log_prob(z))
    drawn = prior.sample(6, torch.Generator().manual_seed(9))
    assert torch.equal(drawn, torch.randn(6, 5, generator=torch.Generator().manual_seed(9)))
    assert prior.double().sample(2).dtype == torch.float64
    mean, log_scale = prior.gaussian_params()
    assert torch.equal(mean, torch.zeros(5)) and torch.equal(log_scale, torch.zeros(5))


def test_a_model_with_the_standard_normal_prior_saves_no_prior_state(compose_train):
    model = build_model(compose_train(), (1, 8, 8))
    assert not [key for key in model.state_dict() if key.startswith("prior.")]
    learned = build_model(compose_train("prior=mog"), (1, 8, 8))
    assert {key for key in learned.state_dict() if key.startswith("prior.")} == {
        "prior.logits", "prior.means", "prior.log_scales_raw",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"name": "mog", "components": 0}, "prior.components=0"),
        ({"name": "mog", "components": 2.5}, "prior.components=2.5"),
        ({"name": "mog", "components": True}, "prior.components=True"),
        ({"name": "mog", "init_spread": -1.0}, "prior.init_spread=-1.0"),
        ({"name": "gaussian", "log_scale_min": 0.0}, "prior.log_scale_min=0.0"),
        ({"name": "gaussian", "log_scale_min": "low"}, "prior.log_scale_min=low"),
        ({"name": "gaussian", "components": 3}, "prior=gaussian"),
        ({"name": "standard_normal", "mean": 1.0}, "prior=standard_normal"),
        ({"name": "iwae"}, "unknown prior 'iwae'"),
    ],
)
def test_wrong_options_are_one_line_errors(cfg: dict[str, Any], message: str):
    with pytest.raises(ConfigError) as error:
        PRIORS.build(cfg, latent_dim=2)
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("path", sorted(CONF.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_config_builds(path: Path):
    cfg = OmegaConf.load(path)
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# ") and cfg.name == path.stem
    prior = _model(OmegaConf.to_container(cfg)).float().prior  # through build_model: vamp takes model parts
    assert isinstance(prior, Prior) and prior.latent_dim == 2
    assert prior.log_prob(torch.zeros(4, 3, 2)).shape == (4, 3)
    assert prior.sample(5, torch.Generator().manual_seed(0)).shape == (5, 2)


def test_sample_images_and_the_training_grid_draw_from_the_prior():
    """A learned prior moved far from N(0, I): the images decoded for samples.png and the
    trainer's sample grid are of its draws, not of standard normal ones."""
    import torch

    from vaeflow.data import Split
    from vaeflow.model import build_model
    from vaeflow.report.samples import sample_images
    from vaeflow.training.validation import Validator

    cfg = {
        "model": {"latent_dim": 2},
        "encoder": {"name": "mlp", "hidden_dims": [8]},
        "decoder": {"name": "mlp", "hidden_dims": [8]},
        "posterior": {"name": "mean_field"},
        "prior": {"name": "gaussian"},
    }
    model = build_model(cfg, (1, 4, 4)).eval()
    with torch.no_grad():
        model.prior.mean.fill_(50.0)
    test = Split(torch.bernoulli(torch.full((10, 1, 4, 4), 0.5), generator=torch.Generator().manual_seed(0)))
    images = sample_images(model, test, samples=6, pairs=2, seed=3)
    z = model.prior.sample(6, torch.Generator().manual_seed(3))
    assert z.mean() > 40
    assert torch.allclose(images.samples, model.decode_mean(z).clamp(0, 1))
    from vaeflow.training.validation import EVAL_SEED, _grid

    def grid_of_prior() -> torch.Tensor:  # the decoded draws of the prior as it is now, fixed noise
        z = model.prior.sample(4, torch.Generator().manual_seed(EVAL_SEED))
        assert z.mean() > 40
        return _grid(model.decode_mean(z))

    validator = Validator(model, test, "mc", 10, 4, 4, torch.device("cpu"))
    assert torch.equal(validator.grids()["samples"], grid_of_prior())
    with torch.no_grad():  # the prior learns: the next grid is of the moved prior, not of its start
        model.prior.mean.fill_(80.0)
    assert torch.equal(validator.grids()["samples"], grid_of_prior())


@pytest.mark.parametrize("family", ["mean_field", "full_cov"])
@pytest.mark.parametrize("prior", ["standard_normal", "gaussian", "mog1"])
def test_the_closed_form_kl_of_every_gaussian_pair_matches_monte_carlo(family, prior):
    """KL(q || p) = E_q[log q - log p]: the closed form against 200,000 samples' mean, in
    float64, with the prior's parameters moved away from N(0, I)."""
    import torch

    from vaeflow.posteriors import POSTERIORS
    from vaeflow.priors import PRIORS

    torch.manual_seed(0)
    q = POSTERIORS.build({"name": family}, latent_dim=3, feature_dim=4).double()
    p = PRIORS.build(
        {"name": "mog", "components": 1} if prior == "mog1" else {"name": prior}, latent_dim=3
    ).double()
    with torch.no_grad():
        for param in [*q.parameters(), *p.parameters()]:
            param.add_(0.3 * torch.randn_like(param))
    h = torch.randn(2, 4, dtype=torch.float64)
    z, log_q = q(h, n=200_000, generator=torch.Generator().manual_seed(1))
    mc = log_q - p.log_prob(z)
    exact = q.analytic_kl(h, p.gaussian_params())
    se = mc.std(0) / mc.shape[0] ** 0.5
    assert ((exact - mc.mean(0)).abs() < 5 * se + 1e-9).all(), (exact, mc.mean(0), se)
    assert torch.equal(q.sample_with_kl(h, q.noise(h, 1), p.gaussian_params())[2], exact)


def test_kl_analytic_is_refused_for_a_mixture_prior_and_chosen_for_a_gaussian_one():
    from vaeflow.errors import ConfigError
    from vaeflow.model import build_model
    from vaeflow.objectives import resolve_kl

    def model(prior):
        cfg = {"model": {"latent_dim": 2}, "encoder": {"name": "mlp", "hidden_dims": [8]},
               "decoder": {"name": "mlp", "hidden_dims": [8]}, "posterior": {"name": "mean_field"}, "prior": prior}  # fmt: skip
        return build_model(cfg, (1, 4, 4))

    assert resolve_kl("auto", model({"name": "gaussian"})) == "analytic"
    assert resolve_kl("auto", model({"name": "mog"})) == "mc"
    with pytest.raises(ConfigError, match="posterior=mean_field has no closed-form KL to prior=mog"):
        resolve_kl("analytic", model({"name": "mog"}), "mean_field", "mog")


def _model(prior: dict, family: str | dict = "mean_field", latent: int = 2):
    from vaeflow.model import build_model

    cfg = {"model": {"latent_dim": latent}, "encoder": {"name": "mlp", "hidden_dims": [8]},
           "decoder": {"name": "mlp", "hidden_dims": [8]}, "prior": prior,
           "posterior": family if isinstance(family, dict) else {"name": family}}  # fmt: skip
    torch.manual_seed(0)
    return build_model(cfg, (1, 3, 3)).double()


def _grid_mass(prior, half: float = 9.0, points: int = 601) -> tuple[float, Tensor, Tensor]:
    """The 2-D quadrature of ``exp(log p)`` on a grid over [-half, half]^2: mass, mean, covariance."""
    axis = torch.linspace(-half, half, points, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        density = prior.log_prob(grid).exp()
    cell = (axis[1] - axis[0]) ** 2
    mass = float(density.sum() * cell)
    mean = (density[:, None] * grid).sum(0) * cell / mass
    centred = grid - mean
    cov = (density[:, None, None] * centred[:, :, None] * centred[:, None, :]).sum(0) * cell / mass
    return mass, mean, cov


@pytest.mark.parametrize(
    "prior",
    [
        ({"name": "vamp", "components": 5, "init": "random"}, "mean_field"),
        (
            {"name": "vamp", "components": 5, "init": "random", "mixture": "base"},
            {"name": "planar", "depth": 2},
        ),
        ({"name": "flow", "family": "maf", "depth": 2}, "mean_field"),
        ({"name": "flow", "family": "realnvp", "depth": 2}, "mean_field"),
        ({"name": "flow", "family": "nsf_coupling", "depth": 2, "bins": 4, "hidden_dims": [8]}, "mean_field"),
    ],
    ids=["vamp", "vamp-base-of-planar", "flow-maf", "flow-realnvp", "flow-nsf_coupling"],
)
def test_vamp_and_flow_priors_integrate_to_one_and_their_samples_match(prior):
    """The density's mass in the box [-12, 12]^2 (2-D quadrature, float64) is at most 1 and
    equals the fraction of the prior's own samples that fall in it (a flow's tails can
    reach past any box), and the two agree on the mean in the box."""
    prior, family = prior
    model = _model(prior, family)
    with torch.no_grad():  # move the prior away from its start
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    mass, mean, cov = _grid_mass(model.prior, half=12.0, points=481)
    with torch.no_grad():
        z = model.prior.sample(100_000, torch.Generator().manual_seed(0))
    inside = z.abs().max(-1).values <= 12.0
    frac = float(inside.double().mean())
    assert 0.99 < mass <= 1.0 + 1e-9
    assert abs(mass - frac) < 5 * (frac * (1 - frac) / z.shape[0]) ** 0.5 + 1e-4
    z = z[inside]
    se = (cov.diagonal() / z.shape[0]).sqrt()
    assert ((z.mean(0) - mean).abs() < 5 * se + 1e-3).all()


def test_vamp_log_density_is_the_mean_of_its_posteriors_and_its_gradients_reach_the_pseudo_inputs():
    model = _model({"name": "vamp", "components": 4, "init": "random"})
    prior = model.prior
    z = torch.randn(7, 2, dtype=torch.float64)
    h = model.encoder(prior.pseudo_inputs())
    per = torch.stack([model.posterior.log_prob(z[:, None, :], h[k : k + 1])[:, 0] for k in range(4)], -1)
    assert torch.allclose(prior.log_prob(z), torch.log(per.exp().mean(-1)), atol=1e-12)
    prior.log_prob(z).sum().backward()
    assert prior.pseudo_raw.grad.abs().min() > 0  # every pseudo-pixel receives a gradient
    assert all(p.grad is not None for p in model.encoder.parameters())
    assert not any(name.startswith("prior.") and "encoder" in name for name, _ in model.named_parameters())


@pytest.mark.parametrize("family", [{"name": "iaf", "depth": 2, "hidden_dims": [8]}, {"name": "mean_field"}])
def test_vamp_of_the_gaussian_base_is_the_mixture_of_the_encoders_gaussians(family):
    """``mixture=base``: log p(z) is the log of the mean of the K Gaussian densities
    N(z; mu(u_k), sigma(u_k)^2) written out here, the flow steps take no part, and the
    pseudo-inputs still receive gradients; with mean_field it is the posterior mixture."""
    model = _model({"name": "vamp", "components": 3, "init": "random", "mixture": "base"}, family)
    prior = model.prior
    z = torch.randn(6, 2, dtype=torch.float64)
    base = model.posterior.base  # the DiagonalGaussian of both families
    mu, log_sigma = base.params(model.encoder(prior.pseudo_inputs()))  # [K, D]
    dens = torch.exp(
        -0.5 * ((z[:, None] - mu) / log_sigma.exp()) ** 2 - log_sigma - 0.5 * math.log(2 * math.pi)
    )
    assert torch.allclose(prior.log_prob(z), torch.log(dens.prod(-1).mean(-1)), atol=1e-12)
    prior.log_prob(z).sum().backward()
    assert prior.pseudo_raw.grad.abs().min() > 0


def test_vamp_starts_at_training_images_and_refuses_families_without_a_density():
    from vaeflow.errors import ConfigError

    model = _model({"name": "vamp", "components": 3, "init": "data"})
    images = torch.tensor([0.0, 0.5, 1.0]).repeat(4, 3, 1).view(4, 1, 3, 3).double()
    model.prior.initialize(images, torch.Generator().manual_seed(0))
    u = model.prior.pseudo_inputs()
    assert torch.allclose(u, images[0].clamp(0.02, 0.98).expand_as(u), atol=1e-12)
    with pytest.raises(
        ConfigError, match="prior=vamp needs log q.*posterior=planar cannot.*prior.mixture=base"
    ):
        _model({"name": "vamp"}, family={"name": "planar", "depth": 2})
    with pytest.raises(
        ConfigError, match="posterior=iaf evaluates q.z.u. by a sequential inverse.*prior.mixture=base"
    ):
        _model({"name": "vamp"}, family={"name": "iaf", "depth": 1, "hidden_dims": [8]})
    with pytest.raises(ConfigError, match="posterior=autoregressive does not have.*prior.mixture=posterior"):
        _model({"name": "vamp", "mixture": "base"}, family={"name": "autoregressive", "hidden_dims": [8]})
    with pytest.raises(ConfigError, match="prior.mixture"):
        _model({"name": "vamp", "mixture": "flow"})
    with pytest.raises(ConfigError, match="prior.family=sylvester"):
        _model({"name": "flow", "family": "sylvester"})


def test_flow_prior_gradients_reach_its_steps():
    model = _model({"name": "flow", "family": "maf", "depth": 2})
    model.prior.log_prob(torch.randn(5, 2, dtype=torch.float64)).sum().backward()
    grads = [p.grad for p in model.prior.parameters()]
    assert grads and all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize(
    "prior", [["prior=vamp", "prior.components=10"], ["prior=flow", "prior.depth=1"]], ids=["vamp", "flow"]
)
def test_a_run_with_a_learned_prior_resumes_bit_for_bit_and_evaluates(compose_train, tmp_path, prior):
    import json

    from cli_helpers import vaeflow
    from training_helpers import SigtermAt

    from vaeflow.training import Interrupted, train

    run = [*prior, "trainer.max_epochs=2", "trainer.progress=plain", "trainer.iw_k=4", "trainer.images=8",
           "trainer.threads=1", "model.latent_dim=4"]  # fmt: skip
    train(compose_train(*run), tmp_path / "a")
    with pytest.raises(Interrupted):
        train(compose_train(*run), tmp_path / "b", hooks=[SigtermAt(20)])
    train(compose_train(*run, f"trainer.resume={tmp_path / 'b'}"), tmp_path / "b")
    a, b = (torch.load(tmp_path / r / "checkpoints" / "last.pt", weights_only=True)["model"] for r in "ab")
    assert any(name.startswith("prior.") for name in a)  # the prior's parameters are saved
    for name in a:
        assert torch.equal(a[name], b[name]), name
    vaeflow("eval", str(tmp_path / "a"), "k=8", "threads=1", "progress=plain", cwd=tmp_path)
    (path,) = (tmp_path / "a").glob("eval/*/eval.json")
    assert json.loads(path.read_text())["eval/iw_nll"] > 0
