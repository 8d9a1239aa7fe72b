"""`vaeflow report`: a real sweep through the CLI, then the report on it; and the report's
handling of failed, unfinished and evaluated runs on hand-made run directories."""

from __future__ import annotations

import csv
import json
import os
import shutil
import struct
import time
from pathlib import Path

import pytest
from cli_helpers import vaeflow
from omegaconf import OmegaConf

from vaeflow.commands.report import report
from vaeflow.evaluate import load_trained
from vaeflow.report import (
    collect,
    expected_jobs,
    notes,
    plot_samples,
    sample_images,
    summarize,
    table_rows,
    write_report,
)

FAST = [
    "trainer.max_epochs=1",
    "trainer.iw_k=4",
    "trainer.images=0",
    "trainer.threads=1",
    "trainer.progress=plain",
]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """A 2x2 multirun on digits (iaf at depths 1 and 2, seeds 1 and 2), one epoch each."""
    root = tmp_path_factory.mktemp("sweep")
    sweep_dir = root / "sweep"
    vaeflow(
        "train",
        "-m",
        "posterior=iaf",
        "posterior.depth=1,2",
        "seed=1,2",
        f"hydra.sweep.dir={sweep_dir}",
        *FAST,
        cwd=root,
    )
    return sweep_dir


def test_a_2x2_sweep_gives_4_rows_equal_to_the_runs_metrics(sweep: Path):
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name.split("_")[0] for p in jobs] == ["0", "1", "2", "3"]
    assert "posterior.depth=2" in jobs[2].name and "seed=1" in jobs[2].name  # overrides readable in the name

    result = vaeflow("report", str(sweep), cwd=sweep.parent)
    out_dir = sweep / "report"
    for name in ["results.csv", "results.md", "depth.png", "curves.png", "samples.png"]:
        assert (out_dir / name).is_file() and (out_dir / name).stat().st_size > 0, name
    assert (out_dir / "depth.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    rows = list(csv.DictReader((out_dir / "results.csv").open()))
    assert len(rows) == 4
    by_path = {Path(row["path"]).name: row for row in rows}
    assert set(by_path) == {p.name for p in jobs}
    for job in jobs:
        metrics = json.loads((job / "metrics.json").read_text())
        row = by_path[job.name]
        assert row["status"] == "completed" and row["family"] == "iaf" and row["source"] == "train"
        assert int(row["depth"]) == metrics["depth"] and int(row["parameters"]) == metrics["parameters"]
        assert float(row["test_elbo"]) == metrics["test/elbo"]
        assert float(row["test_nll"]) == metrics["test/iw_nll"]
        assert float(row["test_kl"]) == metrics["test/kl"]
        assert float(row["train_time_s"]) == metrics["train_time_s"]
        assert float(row["images_per_s"]) == metrics["images_per_s"]
        assert int(row["k"]) == metrics["iw_k"] == 4
        # the printed table shows the same figures, rounded
        line = next(
            line
            for line in result.stdout.splitlines()
            if f"seed={metrics_seed(job)}" in line and f"depth={metrics['depth']}" in line
        )
        for value in (
            f"{metrics['test/elbo']:.2f}",
            f"{metrics['test/iw_nll']:.2f}",
            f"{metrics['parameters']:,}",
        ):
            assert value in line, (value, line)
    assert "4 runs under" in result.stdout
    assert "mean over seeds" in result.stdout  # two seeds per (family, depth)
    markdown = (out_dir / "results.md").read_text()
    assert markdown.count("| iaf |") == 6  # 4 runs + 2 means over seeds
    assert "![depth](depth.png)" in markdown and "![samples](samples.png)" in markdown
    # each run's command line, from its .hydra/overrides.yaml
    commands = [line for line in markdown.splitlines() if line.startswith("- ") and "vaeflow train" in line]
    assert len(commands) == 4
    assert all("posterior=iaf" in c and "posterior.depth=" in c for c in commands)


def metrics_seed(job: Path) -> int:
    return int(OmegaConf.load(job / ".hydra" / "config.yaml").seed)


def test_seeds_are_averaged_and_the_sweep_has_no_pending_jobs(sweep: Path):
    runs, sweeps = collect([sweep])
    groups = summarize(runs)
    assert [(g.family, g.depth, g.n) for g in groups] == [("iaf", 1, 2), ("iaf", 2, 2)]
    for g in groups:
        nlls = [r.nll for r in g.runs]
        assert g.nll == pytest.approx(sum(nlls) / 2)
        assert g.nll_se == pytest.approx(abs(nlls[0] - nlls[1]) / 2)  # s / sqrt(2) of two values
    assert expected_jobs(sweep) == 4 and [s.pending for s in sweeps] == [0]


def test_every_job_is_its_own_tensorboard_run_with_hparams(sweep: Path):
    from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer

    mux = EventMultiplexer().AddRunsFromDirectory(str(sweep))
    mux.Reload()
    runs = mux.Runs()
    assert len(runs) == 4 and all(run.endswith("/tb") for run in runs)
    hparams = mux.PluginRunToTagToContent("hparams")
    assert set(hparams) == set(runs)
    assert all("_hparams_/session_start_info" in tags for tags in hparams.values())


# --------------------------------------------------------------------------------------
# samples.png: what each finished run's best checkpoint generates and reconstructs
# --------------------------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` from a PNG's IHDR chunk, after checking the signature."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR", path
    return struct.unpack(">II", data[16:24])


def finished_jobs(sweep: Path) -> list[Path]:
    return sorted(p for p in sweep.iterdir() if (p / "metrics.json").is_file())


def test_samples_png_has_one_row_per_finished_run(sweep: Path, tmp_path: Path):
    import matplotlib.image

    runs, _ = collect([sweep])
    sizes = [png_size(plot_samples(runs[:n], tmp_path / f"samples_{n}.png")) for n in (1, 2, 4)]
    (w1, h1), (w2, h2), (w4, h4) = sizes
    assert w1 == w2 == w4 <= 1200  # one strip of samples and one of pairs, whatever the rows
    assert h1 < h2 < h4 and h4 - h2 == 2 * (h2 - h1)  # each row adds the same height
    pixels = matplotlib.image.imread(tmp_path / "samples_4.png")  # decodes: a valid PNG
    assert pixels.shape[:2] == (h4, w4) and pixels[..., :3].std() > 0.1
    assert not any(r.samples_skipped for r in runs)


def test_every_row_decodes_the_same_draws_and_the_same_test_images(sweep: Path):
    import torch

    first, second = (load_trained(job) for job in finished_jobs(sweep)[:2])
    a, again = sample_images(first.model, first.data.test), sample_images(first.model, first.data.test)
    b = sample_images(second.model, second.data.test)
    assert a.samples.shape == (16, 1, 8, 8) and a.originals.shape == a.reconstructions.shape == (8, 1, 8, 8)
    for x, y in [(a.samples, again.samples), (a.reconstructions, again.reconstructions)]:
        assert torch.equal(x, y)  # seeded: the prior draws and the posterior noise
    assert torch.equal(a.originals, b.originals)
    z = torch.randn(16, second.model.latent_dim, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.allclose(b.samples, second.model.decode_mean(z))  # the same z ~ N(0, I) in every row
    test = first.data.test.images
    assert not torch.equal(a.originals, test[:8])  # a seeded random subset, not the first images
    assert all((test == x).flatten(1).all(1).any() for x in a.originals)


def test_a_run_whose_checkpoint_is_corrupt_is_left_out_with_a_note(sweep: Path, tmp_path: Path):
    good, bad = (Path(shutil.copytree(job, tmp_path / "runs" / job.name)) for job in finished_jobs(sweep)[:2])
    checkpoint = bad / "checkpoints" / "best.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:2000])  # truncated, as by a full disk
    runs, sweeps = collect([tmp_path / "runs"])
    files = write_report(runs, tmp_path / "out", sweeps)

    [skipped] = [r for r in runs if r.path == bad.resolve()]
    assert "corrupt or truncated" in skipped.samples_skipped
    note = f"samples skipped: {skipped.label}: {skipped.samples_skipped}"
    assert note in notes(runs, sweeps) and note in files["markdown"].read_text()
    [kept] = [r for r in runs if r.path == good.resolve()]
    alone = plot_samples([kept], tmp_path / "alone.png")
    assert png_size(files["samples"])[1] == png_size(alone)[1]  # one row: the good run's


def test_no_samples_skips_the_figure_and_its_checkpoint_loading(tmp_path: Path):
    make_run(tmp_path / "runs" / "ok", metrics={})  # finished, but no checkpoints/
    assert report([str(tmp_path / "runs")], str(tmp_path / "without"), samples=False) == 0
    assert not (tmp_path / "without" / "samples.png").exists()
    markdown = (tmp_path / "without" / "results.md").read_text()
    assert "samples.png" not in markdown and "samples skipped" not in markdown

    assert report([str(tmp_path / "runs")], str(tmp_path / "with")) == 0
    assert png_size(tmp_path / "with" / "samples.png")
    assert "samples skipped: ok: " in (tmp_path / "with" / "results.md").read_text()


# --------------------------------------------------------------------------------------
# Hand-made run directories: every state a run can be in
# --------------------------------------------------------------------------------------


def make_run(
    path: Path,
    family: str = "iaf",
    depth: int | None = 2,
    seed: int = 0,
    metrics: dict | None = None,
    failed: str | None = None,
    log_epochs: int = 0,
    extra: str = "",
) -> Path:
    (path / ".hydra").mkdir(parents=True)
    posterior = f"  name: {family}\n" + (f"  depth: {depth}\n" if depth is not None else "")
    (path / ".hydra" / "config.yaml").write_text(
        f"dataset:\n  name: digits\nposterior:\n{posterior}seed: {seed}\n"
        f"trainer:\n  max_epochs: 5\n  threads: null\nmodel:\n  latent_dim: 16\n{extra}"
    )
    (path / ".hydra" / "overrides.yaml").write_text(f"- posterior={family}\n")
    if metrics is not None:
        base = {"status": "completed", "stopped_by": "max_epochs", "epochs": 5, "best_epoch": 5,
                "parameters": 1000, "train_time_s": 10.0, "images_per_s": 500.0, "iw_k": 4,
                "test/elbo": -30.0, "test/kl": 1.0, "test/iw_nll": 29.0, "depth": depth,
                "history": [{"epoch": e, "val/elbo": -35.0 + e} for e in range(1, 6)]}  # fmt: skip
        (path / "metrics.json").write_text(json.dumps(base | metrics))
    if failed is not None:
        (path / "failed.txt").write_text(failed)
    if log_epochs:
        records = [
            {"epoch": e, "max_epochs": 5, "train/elbo": -40.0, "val/elbo": -39.5 + e, "val/rec": -38.0}
            for e in range(1, log_epochs + 1)
        ]
        text = "".join(json.dumps(r) + "\n" for r in records)
        (path / "history.jsonl").write_text(text + '{"epoch": 3, "val/el')  # + a line cut short by a kill
    return path


def test_failed_running_and_stale_runs_are_shown_never_dropped(tmp_path: Path):
    make_run(tmp_path / "0_ok", metrics={})
    make_run(
        tmp_path / "1_bad", failed="ConfigError: optim.lr=-1: the learning rate must be > 0\n", log_epochs=0
    )
    make_run(tmp_path / "2_busy", depth=4, log_epochs=2)
    stale = make_run(tmp_path / "3_killed", depth=8, log_epochs=1)
    old = time.time() - 3 * 3600
    for p in [stale, stale / "history.jsonl"]:
        os.utime(p, (old, old))

    runs, _ = collect([tmp_path])
    status = {r.name: r.status for r in runs}
    assert status == {"0_ok": "completed", "1_bad": "failed", "2_busy": "running", "3_killed": "incomplete"}
    busy = next(r for r in runs if r.name == "2_busy")
    assert busy.epochs == 2 and [h["val/elbo"] for h in busy.history] == [-38.5, -37.5]

    header, rows = table_rows(runs)
    text = "\n".join(" ".join(row) for row in rows)
    assert "failed" in text and "running (2/5)" in text and "incomplete" in text
    assert len(summarize(runs)) == 1  # only the finished run is plotted

    result = vaeflow("report", str(tmp_path), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert "failed: 1_bad: ConfigError: optim.lr=-1: the learning rate must be > 0" in result.stdout
    assert "running: 2_busy: epoch 2/5" in result.stdout
    assert "incomplete: 3_killed" in result.stdout
    rows = list(csv.DictReader((tmp_path / "out" / "results.csv").open()))
    assert sorted(r["status"] for r in rows) == ["completed", "failed", "incomplete", "running"]
    assert "## Not finished" in (tmp_path / "out" / "results.md").read_text()


def test_eval_json_gives_the_nll_with_its_standard_error(tmp_path: Path):
    run = make_run(tmp_path / "run", metrics={})
    evaluation = {"eval/iw_nll": 28.5, "eval/iw_nll_se": 0.25, "eval/elbo": -29.75, "eval/elbo_se": 0.3,
                  "eval/kl": 1.25, "eval/iw_gain_se": 0.01, "k": 5000, "split": "test"}  # fmt: skip
    (run / "eval" / "2026-01-01_00-00-00_test_k5000").mkdir(parents=True)
    (run / "eval" / "2026-01-01_00-00-00_test_k5000" / "eval.json").write_text(json.dumps(evaluation))
    (run / "eval" / "2026-01-01_00-00-01_val_k100").mkdir(parents=True)  # another split: not the test figure
    (run / "eval" / "2026-01-01_00-00-01_val_k100" / "eval.json").write_text(
        json.dumps(evaluation | {"split": "val", "k": 100, "eval/iw_nll": 1.0})
    )

    [r], _ = collect([tmp_path])  # the eval run's own .hydra/ would not be taken for a run
    assert (r.nll, r.nll_se, r.elbo, r.elbo_se, r.kl, r.k, r.source) == (
        28.5,
        0.25,
        -29.75,
        0.3,
        1.25,
        5000,
        "eval",
    )
    [group] = summarize([r])
    assert group.nll_se == 0.25 and group.neg_elbo_se == 0.3  # one run: its standard error over test images
    header, [row] = table_rows([r])
    assert row[header.index("test NLL ± se")] == "28.50 ± 0.25" and row[header.index("k")] == "5000"


def test_families_without_depth_are_depth_0_and_settings_split_lines(tmp_path: Path):
    make_run(
        tmp_path / "a",
        family="mean_field",
        depth=None,
        metrics={"depth": None},
        extra="optim:\n  lr: 0.001\n",
    )
    make_run(tmp_path / "b", depth=1, metrics={}, extra="optim:\n  lr: 0.001\n")
    make_run(tmp_path / "c", depth=1, metrics={}, extra="optim:\n  lr: 0.0003\n")
    runs, _ = collect([tmp_path])
    assert [(r.family, r.depth) for r in runs][0] == ("mean_field", 0)  # baselines first
    groups = summarize(runs)
    assert {g.label for g in groups} == {
        "mean_field (optim.lr=0.001)",
        "iaf (optim.lr=0.001)",
        "iaf (optim.lr=0.0003)",
    }


def test_each_run_is_labelled_with_its_objective_and_objectives_are_not_pooled(tmp_path: Path):
    """The objective is its own column and splits the groups; its keys are compared only
    between runs of one objective; a run written before the objective group is the ELBO."""
    make_run(tmp_path / "old", metrics={}, extra="objective:\n  samples: 1\n  warmup_epochs: 0\n")
    make_run(
        tmp_path / "vae",
        metrics={},
        extra="objective:\n  name: elbo\n  samples: 1\n  warmup_epochs: 0\n  gradient: reparam\n",
    )
    for name, k, gradient in (("k5", 5, "reparam"), ("k50", 50, "reparam"), ("k50_dreg", 50, "dreg")):
        extra = f"objective:\n  name: iwae\n  k: {k}\n  gradient: {gradient}\n  warmup_epochs: 0\n"
        make_run(tmp_path / name, metrics={}, extra=extra)
    runs, _ = collect([tmp_path])
    by_name = {r.name: r for r in runs}
    assert {n: r.objective for n, r in by_name.items()} == {
        "old": "elbo", "vae": "elbo", "k5": "iwae k=5", "k50": "iwae k=50", "k50_dreg": "iwae k=50 dreg"
    }  # fmt: skip
    assert all(r.setting == "" for r in runs)  # no objective.* key in the setting
    assert sorted(g.label for g in summarize(runs)) == [
        "iaf", "iaf (iwae k=5)", "iaf (iwae k=50 dreg)", "iaf (iwae k=50)"
    ]  # fmt: skip
    header, rows = table_rows(runs)
    assert "objective" in header and "setting" not in header


def test_prior_keys_are_compared_between_runs_of_one_prior(tmp_path: Path):
    """A VampPrior's components do not split flow-prior runs, and a key added later with a
    null default (prior.bins) equals its absence in an older run."""
    make_run(tmp_path / "vamp", metrics={}, extra="prior:\n  name: vamp\n  components: 500\n")
    make_run(tmp_path / "flow_old", metrics={}, extra="prior:\n  name: flow\n  depth: 4\n")
    make_run(tmp_path / "flow_new", metrics={}, extra="prior:\n  name: flow\n  depth: 4\n  bins: null\n")
    runs, _ = collect([tmp_path])
    assert {r.name: r.setting for r in runs} == {
        "vamp": "prior.name=vamp", "flow_old": "prior.name=flow", "flow_new": "prior.name=flow"
    }  # fmt: skip
    assert len(summarize(runs)) == 2


def test_report_errors_are_one_line(tmp_path: Path):
    missing = vaeflow("report", str(tmp_path / "nope"), cwd=tmp_path, check=False)
    assert (
        missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1 and "nope" in missing.stderr
    )
    (tmp_path / "empty").mkdir()
    empty = vaeflow("report", str(tmp_path / "empty"), cwd=tmp_path, check=False)
    assert empty.returncode == 2 and empty.stderr.strip().splitlines() == [
        f"error: no vaeflow train runs under {tmp_path / 'empty'} (a run directory holds .hydra/config.yaml)"
    ]
    make_run(tmp_path / "runs" / "only", metrics={})
    unknown = vaeflow(
        "report", str(tmp_path / "runs"), "--baseline", "nope", "--no-plots", cwd=tmp_path, check=False
    )
    assert unknown.returncode == 2 and unknown.stderr.strip().splitlines() == [
        "error: --baseline nope: no run of this report has that name or label; "
        "no run here has a vaeflow eval of the test split"
    ]
    assert not (tmp_path / "runs" / "report").exists()


def test_paired_deltas_use_the_per_image_differences(tmp_path: Path):
    import math

    import torch

    from vaeflow.report import Run, paired_deltas, table_rows

    generator = torch.Generator().manual_seed(0)
    hardness = torch.randn(400, generator=generator, dtype=torch.float64) * 20  # shared by every model
    ids = torch.arange(400)

    def run(name: str, family: str, shift: float, ids=ids) -> Run:
        nll = 90 + hardness + shift + 0.1 * torch.randn(400, generator=generator, dtype=torch.float64)
        eval_dir = tmp_path / name / "eval" / "e"
        eval_dir.mkdir(parents=True)
        torch.save({"ids": ids, "log_px": -nll}, eval_dir / "per_example.pt")
        return Run(
            path=tmp_path / name, name=name, status="completed", family=family, depth=0, seed=0,
            dataset="binarized_mnist", nll=float(nll.mean()), nll_se=float(nll.std() / 20), elbo=-95.0,
            source="eval", eval_path=eval_dir / "eval.json",
        )  # fmt: skip

    base, better = run("mf", "mean_field", 0.0), run("iaf", "iaf", -0.3)
    other_images = run("planar", "planar", -1.0, ids=ids + 1000)  # not the same test images
    assert paired_deltas([better, base, other_images]) is base
    assert base.delta[0] == 0 and _delta_text(base) == "baseline"
    mean, se = better.delta
    assert abs(mean + 0.3) < 4 * se and se < 0.02  # the unpaired s.e.s are ~1 nat each
    assert better.nll_se > 40 * se
    assert other_images.delta is None
    header, rows = table_rows([base, better, other_images])
    column = header.index("Δ NLL ± paired se")
    assert [r[column] for r in rows] == ["baseline", f"{mean:+.2f} ± {se:.2f}", "—"]
    # an explicit baseline by name
    for r in (base, better):
        r.delta = None
    assert paired_deltas([base, better], baseline="iaf") is better
    assert math.isclose(base.delta[0], -mean)
    # a name that matches nothing is an error that lists the names there are
    from vaeflow.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        paired_deltas([base, better, other_images], baseline="mean-field")
    assert str(info.value) == (
        "--baseline mean-field: no run of this report has that name or label; "
        "runs that can be one: mf, iaf, planar"
    )
    better.eval_path = tmp_path / "nowhere" / "eval.json"  # an evaluation without per-image figures
    with pytest.raises(
        ConfigError, match=r"--baseline iaf: that run has no vaeflow eval .* \(run `vaeflow eval "
    ):
        paired_deltas([base, better], baseline="iaf")


def _delta_text(run) -> str:
    from vaeflow.report.tables import _delta

    return _delta(run)


def test_how_a_run_was_started_is_not_a_setting(tmp_path: Path):
    from vaeflow.report import Run
    from vaeflow.report.settings import settings_of

    def run(name: str, config: dict) -> Run:
        return Run(path=tmp_path / name, name=name, status="completed", family="iaf", depth=4, seed=0,
                   dataset="binarized_mnist", config=config)  # fmt: skip

    runs = [
        run("a", {"eval": True, "trainer.resume": None, "model.latent_dim": 40}),
        run("b", {"trainer.resume": "auto", "model.latent_dim": 40}),
        run("c", {"trainer.resume": "auto", "model.latent_dim": 8}),
    ]
    assert settings_of(runs) == ["model.latent_dim=40", "model.latent_dim=40", "model.latent_dim=8"]


def test_a_run_resumed_with_a_larger_budget_is_its_own_setting(tmp_path: Path):
    from vaeflow.report import collect

    # Both started with trainer.max_epochs=5 (their .hydra/ says so); "longer" was resumed to
    # 9 epochs: from metrics.json, or, for runs written before it recorded max_epochs, at
    # least the epochs they trained.
    make_run(tmp_path / "short", family="mean_field", depth=None, metrics={})
    make_run(tmp_path / "longer", family="mean_field", depth=None, metrics={"epochs": 9, "max_epochs": 9})
    make_run(tmp_path / "older", family="mean_field", depth=None, metrics={"epochs": 9})
    runs, _ = collect([tmp_path])
    settings = {run.name: run.setting for run in runs}
    assert settings == {"short": "trainer.max_epochs=5", "longer": "trainer.max_epochs=9",
                        "older": "trainer.max_epochs=9"}  # fmt: skip


def test_a_run_evaluated_on_a_subset_is_paired_on_the_images_it_shares(tmp_path: Path):
    import torch

    from vaeflow.report import Run, paired_deltas, table_rows

    generator = torch.Generator().manual_seed(1)
    hardness = torch.randn(400, generator=generator, dtype=torch.float64) * 20
    subset = torch.randperm(400, generator=generator)[:100].sort().values  # as vaeflow eval limit=100

    def run(name: str, family: str, ids, nll) -> Run:
        eval_dir = tmp_path / name / "eval" / "e"
        eval_dir.mkdir(parents=True)
        torch.save({"ids": ids, "log_px": -nll}, eval_dir / "per_example.pt")
        return Run(
            path=tmp_path / name, name=name, status="completed", family=family, depth=0, seed=0,
            dataset="binarized_mnist", nll=float(nll.mean()), nll_se=1.0, elbo=-95.0, k=5000,
            examples=len(ids), split_size=400, source="eval", eval_path=eval_dir / "eval.json",
        )  # fmt: skip

    base_nll = 90 + hardness
    maf_nll = base_nll[subset] - 2.0 + 0.1 * torch.randn(100, generator=generator, dtype=torch.float64)
    base = run("mf", "mean_field", torch.arange(400), base_nll)
    slow = run("maf4", "maf", subset, maf_nll)
    assert paired_deltas([base, slow]) is base
    expected = maf_nll - base_nll[subset]
    assert slow.paired == 100 and base.paired == 400
    assert torch.isclose(torch.tensor(slow.delta[0], dtype=torch.float64), expected.mean())
    header, rows = table_rows([base, slow])
    assert rows[1][header.index("k")] == "5000 (100 images)" and rows[0][header.index("k")] == "5000"


def test_each_flow_panel_is_drawn_beside_the_baselines_of_its_own_setting():
    from types import SimpleNamespace

    from vaeflow.report.plots import _references

    def run(name: str, setting: str) -> SimpleNamespace:
        return SimpleNamespace(name=name, setting=setting)

    relu = "decoder.activation=relu encoder.activation=relu trainer.max_epochs=100"
    gated = "decoder.activation=gated encoder.activation=gated trainer.max_epochs="
    mf, mf300 = run("mf", relu), run("mf300", relu.replace("=100", "=300"))
    mf_gated, full_cov = run("mf_gated", gated + "300"), run("full_cov", relu)
    baselines = [mf, mf300, mf_gated, full_cov]
    sylvester = run("sylvester", relu + " posterior.variant=householder")
    iaf_gated = run("iaf_gated", gated + "150")
    settings = {id(r): r.setting for r in [*baselines, sylvester, iaf_gated]}

    # the flow's own option (posterior.variant) does not part it from its baselines
    assert [(r.name, d) for r, d in _references(sylvester, baselines, settings)] == [
        ("mf", []),
        ("full_cov", []),
    ]
    # no baseline shares every item: the closest one, with what differs
    assert [(r.name, d) for r, d in _references(iaf_gated, baselines, settings)] == [
        ("mf_gated", ["trainer.max_epochs=300"])
    ]
    assert _references(iaf_gated, [], settings) == []
