"""A run is fixed by its seed and the settings that define the model, data and optimization:
logging and evaluation never change it; the trainer's figures are `vaeflow eval`'s; and a
training step reads nothing back from the device."""

from __future__ import annotations

import contextlib

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from training_helpers import random_splits

from vaeflow.evaluate import evaluate
from vaeflow.training import Trainer, train

# dynamic binarization, KL warm-up, two samples, an MC KL and early-stopping state all take part
MODEL = ["trainer.max_epochs=2", "trainer.threads=1", "posterior=iaf", "posterior.depth=2",
         "posterior.hidden_dims=[16]", "objective.warmup_epochs=1", "objective.samples=2"]  # fmt: skip
QUIET = ["trainer.images=0", "trainer.iw_every=0", "trainer.progress=plain", "trainer.log_every=50",
         "trainer.test=false"]  # fmt: skip
BUSY = ["trainer.images=64", "trainer.iw_every=1", "trainer.iw_k=7", "trainer.iw_limit=50", "trainer.progress=rich",
        "trainer.log_every=1", "trainer.val_batch_size=33", "trainer.checkpoint_every_steps=5", "trainer.test=true",
        "trainer.checkpoint_every_epochs=2"]  # fmt: skip


def test_logging_and_evaluation_settings_never_change_the_trained_model(compose_train, tmp_path):
    train(compose_train(*MODEL, *QUIET), tmp_path / "quiet")
    train(compose_train(*MODEL, *BUSY), tmp_path / "busy")
    a = torch.load(tmp_path / "quiet" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "busy" / "checkpoints" / "last.pt", weights_only=True)
    assert a["step"] == b["step"] > 0
    for name, value in a["model"].items():
        assert torch.equal(value, b["model"][name]), name
    for key, state in a["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(value, b["optimizer"]["state"][key][name]), (key, name)
    assert torch.equal(a["generators"]["train_noise"]["state"], b["generators"]["train_noise"]["state"])
    # and the busy run did evaluate: validation IW-NLL, grids and the test figures
    busy = torch.load(tmp_path / "busy" / "checkpoints" / "best.pt", weights_only=True)
    assert all("val/iw_nll" in record for record in busy["history"])
    assert (tmp_path / "busy" / "metrics.json").read_text().count("test/iw_nll") == 2  # value and se


def test_the_trainers_test_figures_are_vaeflow_eval_limit_n(compose_train, tmp_path):
    metrics = train(compose_train("trainer.max_epochs=2", "trainer.iw_k=20", "trainer.iw_limit=90", *QUIET[:-1],
                                  "trainer.threads=1"), tmp_path / "run")  # fmt: skip
    assert metrics["test_examples"] == 90 and metrics["test_split_size"] == 300
    GlobalHydra.instance().clear()
    with initialize_config_module("vaeflow.conf", version_base="1.3"):
        cfg = compose("eval", overrides=[f"run={tmp_path / 'run'}", "k=20", "limit=90", "progress=plain"])
    result = evaluate(cfg, tmp_path / "run" / "eval" / "e")
    # the same 90 images, the same noise, the same estimator: the same figures
    assert result["examples"] == 90
    for key in ("iw_nll", "iw_nll_se", "elbo", "elbo_se", "kl"):
        assert result[f"eval/{key}"] == pytest.approx(metrics[f"test/{key}"], rel=1e-9, abs=1e-9), key


class HostReads(contextlib.ContextDecorator):
    """Counts the Python-level ways of reading a tensor's values on the host."""

    NAMES = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")

    def __enter__(self):
        self.calls: list[str] = []
        self.saved = {name: getattr(torch.Tensor, name) for name in self.NAMES}
        for name, method in self.saved.items():
            setattr(torch.Tensor, name, self._counting(name, method))
        return self

    def _counting(self, name, method):
        def counted(tensor, *args, **kwargs):
            self.calls.append(name)
            return method(tensor, *args, **kwargs)

        return counted

    def __exit__(self, *exc):
        for name, method in self.saved.items():
            setattr(torch.Tensor, name, method)
        return False


@pytest.mark.parametrize(
    "posterior",
    ["mean_field", "full_cov", "autoregressive", "iaf", "maf", "realnvp", "planar", "radial", "householder"],
)
def test_a_training_step_reads_nothing_back_from_the_device(compose_train, tmp_path, posterior):
    # (sylvester's Björck iteration checks its convergence: every iteration on the CPU,
    # where that is free, and every 10 on a GPU)
    overrides = [f"posterior={posterior}", "model.latent_dim=4", "trainer.batch_size=8", *QUIET]
    if posterior in ("iaf", "maf", "realnvp", "autoregressive"):
        overrides.append("posterior.hidden_dims=[16]")
    if posterior not in ("mean_field", "full_cov", "autoregressive"):
        overrides.append("posterior.depth=2")
    trainer = Trainer(compose_train(*overrides), tmp_path, data=random_splits((1, 4, 4), (16, 8, 8)))
    batches = list(trainer.train_loader.epoch(0))
    trainer.train_batch(batches[0], 0.5)  # the first step builds lazy state (optimizer moments)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    with HostReads() as reads:
        result = trainer.train_batch(batches[1], 0.5)
    assert reads.calls == [], reads.calls
    assert bool(result.taken) and trainer.state.step == 2
    assert any(not torch.equal(a, p) for a, p in zip(before, trainer.model.parameters()))


def test_a_non_finite_step_is_skipped_on_the_device_and_counted(compose_train, tmp_path):
    data = random_splits((1, 4, 4), (16, 8, 8))
    trainer = Trainer(
        compose_train("model.latent_dim=3", "trainer.batch_size=8", *QUIET), tmp_path, data=data
    )
    assert trainer.step_fn.skips_on_device  # fused Adam, the default: found_inf, as GradScaler uses it
    x = data.train.images[:8]
    trainer.train_batch(x, 1.0)
    params = [p.detach().clone() for p in trainer.model.parameters()]
    moments = {k: {n: v.clone() for n, v in s.items()} for k, s in trainer.optimizer.state.items()}
    with HostReads() as reads:
        result = trainer.train_batch(x * float("nan"), 1.0)  # a NaN loss and NaN gradients
    assert reads.calls == [] and not bool(result.taken)
    assert all(torch.equal(a, p) for a, p in zip(params, trainer.model.parameters()))
    for key, state in trainer.optimizer.state.items():  # moments and step count untouched too
        assert all(torch.equal(v, moments[key][n]) for n, v in state.items()), key
    assert trainer.guard.check(step=2, epoch=1, best="none") == 1
    means, seen = trainer.epoch_stats.means()
    assert seen == 8  # the skipped step's images are not counted
    assert all(v == v for v in means.values())  # nor its NaNs
