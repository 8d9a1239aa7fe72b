"""Sweeps: launcher presets, per-job threads, failures kept per job, `+eval`, experiments."""

from __future__ import annotations

import json
import re
import sys
import warnings
from pathlib import Path

import pytest
from cli_helpers import vaeflow
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from vaeflow import cli, launchers
from vaeflow.launchers import job_threads, missing_launcher
from vaeflow.model import build_model
from vaeflow.report import collect

JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
CONF = Path(__file__).resolve().parents[1] / "conf"
FAST = [
    "trainer.max_epochs=1",
    "trainer.iw_k=4",
    "trainer.images=0",
    "trainer.threads=1",
    "trainer.progress=plain",
]


def compose_with_hydra(*overrides: str):
    with warnings.catch_warnings():
        launchers.quiet_preset_warning()
        with initialize_config_module(config_module="vaeflow.conf", version_base="1.3"):
            return compose(config_name="train", overrides=list(overrides), return_hydra_config=True)


def test_job_threads_share_the_cores():
    assert job_threads({"_target_": JOBLIB, "n_jobs": 2}, cores=16) == 8
    assert job_threads({"_target_": JOBLIB, "n_jobs": 3}, cores=16) == 5
    assert job_threads({"_target_": JOBLIB, "n_jobs": -1}, cores=16) == 1
    assert job_threads({"_target_": JOBLIB, "n_jobs": -2}, cores=16) == 1  # 15 jobs
    assert job_threads({"_target_": JOBLIB, "n_jobs": 32}, cores=16) == 1
    assert job_threads({"_target_": "x.SlurmLauncher_submitit", "cpus_per_task": 4}) == 4
    assert job_threads({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}) is None


