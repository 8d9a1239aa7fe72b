"""Resume and interruption: a run stopped anywhere and resumed ends where an
uninterrupted one does, bit for bit on CPU."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from training_helpers import SigtermAt

from vaeflow.errors import CheckpointError
from vaeflow.training import Interrupted, train

FAST = ["trainer.progress=plain", "trainer.iw_k=4", "trainer.images=0", "trainer.threads=1"]
# dynamic binarization, warm-up, several samples and early-stopping state all take part
RUN = ["trainer.max_epochs=3", "objective.warmup_epochs=2", "objective.samples=2", "posterior=iaf",
       "posterior.depth=2", "posterior.hidden_dims=[32]", *FAST]  # fmt: skip


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]


# the IW bound with DReG gradients: its k samples and the hook on z take part
RUN_IWAE = [*(o for o in RUN if not o.startswith("objective.samples")), "objective=iwae", "objective.k=3",
            "objective.gradient=dreg"]  # fmt: skip


@pytest.mark.parametrize(
    ("run", "stop_step"),
    [(RUN, 13), (RUN, 20), (RUN_IWAE, 20)],
    ids=["elbo-epoch-end", "elbo-inside", "iwae-dreg"],
)  # at an epoch's end and inside an epoch
def test_interrupted_and_resumed_equals_uninterrupted(compose_train, tmp_path, run, stop_step):
    reference = train(compose_train(*run), tmp_path / "a")

    expected = rf"SIGTERM: stopped at epoch \d, step {stop_step}; .*last\.pt is saved; continue with: "
    with pytest.raises(Interrupted, match=expected + r"vaeflow train .*trainer\.resume="):
        train(compose_train(*run), tmp_path / "b", hooks=[SigtermAt(stop_step)])
    saved = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=True)
    assert saved["step"] == stop_step

    resumed = train(compose_train(*run, f"trainer.resume={tmp_path / 'b'}"), tmp_path / "b")
    a, b = final_weights(tmp_path / "a"), final_weights(tmp_path / "b")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert resumed["steps"] == reference["steps"] and resumed["val/elbo"] == reference["val/elbo"]
    assert [h["val/elbo"] for h in resumed["history"]] == [h["val/elbo"] for h in reference["history"]]
    bound = "train/iw_bound" if "objective=iwae" in run else "train/elbo"
    assert resumed[bound] == reference[bound] and resumed["objective"] == reference["objective"]


def test_resume_auto_starts_afresh_then_continues(compose_train, tmp_path):
    run = tmp_path / "run"
    first = train(compose_train("trainer.max_epochs=1", "trainer.resume=auto", *FAST), run)
    assert first["epochs"] == 1
    second = train(compose_train("trainer.max_epochs=2", "trainer.resume=auto", *FAST), run)
    assert second["epochs"] == 2 and second["steps"] == 2 * first["steps"]


def test_resume_refuses_another_model(compose_train, tmp_path):
    train(compose_train("trainer.max_epochs=1", *FAST), tmp_path / "run")
    cfg = compose_train(
        "trainer.max_epochs=2", "model.latent_dim=8", f"trainer.resume={tmp_path / 'run'}", *FAST
    )
    with pytest.raises(
        CheckpointError, match=r"another configuration: model\.latent_dim \(16 in the checkpoint, 8 now\)"
    ):
        train(cfg, tmp_path / "run")


def test_resume_from_a_missing_directory(compose_train, tmp_path):
    with pytest.raises(CheckpointError, match="trainer.resume=.*not found"):
        train(compose_train(f"trainer.resume={tmp_path / 'nowhere'}", *FAST), tmp_path / "run")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_saves_last_checkpoint_and_says_how_to_resume(tmp_path):
    run = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "vaeflow", "train", "trainer.max_epochs=500", "trainer.early_stopping.patience=null",
         f"hydra.run.dir={run}", *FAST],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.time() + 120
    while not (run / "checkpoints" / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "SIGTERM: stopped at epoch" in lines[0]
    assert f"trainer.resume={run}" in lines[0]
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] > 0
    assert not list((run / "checkpoints").glob("*.tmp"))


KILLER = """
import os, signal, sys

import vaeflow.checkpoint
from vaeflow.cli import main

# SIGKILL this process at the {n}th write of last.pt, after the temporary file is written
# and fsynced and before it is renamed over last.pt: the harshest moment there is
writes, replace = [], os.replace


def replace_or_die(src, dst):
    if str(dst).endswith("last.pt"):
        writes.append(dst)
        if len(writes) == {n}:
            os.kill(os.getpid(), signal.SIGKILL)
    return replace(src, dst)


