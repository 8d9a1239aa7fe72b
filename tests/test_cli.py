"""The real command line, run as a user runs it (subprocesses)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_helpers import vaeflow as run
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

FAST = ["trainer.progress=plain", "trainer.iw_k=8", "trainer.threads=1"]


def test_help_lists_the_commands(tmp_path: Path):
    out = run("--help", cwd=tmp_path).stdout
    assert "train" in out
    module = subprocess.run([sys.executable, "-m", "vaeflow", "--help"], capture_output=True, text=True)
    assert module.returncode == 0 and "train" in module.stdout


def test_unknown_command_is_one_line_listing_the_known_ones(tmp_path: Path):
    result = run("trian", cwd=tmp_path, check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "trian" in lines[0] and "train" in lines[0].replace("trian", "")


def test_train_cfg_job_prints_the_composed_config_from_any_directory(tmp_path: Path):
    out = run("train", "posterior=iaf", "posterior.depth=2", "--cfg", "job", cwd=tmp_path).stdout
    assert "name: iaf" in out and "depth: 2" in out and "latent_dim" in out
    assert "Powered by Hydra" in run("train", "--help", cwd=tmp_path).stdout


def test_config_error_is_one_line_and_exits_non_zero(tmp_path: Path):
    result = run("train", "posterior=iaf", "kl=analytic", *FAST, cwd=tmp_path, check=False)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "error: kl=analytic: posterior=iaf has no closed-form KL to prior=standard_normal (only Gaussian "
        "posteriors against Gaussian priors have one); use kl=mc or kl=auto"
    ]
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize("posterior", ["mean_field", "iaf"])
def test_one_epoch_writes_events_checkpoints_and_metrics(tmp_path: Path, posterior: str):
    run_dir = tmp_path / "run"
    run(
        "train",
        f"posterior={posterior}",
        "trainer.max_epochs=1",
        f"hydra.run.dir={run_dir}",
        *FAST,
        cwd=tmp_path,
    )

    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    scalars, images = set(events.Tags()["scalars"]), set(events.Tags()["images"])
    for tag in ["elbo", "rec", "kl", "beta", "lr"]:
        assert f"train/{tag}" in scalars
    for tag in ["elbo", "rec", "kl"]:
        assert f"train_epoch/{tag}" in scalars and f"val/{tag}" in scalars
    assert {"val/iw_nll", "test/elbo", "test/iw_nll"} <= scalars
    assert {"val/samples", "val/reconstructions"} <= images

    for name in ["best.pt", "last.pt"]:
        state = torch.load(run_dir / "checkpoints" / name, weights_only=True)
        assert {"model", "optimizer", "epoch", "step", "config", "rng"} <= state.keys()
        assert state["epoch"] == 1 and state["config"]["posterior"]["name"] == posterior
        assert isinstance(state["config"], dict)
    assert not list((run_dir / "checkpoints").glob("*.tmp"))

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["epochs"] == 1
    assert metrics["test/elbo"] < 0 and metrics["test/iw_nll"] > 0
    assert 0 < metrics["test/elbo_se"] < 5 and 0 < metrics["test/iw_nll_se"] < 5
    # the IWAE bound is tighter than the ELBO: -iw_nll >= elbo, up to Monte Carlo noise
    assert -metrics["test/iw_nll"] > metrics["test/elbo"] - 1.0
    assert (run_dir / ".hydra" / "config.yaml").is_file()


def test_multirun_gives_each_job_its_own_directory(tmp_path: Path):
    sweep = tmp_path / "sweep"
    run(
        "train",
        "-m",
        "seed=1,2",
        "trainer.max_epochs=1",
        "trainer.images=0",
        f"hydra.sweep.dir={sweep}",
        *FAST,
        cwd=tmp_path,
    )
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    # overrides are readable in the job names; device, threads and progress are left out
    assert jobs == [
        "0_seed=1,trainer.images=0,trainer.iw_k=8,trainer.max_epochs=1",
        "1_seed=2,trainer.images=0,trainer.iw_k=8,trainer.max_epochs=1",
    ]
    for job in jobs:
        assert (sweep / job / "metrics.json").is_file()