def test_a_missing_launcher_extra_is_one_line_naming_the_extra(monkeypatch, capsys):
    assert missing_launcher(["-m", "seed=1,2"]) is None
    assert missing_launcher(["hydra/launcher=basic"], importable=lambda m: False) is None
    for name in ["joblib", "submitit_slurm", "submitit_local"]:
        monkeypatch.setitem(launchers.LAUNCHER_PLUGINS, name, "hydra_plugins.not_installed_here")
        assert cli.main(["train", "-m", f"hydra/launcher={name}", "seed=1,2"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"hydra/launcher={name}" in err[0]
        assert "pip install 'vaeflow[launchers]'" in err[0]


def test_joblib_preset_composes():
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason="the launchers extra is not installed")
    cfg = compose_with_hydra("hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert cfg.hydra.launcher._target_ == JOBLIB and cfg.hydra.launcher.n_jobs == 2
    assert compose_with_hydra("hydra/launcher=joblib").hydra.launcher.n_jobs == -1


@pytest.mark.parametrize("name", ["submitit_slurm", "submitit_local"])
def test_submitit_presets_compose(name: str):
    pytest.importorskip(
        "hydra_plugins.hydra_submitit_launcher", reason="the launchers extra is not installed"
    )
    cfg = compose_with_hydra(f"hydra/launcher={name}", "hydra.sweep.dir=/tmp/sweep")
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    assert "submitit_launcher" in launcher["_target_"] and launcher["cpus_per_task"] >= 1
    assert launcher["submitit_folder"].startswith("${hydra.sweep.dir}/.submitit")


def test_joblib_runs_2_jobs_each_with_its_share_of_threads(tmp_path: Path):
    # (whether the two jobs overlap in time depends on the machine's load: not asserted)
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason="the launchers extra is not installed")
    sweep = tmp_path / "sweep"
    overrides = [o for o in FAST if not o.startswith(("trainer.threads", "trainer.max_epochs"))]
    vaeflow("train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=1,2", "trainer.max_epochs=2",
            f"hydra.sweep.dir={sweep}", *overrides, cwd=tmp_path)  # fmt: skip
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert len(jobs) == 2
    threads = job_threads({"_target_": JOBLIB, "n_jobs": 2})
    launcher = OmegaConf.load(sweep / "multirun.yaml").hydra.launcher
    assert launcher._target_ == JOBLIB and launcher.n_jobs == 2
    for job in jobs:
        assert json.loads((job / "metrics.json").read_text())["status"] == "completed"
        log = (job / "train.log").read_text()
        assert f"torch threads for this job: {threads}" in log
    # seeded per job: the two seeds give different results
    elbos = {json.loads((job / "metrics.json").read_text())["test/elbo"] for job in jobs}
    assert len(elbos) == 2


def test_a_failing_job_is_recorded_the_others_kept_and_plus_eval_evaluates_each_job(tmp_path: Path):
    sweep = tmp_path / "sweep"
    result = vaeflow("train", "-m", "optim.lr=0.001,-1", "+eval.k=8", "+eval.limit=60", f"hydra.sweep.dir={sweep}",
                     *FAST, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0
    ok, bad = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert json.loads((ok / "metrics.json").read_text())["status"] == "completed"
    assert (bad / "failed.txt").read_text().startswith("ConfigError: optim.lr=-1")
    assert not (bad / "eval").exists()

    # +eval: the finished job was evaluated into its own run directory
    [found] = list(ok.glob("eval/*/eval.json"))
    evaluation = json.loads(found.read_text())
    assert evaluation["k"] == 8 and evaluation["examples"] == 60 and evaluation["split"] == "test"

    runs, _ = collect([sweep])
    by_status = {run.status: run for run in runs}
    assert set(by_status) == {"completed", "failed"}
    assert "learning rate" in by_status["failed"].message
    done = by_status["completed"]
    assert done.source == "eval" and done.nll == evaluation["eval/iw_nll"] and done.nll_se > 0


def test_plus_eval_is_skipped_with_a_warning_when_evaluate_is_missing(monkeypatch, tmp_path, caplog):
    from vaeflow.commands.train import evaluate_run

    monkeypatch.setitem(sys.modules, "vaeflow.evaluate", None)  # import fails
    assert evaluate_run(tmp_path) is None
    assert "evaluation skipped" in caplog.text


def test_crossing_a_family_without_depth_with_depths_is_one_line_with_the_recipe(monkeypatch, capsys):
    from vaeflow.commands.train import check_depth_sweep

    assert check_depth_sweep(["-m", "posterior=planar,iaf", "posterior.depth=1,2"]) is None
    assert check_depth_sweep(["-m", "posterior=mean_field", "seed=1,2"]) is None
    message = check_depth_sweep(["-m", "posterior=mean_field,iaf", "posterior.depth=1,2"])
    assert "posterior=mean_field has no flow steps" in message
    assert "`vaeflow train -m posterior=iaf posterior.depth=1,2 hydra.sweep.dir=D`" in message
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "-m", "posterior=iaf,full_cov", "posterior.depth=1,2"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: posterior=full_cov has no flow steps")


def _grid(values) -> int:
    n = 1
    for value in values:
        n *= len(str(value).split(","))
    return n


def test_experiments_set_up_the_standard_comparison():
    cfg = compose_with_hydra("experiment=mnist")
    assert cfg.dataset.name == "binarized_mnist" and cfg.model.latent_dim == 40
    assert cfg.encoder.name == cfg.decoder.name == "mlp" and list(cfg.encoder.hidden_dims) == [300, 300]
    assert cfg.objective.warmup_epochs > 0 and cfg.trainer.early_stopping.patience is not None

    flows = compose_with_hydra("experiment=mnist_flows")
    baselines = compose_with_hydra("experiment=mnist_baselines")
    assert flows.dataset.name == baselines.dataset.name == "binarized_mnist" and flows.model.latent_dim == 40
    params = flows.hydra.sweeper.params
    families = params.posterior.split(",")
    assert str(params["posterior.depth"]) == "1,2,4,8,16" and _grid(params.values()) == 50
    base_families = baselines.hydra.sweeper.params.posterior.split(",")
    # every family is in one sweep or the other: the flows have a depth, the baselines do not
    assert sorted(families + base_families) == sorted(p.stem for p in (CONF / "posterior").glob("*.yaml"))
    for family in families:
        assert "depth" in OmegaConf.load(CONF / "posterior" / f"{family}.yaml")
    for family in base_families:
        assert "depth" not in OmegaConf.load(CONF / "posterior" / f"{family}.yaml")
    digits = compose_with_hydra("experiment=digits_flows")
    assert digits.dataset.name == "digits" and digits.hydra.sweeper.params == params
    assert compose_with_hydra("experiment=digits_baselines").hydra.sweeper.params.posterior == ",".join(
        base_families
    )


def _comparison_rows() -> dict[str, list[str]]:
    """The rows of scripts/mnist_comparison.sh: row name -> its overrides, with the experiment
    (mnist_cpu, or iwae_cpu for the iw_ rows)."""
    script = (CONF.parent / "scripts" / "mnist_comparison.sh").read_text()
    table = script[script.index("declare -A ROWS=(") : script.index("\n)\n")]
    rows = {name: overrides.split() for name, overrides in re.findall(r'\[(\w+)\]="([^"]*)"', table)}
    order = re.search(r"\nORDER=\(([^)]*)\)", script).group(1).split()
    iwae = re.search(r"\nIWAE_ORDER=\(([^)]*)\)", script).group(1).split()
    assert sorted(order + iwae) == sorted(rows), (
        "ORDER, IWAE_ORDER and ROWS of the script name different rows"
    )
    assert all(row.startswith("iw_") for row in iwae) and not any(row.startswith("iw_") for row in order)
    return {
        row: [f"experiment={'iwae_cpu' if row.startswith('iw_') else 'mnist_cpu'}", *overrides]
        for row, overrides in rows.items()
    }


def test_the_readme_results_table_is_what_the_comparison_script_builds():
    """Each README results row made by the script composes, builds and has the parameter
    count the README gives (a renamed key or a changed network shows up here)."""
    rows = _comparison_rows()
    readme = (CONF.parent / "README.md").read_text()
    found = re.findall(r"^\|[^|\n]*\|[^|\n]*\| ([\d,]+) \|.*\| `(\w+)` \|$", readme, flags=re.M)
    table = {row: int(count.replace(",", "")) for count, row in found}
    checked = 0
    for row, overrides in rows.items():
        cfg = compose_with_hydra(*overrides)
        model = build_model(cfg, (1, 28, 28))
        if row in table:
            assert sum(p.numel() for p in model.parameters()) == table[row], row
            checked += 1
    assert checked >= 10
