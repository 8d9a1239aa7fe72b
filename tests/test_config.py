"""Every option of every config group composes, and the keys users type exist."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from vaeflow.data import DATASETS
from vaeflow.model import build_model
from vaeflow.nets import DECODERS, ENCODERS
from vaeflow.posteriors import POSTERIORS

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and not p.name.startswith("__"))
OPTIONS = [(g, y.stem) for g in GROUPS for y in sorted((CONF / g).glob("*.yaml"))]
#: Image shapes for the networks that do not take the default digits shape (1, 8, 8).
NET_SHAPES = {"gated_conv": (1, 28, 28)}


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes(compose_train, group: str, option: str):
    cfg = compose_train(f"{group}={option}")
    OmegaConf.resolve(cfg)
    if group == "posterior":
        assert cfg.posterior.name == option
        model = build_model(cfg, (1, 8, 8))  # every family builds on the default digits shape
        assert model.posterior.latent_dim == cfg.model.latent_dim
    if group in ("encoder", "decoder"):
        shape = NET_SHAPES.get(option, (1, 8, 8))
        model = build_model(cfg, shape)
        assert cfg[group].name == option and model.decode_mean(model.prior.sample(2)).shape == (2, *shape)
    if group == "dataset":
        assert cfg.dataset.name in DATASETS


def test_every_registered_family_has_a_config():
    configs = {y.stem for y in (CONF / "posterior").glob("*.yaml")}
    assert set(POSTERIORS.names()) <= configs


@pytest.mark.parametrize(("group", "registry"), [("encoder", ENCODERS), ("decoder", DECODERS)])
def test_every_registered_network_has_a_config(group: str, registry):
    assert set(registry.names()) <= {y.stem for y in (CONF / group).glob("*.yaml")}


def test_the_keys_users_type(compose_train):
    cfg = compose_train(
        "dataset=binarized_mnist",
        "dataset.root=/somewhere",
        "dataset.download=true",
        "encoder=mlp",
        "decoder=mlp",
        "posterior=iaf",
        "posterior.depth=8",
        "kl=mc",
        "model.latent_dim=40",
        "optim.lr=5e-4",
        "trainer.batch_size=64",
        "trainer.max_epochs=3",
        "trainer.device=cpu",
        "seed=7",
    )
    assert (cfg.dataset.root, cfg.dataset.download, cfg.posterior.depth) == ("/somewhere", True, 8)
    assert (cfg.kl.estimator, cfg.model.latent_dim, cfg.optim.lr) == ("mc", 40, 5e-4)
    assert (cfg.trainer.batch_size, cfg.trainer.max_epochs, cfg.trainer.device, cfg.seed) == (64, 3, "cpu", 7)


@pytest.mark.parametrize("preset", ["digits_2d", "mnist_2d"])
def test_the_2d_presets_train_every_family_with_two_latents(preset: str):
    # the sweep of the preset lists every registered family, and each builds with 2 latents
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="vaeflow.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"experiment={preset}"], return_hydra_config=True)
    families = cfg.hydra.sweeper.params.posterior.split(",")
    assert sorted(families) == POSTERIORS.names() and cfg.model.latent_dim == 2
    for family in families:
        with initialize_config_module(config_module="vaeflow.conf", version_base="1.3"):
            one = compose(config_name="train", overrides=[f"experiment={preset}", f"posterior={family}"])
        assert build_model(one, (1, 28, 28)).latent_dim == 2


@pytest.mark.parametrize(
    "preset, shape, params", [("mnist8_cpu", (1, 28, 28), 2), ("cifar10", (3, 32, 32), 6)]
)
def test_the_8_bit_presets_build_a_discrete_likelihood_model(preset: str, shape: tuple, params: int):
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="vaeflow.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"experiment={preset}", "posterior=iaf"])
    assert cfg.likelihood.name == "discretized_logistic" and cfg.dataset.get("binarize", "none") == "none"
    model = build_model(cfg, shape, 256)
    assert model.likelihood.param_shape == (params, *shape[1:])
    out = model.decoder(torch.zeros(2, cfg.model.latent_dim))
    assert out.shape == (2, params * shape[1] * shape[2])
