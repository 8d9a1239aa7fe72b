r"""The two implementations under test: vaeflow's own trainer, and the same VAE built from
pyro-ppl's conditional transforms (``scripts/pyro_models.py``), trained in a plain torch loop.

A :class:`Subject` trains on a batch (``step``), gives its differentiable loss (``loss``,
for counting FLOPs) and evaluates (``val_elbo``, ``iw``). A step leaves its figures on the
device, so that timed windows measure the device's work and not host reads.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from typing import Any

import torch

from benchkit.data import ROOT
from vaeflow.data import BatchLoader, DataSplits
from vaeflow.randomness import seed_everything

__all__ = ["Subject", "vaeflow_config", "vaeflow_subject", "pyro_subject"]


class Subject:
    r"""One model under test: ``step(x)`` trains on a batch and returns ``([rec, kl] sums,
    taken)`` as device tensors (``taken``: false for a skipped step); ``loss(x)`` is the
    differentiable objective; ``val_elbo(images)`` and ``iw(images, k)`` evaluate."""

    model: torch.nn.Module
    loader: BatchLoader
    step: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    loss: Callable[[torch.Tensor], torch.Tensor]
    val_elbo: Callable[[torch.Tensor], float]
    iw: Callable[[torch.Tensor, int], None]
    iw_path: str
    close: Callable[[], None] = staticmethod(lambda: None)


def vaeflow_config(args: argparse.Namespace, family: str, real_data: bool):
    from hydra import compose, initialize_config_module
    from omegaconf import open_dict

    hidden = ",".join(str(w) for w in args.hidden)
    overrides = [
        f"posterior={family}",
        f"model.latent_dim={args.latent_dim}",
        f"encoder.hidden_dims=[{hidden}]",
        f"decoder.hidden_dims=[{','.join(str(w) for w in args.hidden[::-1])}]",
        f"trainer.batch_size={args.batch_size}",
        f"trainer.threads={args.threads}" if args.device == "cpu" else "trainer.threads=null",
        f"trainer.device={args.device}",
        "trainer.images=0",
        "trainer.iw_every=0",
        "trainer.progress=plain",
        f"seed={args.seed}",
    ]
    if real_data:
        overrides += ["dataset=binarized_mnist", f"dataset.root={args.data_root}"]
    if args.optim:
        overrides.append(f"optim={args.optim}")
    with initialize_config_module(config_module="vaeflow.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    with open_dict(cfg):
        if "depth" in cfg.posterior:
            cfg.posterior.depth = args.depth
        if args.lr is not None:
            cfg.optim.lr = args.lr
        if args.optim_impl != "config":
            cfg.optim.foreach = args.optim_impl == "foreach"
            cfg.optim.fused = True if args.optim_impl == "fused" else None
        if args.compile is not None and "compile" in cfg.trainer:
            cfg.trainer.compile = args.compile
    return cfg


def vaeflow_subject(args: argparse.Namespace, family: str, data: DataSplits, real_data: bool) -> Subject:
    r"""vaeflow's :class:`~vaeflow.training.Trainer`: each step is ``Trainer.train_batch``,
    the loop's own step with its statistics and non-finite guard."""
    from vaeflow.evaluate import importance_weighted
    from vaeflow.training import Trainer, validation_elbo

    cfg = vaeflow_config(args, family, real_data)
    tmp = tempfile.TemporaryDirectory(prefix="vaeflow-bench-")
    trainer = Trainer(cfg, tmp.name, data=data)
    model = trainer.model
    s = Subject()
    s.model, s.loader = model, trainer.train_loader

    def step(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        result = trainer.train_batch(x, 1.0)
        return torch.stack([result.stats["rec"], result.stats["kl"]]).double(), result.taken

    def loss(x: torch.Tensor) -> torch.Tensor:
        eps = torch.randn(trainer.objective.samples, x.shape[0], model.latent_dim, device=x.device)
        return trainer.objective(model, x, eps, torch.ones((), device=x.device))[0]

    def val_elbo(images: torch.Tensor) -> float:
        return validation_elbo(model, images.to(trainer.device), trainer.kl)["elbo"]

    def iw(images: torch.Tensor, k: int) -> None:
        importance_weighted(model, images, k)

    s.step, s.loss, s.val_elbo, s.iw, s.close = step, loss, val_elbo, iw, tmp.cleanup
    s.iw_path = "vaeflow.evaluate.importance_weighted"
    return s


def pyro_subject(args: argparse.Namespace, family: str, data: DataSplits) -> Subject:
    from pyro_models import build_pyro_vae  # scripts/, on the path of every bench script

    device = torch.device(args.device)
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    iaf_hidden = _iaf_hidden(args)
    model = build_pyro_vae(family, args.latent_dim, args.hidden, args.depth, 784, iaf_hidden).to(device)
    optim = _optim_settings(args)
    kwargs = {k: optim[k] for k in ("lr", "eps", "weight_decay") if k in optim}
    kwargs["betas"] = tuple(optim.get("betas", (0.9, 0.999)))
    if args.pyro_optim_impl != "default":
        kwargs["foreach"] = args.pyro_optim_impl == "foreach"
        if args.pyro_optim_impl == "fused":
            kwargs["fused"] = True
    optimizer = {"adam": torch.optim.Adam, "adamax": torch.optim.Adamax}[optim["name"]](
        model.parameters(), **kwargs
    )
    if args.pyro_no_validation:
        import pyro

        pyro.enable_validation(False)  # pyro (and torch.distributions) check arguments by default
    s = Subject()
    s.model = model
    s.loader = BatchLoader(data.train, args.batch_size, shuffle=True, seed=args.seed, device=device)

    taken = torch.ones((), dtype=torch.bool, device=device)

    def step(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loss, rec, kl = model.loss(x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return torch.stack([rec.detach().sum(), kl.detach().sum()]).double(), taken

    def val_elbo(images: torch.Tensor) -> float:
        torch.manual_seed(args.seed + 1)
        total = 0.0
        with torch.inference_mode():
            for start in range(0, images.shape[0], 500):
                rec, kl = model.elbo_terms(images[start : start + 500].to(device))
                total += (rec - kl).double().sum().item()
        return total / images.shape[0]

    def iw(images: torch.Tensor, k: int) -> None:
        chunk = max(1, min(k, args.pyro_iw_pairs // images.shape[0]))
        with torch.inference_mode():
            model.iwae_bound(images.to(device), k, chunk)

    s.step, s.loss, s.val_elbo, s.iw = step, lambda x: model.loss(x)[0], val_elbo, iw
    s.iw_path = f"pyro_models.PyroVAE.iwae_bound (chunks of {args.pyro_iw_pairs:,} pairs)"
    return s


def _optim_settings(args: argparse.Namespace) -> dict[str, Any]:
    import yaml

    name = args.optim or "adam"
    optim = yaml.safe_load((ROOT / "conf" / "optim" / f"{name}.yaml").read_text())
    if args.lr is not None:
        optim["lr"] = args.lr
    return optim


def _iaf_hidden(args: argparse.Namespace) -> list[int] | None:
    if args.pyro_iaf_hidden == "pyro":
        return None
    if args.pyro_iaf_hidden == "match":
        import yaml

        return list(yaml.safe_load((ROOT / "conf" / "posterior" / "iaf.yaml").read_text())["hidden_dims"])
    return [int(w) for w in args.pyro_iaf_hidden.split(",")]