vaeflow.checkpoint.os.replace = replace_or_die
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_kill_9_then_resume_ends_where_an_uninterrupted_run_ends(tmp_path):
    # 13 steps an epoch, last.pt every 3 steps and at each epoch's end: the 10th write is the
    # second epoch's end (step 26), after its line of history.jsonl; the 9th (step 24) survives
    args = ["trainer.max_epochs=3", "trainer.checkpoint_every_steps=3", "posterior=iaf", "posterior.depth=2",
            "posterior.hidden_dims=[32]", *FAST]  # fmt: skip
    subprocess.run([sys.executable, "-m", "vaeflow", "train", *args, f"hydra.run.dir={tmp_path / 'a'}"],
                   cwd=tmp_path, check=True, capture_output=True)  # fmt: skip

    run, killer = tmp_path / "b", tmp_path / "killer.py"
    killer.write_text(KILLER.replace("{n}", "10"))
    killed = subprocess.run([sys.executable, str(killer), "train", *args, f"hydra.run.dir={run}"], cwd=tmp_path,
                            capture_output=True)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL
    assert len(list((run / "checkpoints").glob(".last.pt.*.tmp"))) == 1  # the write it was killed in
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["step"] == 24  # the one before
    assert [json.loads(line)["epoch"] for line in (run / "history.jsonl").read_text().splitlines()] == [1, 2]

    subprocess.run([sys.executable, "-m", "vaeflow", "train", *args, f"trainer.resume={run}"], cwd=tmp_path,
                   check=True, capture_output=True)  # fmt: skip
    assert not list((run / "checkpoints").glob("*.tmp"))  # the temporary left by the kill is cleared
    a, b = final_weights(tmp_path / "a"), final_weights(run)
    for name in a:
        assert torch.equal(a[name], b[name]), name
    history = [json.loads(line)["epoch"] for line in (run / "history.jsonl").read_text().splitlines()]
    assert history == [1, 2, 3]  # the epoch finished again after the kill is there once


def test_resume_may_add_or_drop_the_final_evaluation(tmp_path):
    # +eval=true says whether the job evaluates the run when it ends, not what it trains.
    from vaeflow.training import check_same_model

    saved = {"model": {"latent_dim": 16}, "eval": True, "trainer": {"max_epochs": 100}}
    check_same_model(saved, {"model": {"latent_dim": 16}, "trainer": {"max_epochs": 500}}, tmp_path)
    with pytest.raises(CheckpointError, match=r"model\.latent_dim"):
        check_same_model(saved, {"model": {"latent_dim": 8}}, tmp_path)


def test_resume_may_move_the_data_but_not_change_it(tmp_path):
    from vaeflow.training import check_same_model

    saved = {"dataset": {"name": "mnist", "root": "/data/mnist", "download": True, "val_size": 10000}}
    moved = {"dataset": {"name": "mnist", "root": "/scratch/job/mnist", "download": False, "val_size": 10000}}
    check_same_model(saved, moved, tmp_path)  # data moved to a scratch disk
    other = {"dataset": {**moved["dataset"], "val_size": 5000}}
    with pytest.raises(CheckpointError, match=r"dataset\.val_size \(10000 in the checkpoint, 5000 now\)"):
        check_same_model(saved, other, tmp_path)


def test_a_new_batch_size_inside_an_epoch_is_refused_at_an_epochs_end_allowed(compose_train, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(Interrupted):
        train(compose_train("trainer.max_epochs=2", *FAST), run, hooks=[SigtermAt(5)])
    refused = compose_train("trainer.max_epochs=2", "trainer.batch_size=50", f"trainer.resume={run}", *FAST)
    with pytest.raises(CheckpointError) as info:
        train(refused, run)
    message = str(info.value)
    assert "written inside epoch 1 with trainer.batch_size=100; resume with trainer.batch_size=100" in message
    assert "\n" not in message
    # the same batch size finishes the epoch; a new one may start at the next
    train(compose_train("trainer.max_epochs=1", f"trainer.resume={run}", *FAST), run)
    metrics = train(
        compose_train("trainer.max_epochs=2", "trainer.batch_size=50", f"trainer.resume={run}", *FAST), run
    )
    assert metrics["epochs"] == 2 and metrics["steps"] == 13 + 26


def test_a_run_trained_on_a_gpu_resumes_and_evaluates_on_the_cpu(compose_train, tmp_path, caplog):
    # a checkpoint as a GPU run writes it: the training noise's generator and a CUDA
    # generator state saved on a device this machine does not have
    run = tmp_path / "run"
    train(compose_train("trainer.max_epochs=1", *FAST), run)
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    state["generators"]["train_noise"] = {"device": "cuda", "state": torch.zeros(16, dtype=torch.uint8)}
    state["rng"]["cuda"] = [torch.zeros(16, dtype=torch.uint8)] * 2
    torch.save(state, run / "checkpoints" / "last.pt")

    with caplog.at_level("INFO", logger="vaeflow"):
        metrics = train(compose_train("trainer.max_epochs=2", f"trainer.resume={run}", *FAST), run)
    assert metrics["epochs"] == 2 and all(
        torch.isfinite(torch.tensor(h["val/elbo"])) for h in metrics["history"]
    )
    assert "the training noise was saved on cuda and cannot continue on cpu; it is re-seeded" in caplog.text
    assert "the CUDA generator of cuda:0 (no such device here) could not be restored" in caplog.text

    from vaeflow.evaluate import load_trained

    trained = load_trained(run, "last", device="cpu")
    assert trained.epoch == 2 and next(trained.model.parameters()).device.type == "cpu"


def test_history_jsonl_holds_each_epoch_once_after_an_interruption(compose_train, tmp_path):
    reference = train(compose_train(*RUN), tmp_path / "a")
    with pytest.raises(Interrupted):
        train(compose_train(*RUN), tmp_path / "b", hooks=[SigtermAt(20)])
    train(compose_train(*RUN, f"trainer.resume={tmp_path / 'b'}"), tmp_path / "b")
    for run in ("a", "b"):
        records = [json.loads(line) for line in (tmp_path / run / "history.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in records] == [1, 2, 3]
        assert [r["val/elbo"] for r in records] == [h["val/elbo"] for h in reference["history"]]
