r"""What the trainer measures besides training, each under its own randomness: the validation
ELBO, the IW-NLL estimates, the image grids and the final test figures.

None of them draws from the training's generators, so switching any of them on or off, or
changing how often or on how many images, never changes the trained model. The noise is
counter-based (:func:`~vaeflow.randomness.example_noise`) with the evaluation seed
:data:`EVAL_SEED`, so a figure does not depend on the batch size, and every epoch scores
the same noise (common random numbers, which makes epochs comparable). The IW-NLL goes
through the one estimator, :func:`~vaeflow.evaluate.importance_weighted`, on the subset of
:func:`~vaeflow.data.seeded_subset`: the trainer's test figure on N images is the figure of
``vaeflow eval limit=N k=<trainer.iw_k>``, on the same images with the same noise.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchvision.utils import make_grid

from vaeflow.data import Split, seeded_subset
from vaeflow.evaluate import importance_weighted
from vaeflow.model import VAE
from vaeflow.objectives import elbo
from vaeflow.randomness import example_noise
from vaeflow.stats import mean_se

__all__ = ["EVAL_SEED", "validation_elbo", "Validator", "test_figures"]

#: the seed of every figure the trainer measures, ``vaeflow eval``'s default ``seed``
EVAL_SEED = 0


@torch.inference_mode()
def validation_elbo(
    model: VAE, images: Tensor, kl: str, batch_size: int = 500, seed: int = EVAL_SEED
) -> dict[str, float]:
    r"""Mean ELBO, reconstruction and KL per example over ``images`` (on the model's device),
    one posterior sample per example from the counter-based noise of ``seed``; with the KL
    estimator ``kl`` of training (``analytic`` or ``mc``). One host read at the end."""
    model.eval()
    device = images.device
    sums = torch.zeros(2, dtype=torch.float64, device=device)
    for start in range(0, images.shape[0], batch_size):
        x = images[start : start + batch_size]
        ids = torch.arange(start, start + x.shape[0], device=device)
        eps = example_noise(ids, 0, 1, model.latent_dim, seed, device=device, dtype=x.dtype)
        terms = elbo(model, x, kl, eps=eps)
        sums += torch.stack([terms.rec.double().sum(), terms.kl.double().sum()])
    rec, kl_value = (sums / max(images.shape[0], 1)).tolist()
    return {"elbo": rec - kl_value, "rec": rec, "kl": kl_value}


def test_figures(model: VAE, split: Split, k: int, limit: int, seed: int = EVAL_SEED) -> dict[str, Any]:
    r"""The test figures of ``metrics.json``, all on the same ``limit`` images (0: all) and
    the same k samples each: the IW-NLL, the ELBO, reconstruction and KL with their standard
    errors, as ``vaeflow eval limit=<limit> k=<k> seed=<seed>`` computes them."""
    ids = seeded_subset(len(split), limit, seed)
    est = importance_weighted(model, split.images[ids], k, seed=seed, ids=ids)
    nll, nll_se = mean_se(-est.log_px)
    value, value_se = mean_se(est.elbo)
    figures = {"iw_nll": nll, "iw_nll_se": nll_se, "elbo": value, "elbo_se": value_se}
    figures |= {"rec": mean_se(est.rec)[0], "kl": mean_se(est.kl)[0]}
    return {"figures": figures, "examples": len(ids)}


class Validator:
    r"""The trainer's measurements on the validation split.

    Arguments:
        model: the VAE.
        split: the validation split.
        kl: the KL estimator of training.
        batch_size: images per validation batch.
        iw_limit: images of the IW-NLL estimate (a seeded subset; 0: all).
        images: images in the sample and reconstruction grids (0: none).
        device: where the images live.
    """

    def __init__(
        self,
        model: VAE,
        split: Split,
        kl: str,
        batch_size: int,
        iw_limit: int,
        images: int,
        device: torch.device,
    ) -> None:
        self.model, self.kl, self.batch_size = model, kl, batch_size
        self.images = split.images.to(device)
        self.iw_ids = seeded_subset(len(split), iw_limit, EVAL_SEED)
        self.iw_images = self.images[self.iw_ids.to(device)]
        self.grid_x = self.images[: images // 2]
        self.grid_samples, self.device = images, torch.device(device)

    def elbo(self) -> dict[str, float]:
        r"""Mean ELBO, reconstruction and KL of the validation split."""
        return validation_elbo(self.model, self.images, self.kl, self.batch_size)

    def iw_bound(self, k: int) -> float:
        r"""The mean IW bound with k samples over the whole validation split (what an
        ``objective=iwae`` run with that k trains for, and is chosen by)."""
        return mean_se(importance_weighted(self.model, self.images, k, seed=EVAL_SEED).log_px)[0]

    def iw_nll(self, k: int) -> float:
        r"""The mean IW-NLL estimate of the validation subset, k samples each."""
        est = importance_weighted(self.model, self.iw_images, k, seed=EVAL_SEED, ids=self.iw_ids)
        return mean_se(-est.log_px)[0]

    @torch.inference_mode()
    def grids(self) -> dict[str, Tensor]:
        r"""``samples`` (the mean images of prior draws from a fixed generator, drawn from the
        prior as it is now, which a learned prior changes) and ``reconstructions``
        (validation images beside the mean image of one fixed posterior draw), as image grids."""
        self.model.eval()
        x = self.grid_x
        ids = torch.arange(x.shape[0], device=x.device)
        eps = example_noise(ids, 0, 1, self.model.latent_dim, EVAL_SEED, device=x.device)
        pairs = torch.stack([x, self.model.reconstruct(x, eps.to(x.dtype))], 1).flatten(0, 1)
        generator = torch.Generator(self.device).manual_seed(EVAL_SEED)
        samples = self.model.sample_images(self.grid_samples, generator)
        return {"samples": _grid(samples), "reconstructions": _grid(pairs)}


def _grid(images: Tensor) -> Tensor:
    return make_grid(images.float().cpu().clamp(0, 1), nrow=8, padding=1, pad_value=0.5)
