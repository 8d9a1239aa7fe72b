r"""Every posterior family, checked the same way, in float64.

One table, :data:`FAMILIES`, names a small configuration of every registered family
(Sylvester once per variant); every test below runs over it, so a new family is tested
as soon as it is registered and listed here (a test fails if it is registered and not
listed). The checks: shapes and gradients, ``log q`` against the log-determinant of the
autograd Jacobian of the whole map ``eps -> z``, the inverse where there is one,
triangular Jacobians of the autoregressive families, save/load, the closed-form KL
against its Monte Carlo estimate, the invertibility constraints of planar, radial and
Sylvester steps under adversarial parameters, and fits to a correlated Gaussian target
where structure must beat the mean-field optimum.
"""

from __future__ import annotations

import inspect
import io
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch import Tensor
from torch.autograd.functional import jacobian

from vaeflow.errors import ConfigError
from vaeflow.posteriors import POSTERIORS, FlowPosterior, Posterior
from vaeflow.posteriors.base import standard_normal_log_prob
from vaeflow.posteriors.flows.planar import PlanarStep
from vaeflow.posteriors.flows.radial import RadialStep
from vaeflow.posteriors.flows.sylvester import VARIANTS, SylvesterStep, bjorck_orthonormalize

D, F = 3, 4
SMALL = {"hidden_dims": [16, 16]}
FAMILIES: dict[str, dict[str, Any]] = {
    "mean_field": {"name": "mean_field"},
    "full_cov": {"name": "full_cov"},
    "autoregressive": {"name": "autoregressive", **SMALL},
    "iaf": {"name": "iaf", "depth": 2, **SMALL},
    "maf": {"name": "maf", "depth": 2, **SMALL},
    "realnvp": {"name": "realnvp", "depth": 2, **SMALL},
    "planar": {"name": "planar", "depth": 2},
    "radial": {"name": "radial", "depth": 2},
    "householder": {"name": "householder", "depth": 2},
    "sylvester-orthogonal": {"name": "sylvester", "depth": 2, "variant": "orthogonal", "num_ortho_vecs": 2},
    "sylvester-householder": {
        "name": "sylvester",
        "depth": 2,
        "variant": "householder",
        "num_householder": 2,
    },
    "sylvester-triangular": {"name": "sylvester", "depth": 2, "variant": "triangular"},
    "nsf_ar": {"name": "nsf_ar", "depth": 2, "bins": 4, **SMALL},
    "nsf_maf": {"name": "nsf_maf", "depth": 2, "bins": 4, **SMALL},
    "nsf_coupling": {"name": "nsf_coupling", "depth": 2, "bins": 4, **SMALL},
    # splines on a narrow interval: many points in the identity tails and across its ends
    "nsf_ar-narrow": {"name": "nsf_ar", "depth": 2, "bins": 2, "tail_bound": 0.5, "order": "random", **SMALL},
    "nsf_maf-narrow": {"name": "nsf_maf", "depth": 2, "bins": 3, "tail_bound": 0.5, **SMALL},
    "nsf_coupling-narrow": {
        "name": "nsf_coupling",
        "depth": 2,
        "bins": 2,
        "tail_bound": 0.5,
        "mask": "half",
        **SMALL,
    },
}
CASES = list(FAMILIES)
CONF = Path(__file__).resolve().parents[1] / "conf" / "posterior"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    r"""These tensors are tiny: one intra-op thread is faster, and much faster when other
    processes share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def is_flow(name: str) -> bool:
    return "depth" in inspect.signature(POSTERIORS.entries[name]).parameters


def build(
    case: str, depth: int | None = None, latent_dim: int = D, seed: int = 0, **options: Any
) -> Posterior:
    torch.manual_seed(seed)
    cfg = {**FAMILIES[case], **options}
    if depth is not None:
        cfg["depth"] = depth
    q = POSTERIORS.build(cfg, latent_dim=latent_dim, feature_dim=F).double()
    with torch.no_grad():  # a head that starts at zero (full_cov's off-diagonal) must be tested non-zero
        for p in q.parameters():
            if not p.any():
                p.normal_(0.0, 0.3)
    return q


def randn(*shape: int, scale: float = 1.0) -> Tensor:
    return scale * torch.randn(*shape, dtype=torch.float64)


def has_inverse(q: Posterior, h: Tensor, z: Tensor) -> bool:
    try:
        q.log_prob(z, h)
    except NotImplementedError:
        return False
    return True


def per_sample_jacobians(f: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    r"""The ``[D, D]`` Jacobians of ``f`` at each of the ``n * B`` rows of ``x [n, B, D]``,
    after checking that no output row depends on another input row (no mixing of samples
    or examples)."""
    n, b, d = x.shape
    jac = jacobian(f, x).reshape(n * b, d, n * b, d)
    rows = torch.arange(n * b)
    blocks = jac[rows, :, rows, :]
    off = jac.clone()
    off[rows, :, rows, :] = 0
    assert torch.count_nonzero(off) == 0, "a sample's z depends on another sample or example"
    return blocks


# -- the table covers the registry -------------------------------------------------------


def test_every_registered_family_is_tested():
    assert {c["name"] for c in FAMILIES.values()} == set(POSTERIORS.names())
    assert {c["variant"] for c in FAMILIES.values() if c["name"] == "sylvester"} == set(VARIANTS)


@pytest.mark.parametrize("name", POSTERIORS.names())
def test_config_file_describes_the_family(name: str):
    text = (CONF / f"{name}.yaml").read_text()
    assert text.startswith("# ")
    cfg = yaml.safe_load(text)
    assert cfg["name"] == name
    if is_flow(name):
        assert cfg["depth"] == 4
    options = {k: v for k, v in cfg.items() if k != "name"}
    inspect.signature(POSTERIORS.entries[name]).bind(latent_dim=D, feature_dim=F, **options)


@pytest.mark.parametrize(
    ("case", "options", "match"),
    [
        ("maf", {"order": "sideways"}, "posterior.order"),
        ("autoregressive", {"order": [0, 0, 1]}, "not a permutation"),
        ("autoregressive", {"max_log_scale": 0.0}, "max_log_scale"),
        ("realnvp", {"mask": "zebra"}, "posterior.mask"),
        ("realnvp", {"hidden_dims": []}, "hidden_dims"),
        ("realnvp", {"latent_dim": 1}, "latent_dim >= 2"),
        ("iaf", {"hidden_dims": []}, "hidden_dims"),
        ("sylvester-orthogonal", {"num_ortho_vecs": D + 1}, "num_ortho_vecs"),
        ("sylvester-orthogonal", {"variant": "diagonal"}, "variant"),
        ("sylvester-householder", {"num_householder": 0}, "num_householder"),
        ("planar", {"depth": 0}, "depth"),
    ],
)
def test_bad_options_are_config_errors(case: str, options: dict[str, Any], match: str):
    with pytest.raises(ConfigError, match=match):
        build(case, **options)


# -- shapes, gradients, amortization -----------------------------------------------------


@pytest.mark.parametrize("n", [1, 7])
@pytest.mark.parametrize("case", CASES)
def test_shapes_and_every_parameter_gets_a_gradient(case: str, n: int):
    q = build(case)
    h = randn(5, F, scale=2.0).requires_grad_()
    z, log_q = q(h, n)
    assert z.shape == (n, 5, D) and log_q.shape == (n, 5)
    assert z.dtype == log_q.dtype == torch.float64
    assert torch.isfinite(z).all() and torch.isfinite(log_q).all()
    ((z * randn(*z.shape)).sum() + z.square().sum() + log_q.sum()).backward()
    for name, p in q.named_parameters():
        assert p.grad is not None, f"{name} gets no gradient"
        assert p.grad.abs().sum() > 0, f"{name} gets an all-zero gradient"
    assert h.grad.abs().sum() > 0


@pytest.mark.parametrize("case", [c for c in CASES if is_flow(FAMILIES[c]["name"])])
def test_every_flow_step_is_amortized(case: str):
    q = build(case)
    assert isinstance(q, FlowPosterior)
    z = randn(2, 5, D)
    for k, step in enumerate(q.steps):
        h = randn(5, F).requires_grad_()
        y, ladj = step(z, h)
        assert y.shape == z.shape and ladj.shape == z.shape[:-1]
        (grad,) = torch.autograd.grad((y * randn(*y.shape)).sum() + ladj.sum(), h)
        assert grad.abs().sum() > 0, f"step {k} does not depend on the features"


# -- log q against the autograd Jacobian, and the inverse ---------------------------------

JACOBIAN_CASES = [(c, d) for c in CASES if is_flow(FAMILIES[c]["name"]) for d in (1, 2, 5)] + [
    (c, None) for c in CASES if not is_flow(FAMILIES[c]["name"])
]


@pytest.mark.parametrize(("case", "depth"), JACOBIAN_CASES, ids=[f"{c}-{d}" for c, d in JACOBIAN_CASES])
def test_log_q_is_the_change_of_variables_of_the_whole_map(case: str, depth: int | None):
    q = build(case, depth)
    for trial in range(2):
        h, eps = randn(3, F, scale=1.0 + trial), randn(2, 3, D)
        z, log_q = q.reparameterize(h, eps)
        blocks = per_sample_jacobians(lambda e, h=h: q.reparameterize(h, e)[0], eps)
        sign, logabsdet = torch.linalg.slogdet(blocks)
        assert (sign != 0).all()
        expected = standard_normal_log_prob(eps) - logabsdet.reshape(2, 3)
        torch.testing.assert_close(log_q, expected, atol=1e-8, rtol=0)
        if has_inverse(q, h, z):
            torch.testing.assert_close(q.log_prob(z, h), log_q, atol=1e-8, rtol=0)


@pytest.mark.parametrize(
    "case", ["iaf", "maf", "realnvp", "householder", "nsf_ar", "nsf_maf", "nsf_coupling"]
)
def test_flow_inverse_recovers_the_base_sample(case: str):
    q = build(case, depth=3)
    h, z0 = randn(4, F), randn(3, 4, D)
    z = z0
    for step in q.steps:
        z, _ = step(z, h)
    for step in reversed(q.steps):
        z, _ = step.inverse(z, h)
    torch.testing.assert_close(z, z0, atol=1e-10, rtol=0)


# -- autoregressive structure -------------------------------------------------------------


def assert_triangular(jac: Tensor, order: Tensor) -> None:
    r"""Zero above the diagonal once rows and columns follow ``order``; a non-zero diagonal
    and some dependence below it (so that the check is not vacuous)."""
    permuted = jac[order][:, order]
    assert torch.count_nonzero(permuted.triu(1)) == 0, permuted
    assert (permuted.diagonal() != 0).all()
    assert torch.count_nonzero(permuted.tril(-1)) > 0


@pytest.mark.parametrize("order", ["reverse", "random"])
@pytest.mark.parametrize("case", ["iaf", "maf", "nsf_ar", "nsf_maf"])
def test_autoregressive_flow_steps_have_triangular_jacobians(case: str, order: str):
    q = build(case, depth=3, latent_dim=4, order=order)
    h, z = randn(1, F), randn(1, 1, 4)
    orders = []
    for step in q.steps:
        jac = jacobian(lambda x, step=step: step(x, h)[0], z)[0, 0, :, 0, 0, :]
        assert_triangular(jac, step.order)
        orders.append(step.order.tolist())
    assert orders[0] != orders[1], "the order does not change between steps"


@pytest.mark.parametrize("order", ["natural", "reverse", "random", [2, 0, 3, 1]])
def test_autoregressive_posterior_has_a_triangular_jacobian(order: str | list[int]):
    q = build("autoregressive", latent_dim=4, order=order)
    if isinstance(order, list):
        assert q.order.tolist() == order
    h, eps = randn(1, F), randn(1, 1, 4)
    jac = jacobian(lambda e: q.reparameterize(h, e)[0], eps)[0, 0, :, 0, 0, :]
    assert_triangular(jac, q.order)


# -- save / load ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_state_dict_round_trip(case: str):
    q, other = build(case, seed=0), build(case, seed=1)
    h, eps = randn(4, F), randn(3, 4, D)
    z, log_q = q.reparameterize(h, eps)
    assert not torch.equal(other.reparameterize(h, eps)[0], z)
    buffer = io.BytesIO()
    torch.save(q.state_dict(), buffer)
    buffer.seek(0)
    other.load_state_dict(torch.load(buffer, weights_only=True))
    z2, log_q2 = other.reparameterize(h, eps)
    assert torch.equal(z, z2) and torch.equal(log_q, log_q2)


# -- closed-form KL -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "case", [c for c in CASES if getattr(POSTERIORS.entries[FAMILIES[c]["name"]], "has_analytic_kl", False)]
)
def test_analytic_kl_matches_monte_carlo(case: str):
    q = build(case)
    h = randn(3, F, scale=1.5)
    with torch.no_grad():
        z, log_q = q(h, 20000)
        terms = log_q - standard_normal_log_prob(z)
        mean, se = terms.mean(0), terms.std(0) / math.sqrt(terms.shape[0])
        analytic = q.analytic_kl(h)
    assert analytic.shape == (3,)
    assert ((mean - analytic).abs() < 4 * se).all(), (mean, analytic, se)


@pytest.mark.parametrize(
    "case", [c for c in CASES if getattr(POSTERIORS.entries[FAMILIES[c]["name"]], "has_analytic_kl", False)]
)
def test_sample_with_kl_is_forward_and_analytic_kl_in_one_call(case: str):
    q = build(case)
    h = randn(4, F)
    torch.manual_seed(3)
    z, log_q, kl = q.sample_with_kl(h, q.noise(h, 2))
    torch.manual_seed(3)
    z_ref, log_q_ref = q(h, 2)
    assert torch.equal(z, z_ref) and torch.equal(log_q, log_q_ref)
    assert torch.equal(kl, q.analytic_kl(h))


def test_families_without_a_closed_form_say_so():
    for case in CASES:
        q = build(case)
        if not q.has_analytic_kl:
            with pytest.raises(NotImplementedError):
                q.analytic_kl(randn(2, F))


# -- invertibility constraints under adversarial parameters -------------------------------


def assert_injective_locally(step: torch.nn.Module, h: Tensor, points: int = 200) -> None:
    r"""``ladj`` finite at many points, and equal to ``log det`` of the autograd Jacobian,
    whose sign is positive (the step preserves orientation, so it is locally injective)."""
    z = randn(points, h.shape[0], D, scale=3.0)
    _, ladj = step(z, h)
    assert torch.isfinite(ladj).all()
    few = z[:10]
    sign, logabsdet = torch.linalg.slogdet(per_sample_jacobians(lambda x: step(x, h)[0], few))
    assert (sign > 0).all()
    torch.testing.assert_close(logabsdet.reshape(10, -1), step(few, h)[1], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("scale", [1.0, 10.0, 1e3])
def test_planar_u_hat_keeps_the_step_invertible(scale: float):
    torch.manual_seed(0)
    step = PlanarStep(D, F).double()
    with torch.no_grad():  # w = -scale * u for every h: w^T u = -scale ||u||^2 < -1
        step.u.weight.copy_(randn(D, F))
        step.u.bias.copy_(randn(D))
        step.w.weight.copy_(-scale * step.u.weight)
        step.w.bias.copy_(-scale * step.u.bias)
    h = randn(6, F)
    assert ((step.w(h) * step.u(h)).sum(-1) < -1).all()  # the raw parameters violate it
    u_hat, w, b = step.params(h)
    assert ((w * u_hat).sum(-1) >= -1 - 1e-9).all()
    assert_injective_locally(step, h)
    # Injective: along w the map is a + (w^T u_hat) tanh(a), strictly increasing.
    s = torch.linspace(-20, 20, 4001, dtype=torch.float64)
    direction = w / w.norm(dim=-1, keepdim=True)
    line = randn(1, 6, D) + s[:, None, None] * direction
    y, _ = step(line, h)
    assert ((y * direction).sum(-1).diff(dim=0) > 0).all()


@pytest.mark.parametrize("raw_beta", [-5.0, -50.0, -800.0])
def test_radial_beta_stays_above_minus_alpha(raw_beta: float):
    torch.manual_seed(0)
    step = RadialStep(D, F).double()
    with torch.no_grad():
        step.beta.weight.zero_()
        step.beta.bias.fill_(raw_beta)
    h = randn(6, F)
    z0, alpha, beta = step.params(h)
    assert (alpha > 0).all() and (beta >= -alpha).all()
    assert_injective_locally(step, h)
    # Injective: along any ray from z0 the radius r (1 + beta / (alpha + r)) strictly increases.
    r = torch.linspace(1e-3, 10, 2000, dtype=torch.float64)[:, None, None]
    direction = randn(1, 6, D)
    direction = direction / direction.norm(dim=-1, keepdim=True)
    y, _ = step(z0 + r * direction, h)
    assert ((y - z0).norm(dim=-1).diff(dim=0) > 0).all()


@pytest.mark.parametrize("variant", VARIANTS)
def test_sylvester_diagonal_constraint_under_saturation(variant: str):
    torch.manual_seed(0)
    step = SylvesterStep(D, F, variant=variant).double()
    m = step.num_ortho_vecs
    with torch.no_grad():  # tanh saturates: R_ii R~_ii rounds to -1
        step.r_diag.weight.zero_()
        step.r_diag.bias.copy_(torch.cat([torch.full((m,), 40.0), torch.full((m,), -40.0)]))
    h = randn(6, F)
    q, r, r_tilde, _ = step.params(h)
    assert (r.diagonal(dim1=-2, dim2=-1) * r_tilde.diagonal(dim1=-2, dim2=-1) >= -1).all()
    assert torch.equal(r, r.triu()) and torch.equal(r_tilde, r_tilde.triu())
    assert_injective_locally(step, h)


def test_bjorck_gives_orthonormal_columns():
    q = bjorck_orthonormalize(randn(8, 5, 3))
    torch.testing.assert_close(
        q.mT @ q, torch.eye(3, dtype=torch.float64).expand(8, 3, 3), atol=1e-12, rtol=0
    )
    assert SylvesterStep(6, F).num_ortho_vecs == 3  # default M = D // 2, as in the paper
    for m in (2, D):  # rectangular and square Q
        q = build("sylvester-orthogonal", num_ortho_vecs=m).steps[0].orthonormal(randn(4, F))
        assert q.shape == (4, D, m)
        eye = torch.eye(m, dtype=torch.float64).expand(4, m, m)
        torch.testing.assert_close(q.mT @ q, eye, atol=1e-12, rtol=0)


def test_bjorck_checked_rarely_gives_the_same_columns(monkeypatch):
    # on a GPU the convergence check (a host read) runs every 10 iterations: iterating past
    # convergence stays at the same orthonormal Q, up to rounding
    a = randn(16, 6, 3) * torch.linspace(0.05, 3.0, 3, dtype=torch.float64)  # unequal columns
    every = bjorck_orthonormalize(a, check_every=1)
    rarely = bjorck_orthonormalize(a, check_every=10)
    torch.testing.assert_close(rarely, every, atol=1e-12, rtol=0)
    checks = []
    real = torch.Tensor.__le__
    monkeypatch.setattr(torch.Tensor, "__le__", lambda t, other: checks.append(1) or real(t, other))
    bjorck_orthonormalize(a, check_every=10)
    assert 1 <= len(checks) <= 3  # against one check per iteration (about 20 here)
    checks.clear()
    bjorck_orthonormalize(a, check_every=1)
    assert len(checks) > 10


# -- structure really helps: fits to a correlated Gaussian -------------------------------

TARGET_COV = torch.tensor([[1.0, 0.9], [0.9, 1.0]], dtype=torch.float64)
# The best mean-field q of a Gaussian with precision L has variances 1 / L_ii, and
# KL(q || p*) = (sum_i log L_ii - log det L) / 2: here log(1 / 0.19) / 2 = 0.830 nats.
PRECISION = torch.linalg.inv(TARGET_COV)
MEAN_FIELD_KL = 0.5 * (PRECISION.diagonal().log().sum() - torch.logdet(PRECISION)).item()
STRUCTURED = ["full_cov", "autoregressive", "iaf", "maf", "realnvp", "householder"] + [
    c for c in CASES if c.startswith("sylvester")
]


def fit_to_target(case: str, steps: int = 500, samples: int = 128, final_samples: int = 100_000) -> float:
    r"""Fits ``q(z|x)`` for one fixed x to ``p* = N(0, TARGET_COV)`` by maximizing
    ``E_q[log p*(z) - log q(z)]``; returns the Monte Carlo ``KL(q || p*)``."""
    target = torch.distributions.MultivariateNormal(torch.zeros(2, dtype=torch.float64), TARGET_COV)
    q = build(case, latent_dim=2)
    h = randn(1, F)
    optimizer = torch.optim.Adam(q.parameters(), lr=1e-2)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    for _ in range(steps):
        z, log_q = q(h, samples)
        loss = (log_q - target.log_prob(z)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    with torch.no_grad():
        z, log_q = q(h, final_samples)
        return (log_q - target.log_prob(z)).mean().item()


def test_full_cov_starts_at_mean_field():
    torch.manual_seed(0)
    q = POSTERIORS.build({"name": "full_cov"}, latent_dim=D, feature_dim=F)
    h = torch.randn(5, F)
    _, scale, log_sigma = q.params(h)
    assert torch.equal(scale, torch.diag_embed(log_sigma.exp()))


@pytest.mark.parametrize("name", ["autoregressive", "maf"])
def test_made_families_start_without_dependence_between_latents(name: str):
    # mu and sigma start as functions of h alone: the autoregressive posterior starts at
    # mean-field, a MAF step as an elementwise affine map.
    torch.manual_seed(0)
    options = {"name": name, "hidden_dims": [16], **({"depth": 2} if name == "maf" else {})}
    q = POSTERIORS.build(options, latent_dim=D, feature_dim=F)
    transform = q.transform if name == "autoregressive" else q.steps[0].transform
    h = torch.randn(5, F)
    mu1, s1 = transform.params(torch.randn(5, D), h)
    mu2, s2 = transform.params(torch.randn(5, D), h)
    assert torch.equal(mu1, mu2) and torch.equal(s1, s2)
    assert mu1.std() > 0  # but they do depend on h


@pytest.mark.parametrize("case", STRUCTURED)
def test_structured_families_fit_a_correlated_gaussian(case: str):
    assert fit_to_target(case) < 0.05


def test_mean_field_stops_at_its_analytic_optimum():
    assert MEAN_FIELD_KL > 0.8
    kl = fit_to_target("mean_field", final_samples=1_000_000)
    assert abs(kl - MEAN_FIELD_KL) < 0.01


@pytest.mark.parametrize("case", ["planar", "radial"])
def test_planar_and_radial_beat_mean_field(case: str):
    assert fit_to_target(case) < MEAN_FIELD_KL - 0.2
