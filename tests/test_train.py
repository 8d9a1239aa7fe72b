"""The training loop, called as a function (conf/train.yaml composed as the CLI does)."""

from __future__ import annotations

import math

import pytest
import torch

from vaeflow.errors import ConfigError, TrainingError
from vaeflow.objectives import ElboObjective
from vaeflow.training import train
from vaeflow.training.state import TrainingState

FAST = ["trainer.progress=plain", "trainer.iw_k=4", "trainer.images=0", "trainer.threads=1"]


def test_validation_elbo_improves_on_digits(compose_train, tmp_path):
    cfg = compose_train("trainer.max_epochs=6", "trainer.iw_every=3", *FAST)
    metrics = train(cfg, tmp_path)
    val = [row["val/elbo"] for row in metrics["history"]]
    assert len(val) == 6 and val[-1] > val[0] + 1.0
    assert metrics["best_epoch"] >= 4 and metrics["val/elbo"] == max(val)
    assert math.isfinite(metrics["test/elbo"]) and metrics["val/iw_nll"] > 0


def test_early_stopping_stops_after_patience(compose_train, tmp_path):
    # min_delta so large that no epoch after the first counts as an improvement
    cfg = compose_train("trainer.max_epochs=10", "trainer.early_stopping.patience=2",
                        "trainer.early_stopping.min_delta=1000", *FAST)  # fmt: skip
    metrics = train(cfg, tmp_path)
    assert metrics["stopped_by"] == "early_stopping"
    assert metrics["epochs"] == 3 and metrics["best_epoch"] == 1


def test_an_iwae_run_is_chosen_by_its_validation_iw_bound(compose_train, tmp_path):
    cfg = compose_train("trainer.max_epochs=4", "objective=iwae", "objective.k=8", *FAST)
    metrics = train(cfg, tmp_path)
    history = metrics["history"]
    bound = [row["val/iw_bound"] for row in history]
    assert metrics["selected_by"] == "val/iw_bound" and metrics["val/iw_bound"] == max(bound)
    best = metrics["best_epoch"]
    assert bound[best - 1] == max(bound) and metrics["val/elbo"] == history[best - 1]["val/elbo"]
    # the IW bound with k=8 lies above the ELBO on every epoch's validation split (by 0.3-1 nats here)
    assert all(row["val/iw_bound"] > row["val/elbo"] for row in history)


def test_a_best_score_from_before_the_iw_bound_is_its_validation_elbo():
    state = TrainingState()
    old = state.state_dict() | {"best": {"val_elbo": -90.0, "epoch": 3}}
    state.load_state_dict(old)
    assert state.best["score"] == -90.0
    assert not state.improve(-91.0, -91.0, 0.0, True) and state.improve(-89.0, -95.0, 0.0, True)
    assert state.best == {"score": -89.0, "val_elbo": -95.0, "epoch": 0}


def test_non_finite_steps_are_skipped_then_stop_the_run(compose_train, tmp_path, monkeypatch):
    real_call, calls = ElboObjective.__call__, {"n": 0}
    steps_per_epoch = math.ceil(1297 / 100)

    def poisoned(self, model, x, eps, beta):  # the first epoch is clean, then every training loss is NaN
        calls["n"] += 1
        loss, stats = real_call(self, model, x, eps, beta)
        return (loss * math.nan if calls["n"] > steps_per_epoch else loss), stats

    monkeypatch.setattr(ElboObjective, "__call__", poisoned)
    cfg = compose_train("trainer.max_epochs=5", "trainer.max_bad_steps=3", *FAST)
    with pytest.raises(
        TrainingError, match=r"3 non-finite steps in a row at epoch 2; the last good checkpoint is .*best\.pt"
    ):
        train(cfg, tmp_path)
    state = torch.load(tmp_path / "checkpoints" / "best.pt", weights_only=True)
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.max_epochs=0", "trainer.max_epochs=0"),
        ("trainer.batch_size=0", "trainer.batch_size=0"),
        ("model.latent_dim=0", "model.latent_dim=0"),
        ("posterior=iaf posterior.depth=0", "posterior.depth=0"),
        ("optim.lr=-1", "optim.lr=-1"),
        ("trainer.device=tpu", "trainer.device=tpu"),
        ("encoder.activation=swish", "unknown activation 'swish'"),
    ],
)
def test_bad_values_are_config_errors(compose_train, tmp_path, override, message):
    cfg = compose_train(*override.split(), *FAST)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        train(cfg, tmp_path)
