"""posterior.png: true and approximate posteriors of 2-latent runs on the same grid, and the
report's inference-gap table and active units."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra

from vaeflow.evaluate import load_trained, quadrature
from vaeflow.report import collect, gap_rows, table_rows, write_report
from vaeflow.report.posterior import MASS_LEVELS, posterior_panels
from vaeflow.training import train

FAST = ["model.latent_dim=2", "trainer.max_epochs=8", "trainer.progress=plain", "trainer.iw_every=0",
        "trainer.images=0", "trainer.iw_limit=50", "trainer.threads=1"]  # fmt: skip


@pytest.fixture(scope="module")
def runs_2d(tmp_path_factory) -> Path:
    """Two 2-latent digits runs: one family with a density (iaf), one without (planar)."""
    root = tmp_path_factory.mktemp("two_d")
    for family in ("iaf", "planar"):
        GlobalHydra.instance().clear()
        with initialize_config_module("vaeflow.conf", version_base="1.3"):
            overrides = [f"posterior={family}", "posterior.depth=2", *FAST]
            if family == "iaf":
                overrides.append("posterior.hidden_dims=[16]")
            cfg = compose("train", overrides=overrides, return_hydra_config=False)
        run = root / family
        train(cfg, run)
        (run / ".hydra").mkdir()
        (run / ".hydra" / "config.yaml").write_text(json.dumps(json.loads(json.dumps(dict_of(cfg)))))
    return root


def dict_of(cfg) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)


@pytest.mark.parametrize("family", ["iaf", "planar"])
def test_the_panels_are_normalized_densities_and_say_the_kl(runs_2d, family):
    trained = load_trained(runs_2d / family)
    panels = posterior_panels(trained.model, trained.data.test, images=3, samples=20_000)
    exact = quadrature(trained.model, trained.data.test.images[[0]])  # any image: the grid's own check
    assert exact.error.item() < 1e-3
    for panel in panels:
        cell = math.prod(float(e[1] - e[0]) for e in panel.edges)
        assert abs(float(panel.p.sum()) * cell - 1) < 1e-3  # p(z|x) integrates to 1 on its grid
        q_cell = math.prod(float(e[1] - e[0]) for e in panel.q_edges)
        mass = float(panel.q.sum()) * q_cell
        assert 0.97 < mass <= 1 + 1e-6  # q's density (or histogram) on the same box
        assert panel.q_density == (family == "iaf")
        assert panel.kl > -3 * panel.kl_se  # KL(q || p(z|x)) >= 0, within its Monte Carlo error
        assert len(panel.levels) == len(MASS_LEVELS) and panel.levels == sorted(panel.levels)
        (x0, x1), (y0, y1) = panel.view
        assert float(panel.edges[0][0]) <= x0 < x1 <= float(panel.edges[0][-1])


def test_the_report_draws_posterior_png_for_2d_runs(runs_2d, tmp_path):
    import matplotlib.image

    runs, sweeps = collect([runs_2d])
    files = write_report(runs, tmp_path / "out", sweeps)
    assert "posterior" in files and "posterior.png" in files["markdown"].read_text()
    pixels = matplotlib.image.imread(files["posterior"])
    assert pixels.shape[0] > 300 and pixels[..., :3].std() > 0.05  # two rows of panels, not blank


def test_the_gap_table_and_active_units(tmp_path):
    run = tmp_path / "runs" / "a"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text(
        "dataset:\n  name: digits\nposterior:\n  name: planar\n  depth: 4\nseed: 0\nmodel:\n  latent_dim: 16\n"
        "trainer:\n  max_epochs: 5\n"
    )
    (run / "metrics.json").write_text(
        json.dumps({"status": "completed", "test/elbo": -30.0, "test/iw_nll": 29.0})
    )
    gaps = {"n": 50, "k": 5000, "log_px_rule": "the largest of the IW estimates",
            "rows": {"approximation_same": {"mean": 0.5, "se": 0.05}, "amortization_same": {"mean": 1.25, "se": 0.1},
                     "inference": {"mean": 1.75, "se": 0.12}, "approximation": {"mean": 0.25, "se": 0.03},
                     "amortization": {"mean": 1.5, "se": 0.1}}}  # fmt: skip
    evaluation = {"eval/iw_nll": 28.5, "eval/iw_nll_se": 0.2, "eval/elbo": -30.0, "eval/active_units": 5,
                  "eval/gaps/approximation": 0.5, "split": "test", "k": 5000, "gaps": gaps}  # fmt: skip
    (run / "eval" / "e").mkdir(parents=True)
    (run / "eval" / "e" / "eval.json").write_text(json.dumps(evaluation))
    runs, sweeps = collect([tmp_path / "runs"])
    header, [row] = table_rows(runs)
    assert row[header.index("active units")] == "5/16"
    assert row[header.index("test NLL ± se")] == "28.50 ± 0.20" and row[header.index("k")] == "5000"
    # with an exact NLL (1 or 2 latents), the report shows it rather than the estimate
    (run / "eval" / "e" / "eval.json").write_text(
        json.dumps(evaluation | {"eval/quad_nll": 27.0, "eval/quad_nll_se": 0.3})
    )
    runs, sweeps = collect([tmp_path / "runs"])
    header, [row] = table_rows(runs)
    assert row[header.index("test NLL ± se")] == "27.00 ± 0.30" and row[header.index("k")] == "quadrature"
    header, [row] = gap_rows(runs)
    assert row[header.index("approximation gap")] == "0.500 ± 0.050"
    assert row[header.index("amortization gap")] == "1.250 ± 0.100"  # the family's (Cremer et al.)
    assert row[header.index("gap of a flexible local q")] == "0.250 ± 0.030"
    assert row[header.index("log p(x) by")] == "largest IW, k=5000" and row[header.index("images")] == "50"
    files = write_report(runs, tmp_path / "out", sweeps, samples=False)
    markdown = files["markdown"].read_text()
    assert "## Inference gaps" in markdown and "gaps.png" in markdown and files["gaps"].stat().st_size > 1000
    assert "posterior" not in files  # 16 latents: no posterior figure


def test_a_one_latent_run_gets_curves(tmp_path):
    GlobalHydra.instance().clear()
    with initialize_config_module("vaeflow.conf", version_base="1.3"):
        overrides = ["posterior=planar", "posterior.depth=2", *FAST, "model.latent_dim=1"]
        cfg = compose("train", overrides=overrides, return_hydra_config=False)
    run = tmp_path / "one"
    train(cfg, run)
    (run / ".hydra").mkdir()
    (run / ".hydra" / "config.yaml").write_text(json.dumps(dict_of(cfg)))
    trained = load_trained(run)
    [panel] = posterior_panels(trained.model, trained.data.test, images=1, samples=20_000)
    assert len(panel.edges) == 1 and panel.p.dim() == 1 and not panel.q_density
    cell = float(panel.edges[0][1] - panel.edges[0][0])
    assert abs(float(panel.p.sum()) * cell - 1) < 1e-3
    runs, sweeps = collect([run])
    files = write_report(runs, tmp_path / "out", sweeps)
    assert files["posterior"].stat().st_size > 1000
