"""On a GPU: train, stop on SIGTERM, resume and evaluate there; move the run to the CPU;
and a training step that never waits for the device. Skipped where no GPU is visible
(run them where one is lent: `python -m pytest -m cuda`)."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from training_helpers import SigtermAt, random_splits

from vaeflow.evaluate import evaluate
from vaeflow.training import Interrupted, Trainer, train

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device is visible"),
]

FAST = ["trainer.progress=plain", "trainer.iw_k=8", "trainer.images=16", "trainer.iw_every=1"]
RUN = ["trainer.max_epochs=3", "objective.warmup_epochs=1", *FAST]


def eval_config(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_module("vaeflow.conf", version_base="1.3"):
        return compose("eval", overrides=["progress=plain", *overrides])


def test_train_sigterm_resume_and_eval_on_the_gpu_then_on_the_cpu(compose_train, tmp_path, caplog):
    reference = train(compose_train(*RUN, "trainer.device=cuda"), tmp_path / "a")
    with pytest.raises(Interrupted, match="SIGTERM: stopped at epoch 2, step 20"):
        train(compose_train(*RUN, "trainer.device=cuda"), tmp_path / "b", hooks=[SigtermAt(20)])
    saved = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=True)
    assert saved["generators"]["train_noise"]["device"] == "cuda" and saved["step"] == 20
    resumed = train(
        compose_train(*RUN, "trainer.device=cuda", f"trainer.resume={tmp_path / 'b'}"), tmp_path / "b"
    )
    assert resumed["steps"] == reference["steps"]
    a = torch.load(tmp_path / "a" / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=True)["model"]
    for name in a:  # same device, same order of work: the same weights (up to atomics in cuBLAS)
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-5)

    # evaluated on the GPU and on the CPU: the same images and the same counter-based noise
    on_gpu = evaluate(
        eval_config(f"run={tmp_path / 'b'}", "k=50", "limit=60", "device=cuda"), tmp_path / "b" / "eval" / "g"
    )
    on_cpu = evaluate(
        eval_config(f"run={tmp_path / 'b'}", "k=50", "limit=60", "device=cpu"), tmp_path / "b" / "eval" / "c"
    )
    assert on_gpu["device"].startswith("cuda") and on_cpu["device"] == "cpu"
    assert on_gpu["eval/iw_nll"] == pytest.approx(on_cpu["eval/iw_nll"], rel=1e-4)

    # the GPU run goes on on the CPU: its CUDA generator cannot, and the log says so
    with caplog.at_level("INFO", logger="vaeflow"):
        moved = train(
            compose_train(
                *RUN, "trainer.max_epochs=4", "trainer.device=cpu", f"trainer.resume={tmp_path / 'b'}"
            ),
            tmp_path / "b",
        )
    assert moved["epochs"] == 4
    assert "the training noise was saved on cuda and cannot continue on cpu" in caplog.text


@pytest.mark.parametrize("posterior", ["mean_field", "iaf", "maf", "planar", "householder", "realnvp"])
def test_a_training_step_never_waits_for_the_gpu(compose_train, tmp_path, posterior):
    overrides = [f"posterior={posterior}", "trainer.device=cuda", "trainer.batch_size=64", *FAST]
    if posterior != "mean_field":
        overrides.append("posterior.depth=2")
    trainer = Trainer(
        compose_train(*overrides), tmp_path, data=random_splits((1, 28, 28), (256, 64, 64), 0.2)
    )
    batches = list(trainer.train_loader.epoch(0))
    trainer.train_batch(batches[0], 0.5)  # the first step builds the optimizer's state
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for x in batches[1:]:
            trainer.train_batch(x, 0.5)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert trainer.guard.check(trainer.state.step, 1, "none") == 0
