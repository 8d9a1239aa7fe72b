r"""Tests of ``vaeflow eval``: the importance-weighted estimator, the inference gaps, the command.

The exactness tests use a linear-Gaussian VAE whose marginal is known in closed form:
``z ~ N(0, I)``, ``x | z ~ N(W z + b, sigma^2 I)``, so ``p(x) = N(b, W W^T + sigma^2 I)`` and
``p(z|x) = N(S W^T (x - b) / sigma^2, S)`` with ``S = (I + W^T W / sigma^2)^{-1}``.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from model_helpers import LinearGaussian
from torch import Tensor

from vaeflow.commands.eval import check_runs, quote, rewrite_argv
from vaeflow.errors import CheckpointError, ConfigError
from vaeflow.evaluate import (
    CPU_CHUNK_MB,
    GPU_CHUNK_MB,
    SAMPLE_BLOCK,
    LocalPosterior,
    chunk_budget_mb,
    evaluate,
    importance_weighted,
    inference_gaps,
    pairs_per_chunk,
    plan_chunks,
    run_dir_of,
)
from vaeflow.model import VAE, build_model
from vaeflow.randomness import example_noise


def mlp_model(dtype: torch.dtype = torch.float32, latent: int = 3) -> VAE:
    cfg = {
        "model": {"latent_dim": latent},
        "encoder": {"name": "mlp", "hidden_dims": [16]},
        "decoder": {"name": "mlp", "hidden_dims": [16]},
        "posterior": {"name": "mean_field"},
        "prior": {"name": "standard_normal"},
    }
    torch.manual_seed(0)
    return build_model(cfg, (1, 4, 4)).to(dtype).eval()


def binary_images(n: int, dtype: torch.dtype = torch.float32) -> Tensor:
    return torch.bernoulli(torch.full((n, 1, 4, 4), 0.4), generator=torch.Generator().manual_seed(3)).to(
        dtype
    )


# ----------------------------------------------------------------------------------------
# The estimator
# ----------------------------------------------------------------------------------------


def test_bound_is_at_least_the_elbo_and_equals_it_for_k1():
    model, x = mlp_model(), binary_images(12)
    est = importance_weighted(model, x, 64, seed=1)
    assert est.log_px.shape == est.elbo.shape == est.kl.shape == (12,)
    assert (est.log_px >= est.elbo - 1e-9).all()
    assert torch.allclose(est.rec - est.kl, est.elbo, atol=1e-5)
    assert ((est.ess >= 1 - 1e-9) & (est.ess <= 64 + 1e-9)).all()
    one = importance_weighted(model, x, 1, seed=1)
    assert torch.allclose(one.log_px, one.elbo, atol=1e-6, rtol=0)
    # k=1 uses the first sample of the k=64 run: the same ELBO term for that sample
    first = importance_weighted(model, x, 1, seed=1, max_pairs=1)
    assert torch.allclose(first.log_px, one.log_px, atol=1e-5)


def test_exact_posterior_gives_exact_log_px_with_zero_variance():
    lg = LinearGaussian(orthogonal=True)
    x = lg.sample(10)
    est = importance_weighted(lg.model(), x, 8)
    exact = lg.log_px(x)
    assert torch.allclose(est.log_px, exact, atol=1e-9, rtol=0)
    assert torch.allclose(est.elbo, exact, atol=1e-9, rtol=0)
    assert torch.allclose(est.ess, torch.full_like(est.ess, 8.0))


def test_estimate_matches_closed_form_within_its_standard_error():
    lg = LinearGaussian(orthogonal=False)
    x = lg.sample(16)
    # a wider, shifted mean-field proposal: weights vary, but have a finite variance
    model = lg.model(mean_shift=0.2, log_sigma_shift=math.log(1.5))
    est = importance_weighted(model, x, 20_000, seed=0)
    exact = lg.log_px(x)
    diff = est.log_px - exact
    se = est.mc_se
    assert (se > 1e-4).all() and (se < 0.05).all()
    assert (diff.abs() <= 4 * se + 1e-6).all(), (diff, se)
    assert abs(diff.mean()) <= 3 * se.square().sum().sqrt() / len(diff)
    assert (est.elbo < exact).all()  # the ELBO is strictly below: q is not the posterior


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 2e-4)])
def test_chunked_and_unchunked_agree(dtype, tol):
    model, x = mlp_model(dtype), binary_images(7, dtype)
    k = SAMPLE_BLOCK * 2 + 37  # several blocks of samples, a ragged end
    whole = importance_weighted(model, x, k, seed=5, max_pairs=10**9)
    assert plan_chunks(k, 7, 10**9) == (7, k)
    for kwargs in (
        {"max_pairs": 100},
        {"max_pairs": 1000, "batch_size": 3},
        {"max_pairs": 300, "batch_size": 2},
    ):
        part = importance_weighted(model, x, k, seed=5, **kwargs)
        for name in ("log_px", "elbo", "rec", "kl"):
            a, b = getattr(whole, name), getattr(part, name)
            assert torch.allclose(a, b, atol=tol * max(1.0, a.abs().max().item()), rtol=0), (name, kwargs)
        assert torch.allclose(whole.ess, part.ess, rtol=1e-3)


def test_fixed_seed_repeats_and_examples_are_independent_of_the_subset():
    model, x = mlp_model(torch.float64), binary_images(9, torch.float64)
    a = importance_weighted(model, x, 300, seed=11)
    b = importance_weighted(model, x, 300, seed=11)
    assert torch.equal(a.log_px, b.log_px) and torch.equal(a.elbo, b.elbo)
    c = importance_weighted(model, x, 300, seed=12)
    assert not torch.equal(a.log_px, c.log_px)
    pick = [2, 5, 8]
    sub = importance_weighted(model, x[pick], 300, seed=11, ids=pick)
    assert torch.allclose(sub.log_px, a.log_px[pick], atol=1e-10, rtol=0)


def test_noise_does_not_depend_on_the_range_asked_for():
    whole = example_noise([3, 9], 0, 600, 4, seed=2)
    part = example_noise([9], 250, 530, 4, seed=2)
    assert torch.equal(part[:, 0], whole[250:530, 1])
    assert abs(whole.mean().item()) < 0.1 and abs(whole.std().item() - 1) < 0.1


def test_k_below_one_is_a_config_error():
    with pytest.raises(ConfigError, match="k=0"):
        importance_weighted(mlp_model(), binary_images(2), 0)


def test_peak_memory_is_bounded_by_the_chunk_not_by_k():
    # the number of (example, sample) pairs alive at once never exceeds max_pairs
    model, x = mlp_model(), binary_images(3)
    seen = []
    decoder_forward = model.decoder.forward
    model.decoder.forward = lambda z: (seen.append(z.shape[0] * z.shape[1]), decoder_forward(z))[1]
    importance_weighted(model, x, 5000, max_pairs=512)
    assert max(seen) <= 512 and sum(seen) == 3 * 5000


def test_the_chunk_budget_is_the_one_given_else_the_device_default():
    # sequential posteriors (maf) run faster in chunks larger than the CPU default
    model, x = mlp_model(), binary_images(1)
    default, per_pair = pairs_per_chunk(model, x)
    assert default == CPU_CHUNK_MB * 2**20 // per_pair
    assert pairs_per_chunk(model, x, 1024)[0] == 1024 * 2**20 // per_pair > default
    assert chunk_budget_mb(None, torch.device("cuda")) == GPU_CHUNK_MB
    assert chunk_budget_mb(8, torch.device("cuda")) == 8


# ----------------------------------------------------------------------------------------
# Local posteriors and the inference gaps
# ----------------------------------------------------------------------------------------


def test_local_posterior_starts_at_the_amortized_one():
    model, x = mlp_model(torch.float64), binary_images(5, torch.float64)
    h = model.encoder(x)
    eps = torch.randn(6, 5, model.latent_dim, dtype=torch.float64)
    z0, lq0 = model.posterior.reparameterize(h, eps)
    for depth in (None, 3):
        local = LocalPosterior(
            model.posterior, h, flow_depth=depth, generator=torch.Generator().manual_seed(0)
        )
        z, lq = local.reparameterize(eps)
        assert torch.allclose(z, z0) and torch.allclose(lq, lq0)
        assert not any(p is q for p in local.parameters() for q in model.parameters())


def test_flexible_local_log_density_matches_the_jacobian():
    # log q of the per-example flow against a brute-force change of variables, in float64
    model = mlp_model(torch.float64, latent=2)
    h = model.encoder(binary_images(1, torch.float64))
    local = LocalPosterior(model.posterior, h, flow_depth=2, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for p in (local.lower, local.log_diag, local.shift, local.u, local.b):
            p.copy_(0.5 * torch.randn(p.shape, dtype=torch.float64))
    eps = torch.randn(1, 1, 2, dtype=torch.float64)
    z, log_q = local.reparameterize(eps)
    base = lambda e: model.posterior.reparameterize(h, e.view(1, 1, 2))[0].view(2)  # noqa: E731
    full = lambda e: local.reparameterize(e.view(1, 1, 2))[0].view(2)  # noqa: E731
    e = eps.view(2)
    z0, log_q0 = model.posterior.reparameterize(h, eps)
    jac_flow = torch.autograd.functional.jacobian(full, e) @ torch.linalg.inv(
        torch.autograd.functional.jacobian(base, e)
    )
    expected = log_q0.view(()) - torch.linalg.slogdet(jac_flow).logabsdet
    assert torch.allclose(log_q.view(()), expected, atol=1e-10)


def test_gaps_on_linear_gaussian_match_closed_form():
    lg = LinearGaussian(orthogonal=False, seed=3)
    x = lg.sample(12, seed=4)
    # amortized: the right mean, log sigma off by 0.4
    model = lg.model(log_sigma_shift=0.4)
    gaps = inference_gaps(model, x, k=2000, steps=300, lr=0.05, samples=32, flow_depth=1, seed=0)
    rows = {name: row["mean"] for name, row in gaps["rows"].items()}
    exact = lg.log_px(x).mean().item()
    # best mean-field vs the full-covariance posterior: KL = (sum log diag L - log det L) / 2
    mf_gap = 0.5 * (torch.log(torch.diagonal(lg.precision)).sum() - torch.logdet(lg.precision)).item()
    assert mf_gap > 0.05
    assert abs(rows["log_px"] - exact) < 0.02
    assert abs(rows["approximation_same"] - mf_gap) < 0.05
    assert abs(rows["approximation"]) < 0.05  # the affine step reaches the exact posterior
    assert rows["amortization_same"] > 0.05
    assert abs(rows["approximation"] + rows["amortization"] - rows["inference"]) < 1e-9
    assert all(math.isfinite(row["se"]) for row in gaps["rows"].values())


# ----------------------------------------------------------------------------------------
# The command
# ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from vaeflow.training import train

    GlobalHydra.instance().clear()
    with initialize_config_module("vaeflow.conf", version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "trainer.max_epochs=1",
                "trainer.progress=plain",
                "trainer.iw_every=0",
                "trainer.iw_k=2",
                "trainer.test=false",
                "trainer.images=0",
                "model.latent_dim=4",
                "encoder.hidden_dims=[32]",
                "decoder.hidden_dims=[32]",
            ],
        )
    run = tmp_path_factory.mktemp("train") / "run"
    train(cfg, run)
    return run


def eval_config(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_module("vaeflow.conf", version_base="1.3"):
        return compose("eval", overrides=overrides)


def test_evaluate_writes_its_own_directory(run_dir):
    before = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*"))
    cfg = eval_config(
        [
            f"run={run_dir}",
            "k=32",
            "limit=40",
            "progress=plain",
            "gaps.enabled=true",
            "gaps.n=6",
            "gaps.steps=4",
            "gaps.k=16",
        ]
    )
    out = run_dir / "eval" / "a"
    result = evaluate(cfg, out)
    written = json.loads((out / "eval.json").read_text())
    assert written["eval/iw_nll"] == pytest.approx(result["eval/iw_nll"])
    assert written["examples"] == 40 and written["k"] == 32
    assert written["eval/iw_nll"] <= -written["eval/elbo"]
    assert written["eval/iw_nll_se"] > 0
    assert written["eval/bits_per_dim"] == pytest.approx(written["eval/iw_nll"] / (64 * math.log(2)))
    for key in ("approximation", "amortization"):
        assert math.isfinite(written[f"eval/gaps/{key}"]) and written[f"eval/gaps/{key}_se"] > 0
    assert written["gaps"]["n"] == 6
    assert list((out / "tb").glob("events.out.tfevents.*"))
    per_example = torch.load(out / "per_example.pt", weights_only=True)
    assert per_example["log_px"].shape == (40,)
    after = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*") if "eval" not in p.parts)
    assert after == [p for p in before if "eval" not in p.parts]  # the training run's files are untouched

    # a checkpoint file works as well, and the same seed gives the same number
    again = evaluate(
        eval_config([f"run={run_dir / 'checkpoints' / 'best.pt'}", "k=32", "limit=40"]),
        run_dir / "eval" / "b",
    )
    assert again["eval/iw_nll"] == result["eval/iw_nll"]


@pytest.mark.parametrize(
    "overrides, error, match",
    [
        (["k=0"], ConfigError, "k=0"),
        (["split=holdout"], ConfigError, "split=holdout"),
        (["checkpoint=final"], ConfigError, "checkpoint=final"),
        (["memory_mb=0"], ConfigError, "memory_mb=0"),
        (["memory_mb=lots"], ConfigError, "memory_mb=lots"),
    ],
)
def test_bad_settings_are_one_line_errors(run_dir, tmp_path, overrides, error, match):
    with pytest.raises(error, match=match) as info:
        evaluate(eval_config([f"run={run_dir}", *overrides]), tmp_path / "out")
    assert "\n" not in str(info.value)


def test_missing_and_foreign_runs_are_one_line_errors(tmp_path, run_dir):
    with pytest.raises(ConfigError, match="no such file"):
        run_dir_of(tmp_path / "nothing")
    with pytest.raises(ConfigError, match="not a vaeflow run directory"):
        run_dir_of(tmp_path)
    with pytest.raises(ConfigError, match="no run given"):
        run_dir_of(None)
    assert run_dir_of(run_dir / "checkpoints" / "last.pt") == str(run_dir.resolve())
    assert run_dir_of(run_dir) == str(run_dir.resolve())
    lonely = tmp_path / "r" / "checkpoints"
    lonely.mkdir(parents=True)
    with pytest.raises(CheckpointError, match="checkpoint=last"):
        evaluate(eval_config([f"run={lonely.parent}"]), tmp_path / "out")


@pytest.mark.parametrize(
    "path", ["/r/a b", "/r/0_posterior=iaf,x=3", "/r/it's", "/r/back\\slash", "/r/end\\", "/r/[x]"]
)
def test_run_paths_survive_hydra_quoting(path):
    (override,) = OverridesParser.create().parse_overrides([f"run={quote(path)}"])
    assert override.value() == path


def test_argv_rewriting(tmp_path):
    odd = tmp_path / "0_posterior=iaf,trainer.max_epochs=3"
    (odd / "checkpoints").mkdir(parents=True)
    assert rewrite_argv(["outputs/train/x", "k=5"]) == ["run=outputs/train/x", "k=5"]
    assert rewrite_argv(["k=5", "gaps=true"]) == ["k=5", "gaps.enabled=true"]
    assert rewrite_argv(["--help"]) == ["--help"]
    (arg,) = rewrite_argv([str(odd)])
    (override,) = OverridesParser.create().parse_overrides([arg])
    assert override.key_or_group == "run" and override.value() == str(odd)
    assert check_runs([arg]) is None
    assert "no such file" in check_runs(["run=/no/such/run"])
    assert "no run given" in check_runs(["k=5"])
    assert "no such file" in check_runs([f"run={tmp_path / 'x'},{tmp_path / 'y'}"])
    assert check_runs(["--help"]) is None
    assert "no such file" in check_runs(["-cd", "my_conf", "run=/no/such/run"])


def test_cli_end_to_end(run_dir, tmp_path):
    cmd = [sys.executable, "-m", "vaeflow", "eval"]
    done = subprocess.run(
        [*cmd, str(run_dir), "k=8", "limit=10", "progress=plain"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    (out,) = [p for p in (run_dir / "eval").iterdir() if p.name.endswith("_test_k8")]
    assert json.loads((out / "eval.json").read_text())["examples"] == 10
    assert (out / "eval.log").exists() and (out / ".hydra" / "config.yaml").exists()
    assert not (tmp_path / "outputs").exists()

    missing = subprocess.run([*cmd, str(tmp_path / "nope")], cwd=tmp_path, capture_output=True, text=True)
    assert missing.returncode == 2
    assert missing.stderr.strip().count("\n") == 0 and missing.stderr.startswith("error: ")
    assert not (tmp_path / "nope").exists()


@pytest.fixture(scope="module")
def run_2d(tmp_path_factory) -> Path:
    from vaeflow.training import train

    GlobalHydra.instance().clear()
    with initialize_config_module("vaeflow.conf", version_base="1.3"):
        cfg = compose("train", overrides=["model.latent_dim=2", "trainer.max_epochs=15", "trainer.progress=plain",
                                          "trainer.iw_every=0", "trainer.test=false", "trainer.images=0"])  # fmt: skip
    run = tmp_path_factory.mktemp("train2d") / "run"
    train(cfg, run)
    return run


def test_a_2d_model_gets_its_exact_nll_beside_the_iw_estimate(run_2d):
    result = evaluate(
        eval_config([f"run={run_2d}", "k=500", "limit=60", "progress=plain"]), run_2d / "eval" / "q"
    )
    assert result["quadrature"]["points"] == 64 and result["eval/quad_error_max"] < 0.01
    # the IW estimate is a stochastic lower bound of log p(x): at or above the exact NLL
    assert -3 * result["eval/iw_deficit_se"] < result["eval/iw_deficit"] < 0.2
    assert result["eval/iw_nll"] == pytest.approx(result["eval/quad_nll"], abs=0.2)
    assert result["eval/active_units"] in (1, 2) and len(result["unit_variances"]) == 2
    per_example = torch.load(run_2d / "eval" / "q" / "per_example.pt", weights_only=True)
    assert per_example["log_px_quad"].shape == (60,) and per_example["z_mean"].shape == (60, 2)
    off = evaluate(
        eval_config([f"run={run_2d}", "k=50", "limit=5", "quadrature.enabled=false"]), run_2d / "eval" / "o"
    )
    assert "eval/quad_nll" not in off


def test_quadrature_needs_a_small_latent_space(run_dir, tmp_path):
    with pytest.raises(
        ConfigError, match="quadrature=true: the run has 4 latents and quadrature needs 1 or 2"
    ):
        evaluate(eval_config([f"run={run_dir}", "k=4", "limit=2", "quadrature.enabled=true"]), tmp_path / "q")
    with pytest.raises(ConfigError, match="quadrature=maybe: use quadrature=auto or quadrature=true or"):
        evaluate(
            eval_config([f"run={run_dir}", "k=4", "limit=2", "quadrature.enabled=maybe"]), tmp_path / "q"
        )
