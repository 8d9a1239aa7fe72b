"""Resume and interruption: a run stopped anywhere and resumed ends where an
uninterrupted one does, bit for bit on CPU."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vaeflow.errors import CheckpointError
from vaeflow.training import Hook, Interrupted, train

FAST = ["trainer.progress=plain", "trainer.iw_k=4", "trainer.images=0", "trainer.threads=1"]
# dynamic binarization, warm-up, several samples and early-stopping state all take part
RUN = ["trainer.max_epochs=3", "objective.warmup_epochs=2", "objective.samples=2", "posterior=iaf",
       "posterior.depth=2", "posterior.hidden_dims=[32]", *FAST]  # fmt: skip


class InterruptAt(Hook):
    """Sends the run what SIGTERM's handler would, right after step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_batch(self, trainer) -> None:
        if trainer.state.step == self.step:
            trainer.stop.signal = signal.SIGTERM


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]


@pytest.mark.parametrize("stop_step", [13, 20])  # at an epoch's end and inside an epoch
def test_interrupted_and_resumed_equals_uninterrupted(compose_train, tmp_path, stop_step):
    reference = train(compose_train(*RUN), tmp_path / "a")

    expected = rf"SIGTERM: stopped at epoch \d, step {stop_step}; .*last\.pt is saved; continue with: "
    with pytest.raises(Interrupted, match=expected + r"vaeflow train .*trainer\.resume="):
        train(compose_train(*RUN), tmp_path / "b", hooks=[InterruptAt(stop_step)])
    saved = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=True)
    assert saved["step"] == stop_step

    resumed = train(compose_train(*RUN, f"trainer.resume={tmp_path / 'b'}"), tmp_path / "b")
    a, b = final_weights(tmp_path / "a"), final_weights(tmp_path / "b")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert resumed["steps"] == reference["steps"] and resumed["val/elbo"] == reference["val/elbo"]
    assert [h["val/elbo"] for h in resumed["history"]] == [h["val/elbo"] for h in reference["history"]]


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


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_kill_9_then_resume_ends_where_an_uninterrupted_run_ends(tmp_path):
    args = ["trainer.max_epochs=4", "trainer.checkpoint_every_steps=3", "posterior=iaf", "posterior.depth=2",
            "posterior.hidden_dims=[32]", *FAST]  # fmt: skip
    command = [sys.executable, "-m", "vaeflow", "train", *args]
    subprocess.run(
        [*command, f"hydra.run.dir={tmp_path / 'a'}"], cwd=tmp_path, check=True, capture_output=True
    )

    run = tmp_path / "b"
    process = subprocess.Popen([*command, f"hydra.run.dir={run}"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline:  # kill it somewhere inside the second epoch or later
        last = run / "checkpoints" / "last.pt"
        if last.exists() and torch.load(last, weights_only=True)["step"] >= 16:
            break
        time.sleep(0.05)
    process.kill()
    process.wait()
    killed_at = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["step"]
    subprocess.run([*command, f"trainer.resume={run}"], cwd=tmp_path, check=True, capture_output=True)
    a, b = final_weights(tmp_path / "a"), final_weights(run)
    assert not list((run / "checkpoints").glob("*.tmp"))  # a temporary left by the kill is cleared
    assert killed_at < torch.load(run / "checkpoints" / "last.pt", weights_only=True)["step"]
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_resume_may_add_or_drop_the_final_evaluation(tmp_path):
    # +eval=true says whether the job evaluates the run when it ends, not what it trains.
    from vaeflow.training import check_same_model

    saved = {"model": {"latent_dim": 16}, "eval": True, "trainer": {"max_epochs": 100}}
    check_same_model(saved, {"model": {"latent_dim": 16}, "trainer": {"max_epochs": 500}}, tmp_path)
    with pytest.raises(CheckpointError, match=r"model\.latent_dim"):
        check_same_model(saved, {"model": {"latent_dim": 8}}, tmp_path)
