r"""Objectives: the ELBO with its KL estimators, KL warm-up and free bits, as a training loss.

.. math:: \mathcal{L}(x) = E_{q(z|x)}[\log p(x|z)] - KL(q(z|x) \| p(z)) \le \log p(x)

The KL is either in closed form (``analytic``; only where the posterior has one against
the prior) or estimated by Monte Carlo on the same samples as the reconstruction term,
``log q(z|x) - log p(z)`` (``mc``); ``auto`` takes the closed form where it exists.

An objective gives the trainer two things (:class:`ElboObjective`): per-example *terms* of
a batch from given posterior noise (the part worth compiling), and the *loss* from them;
the trainer sums the terms into statistics it logs without knowing their names. The
importance-weighted estimate of log p(x) is :func:`vaeflow.evaluate.importance_weighted`,
the one estimator of validation, test and ``vaeflow eval``.

References:
    | Auto-Encoding Variational Bayes (Kingma & Welling, 2014)
    | https://arxiv.org/abs/1312.6114
    | Improved Variational Inference with Inverse Autoregressive Flow (Kingma et al., 2016),
      free bits: https://arxiv.org/abs/1606.04934
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vaeflow.errors import ConfigError
from vaeflow.model import VAE

__all__ = [
    "KL_ESTIMATORS",
    "ElboTerms",
    "ElboObjective",
    "resolve_kl",
    "elbo",
    "kl_beta",
    "training_loss",
]

KL_ESTIMATORS = ("analytic", "mc", "auto")


@dataclass
class ElboTerms:
    r"""Per-example terms ``[B]``, each averaged over the samples drawn."""

    rec: Tensor
    kl: Tensor

    @property
    def elbo(self) -> Tensor:
        return self.rec - self.kl


def has_analytic_kl(model: VAE) -> bool:
    r"""Whether the (posterior, prior) pair has a closed-form KL: a Gaussian family against a
    diagonal Gaussian prior (:meth:`~vaeflow.priors.Prior.gaussian_params`)."""
    return model.posterior.has_analytic_kl and model.prior.gaussian_params() is not None


def resolve_kl(estimator: str, model: VAE, family: str = "", prior: str = "") -> str:
    r"""Turns ``analytic | mc | auto`` into the estimator used with ``model``.

    Raises a :class:`ConfigError` for ``analytic`` where no closed form exists.
    """
    if estimator not in KL_ESTIMATORS:
        raise ConfigError(f"kl={estimator}: choose one of {', '.join(KL_ESTIMATORS)}")
    if estimator == "auto":
        return "analytic" if has_analytic_kl(model) else "mc"
    if estimator == "analytic" and not has_analytic_kl(model):
        name = family or type(model.posterior).__name__
        prior = prior or type(model.prior).__name__
        raise ConfigError(
            f"kl=analytic: posterior={name} has no closed-form KL to prior={prior} (only Gaussian "
            "posteriors against Gaussian priors have one); use kl=mc or kl=auto"
        )
    return estimator


def elbo(
    model: VAE,
    x: Tensor,
    kl: str = "mc",
    n: int = 1,
    *,
    eps: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> ElboTerms:
    r"""The ELBO's terms for a batch ``x``, with ``n`` samples per example.

    Arguments:
        model: the VAE.
        x: images ``[B, C, H, W]``.
        kl: ``analytic`` or ``mc`` (see :func:`resolve_kl`).
        n: samples per example (when ``eps`` is not given).
        eps: the posterior noise ``[n, B, D]``.
        generator: where to draw it from when it is not given.
    """
    out = model(x, n, analytic_kl=kl == "analytic", eps=eps, generator=generator)
    rec = out.log_px.mean(0)
    if kl == "analytic":
        kl_term = out.kl
    else:
        kl_term = (out.log_q - out.log_pz).mean(0)
    return ElboTerms(rec, kl_term)


def kl_beta(epoch: float, warmup_epochs: float) -> float:
    r"""KL weight of linear warm-up: ``min(1, epoch / warmup_epochs)`` (1 without warm-up).

    ``epoch`` counts fractional epochs, so beta rises every step.
    """
    if warmup_epochs <= 0:
        return 1.0
    return min(1.0, epoch / warmup_epochs)


def training_loss(terms: ElboTerms, beta: float = 1.0, free_bits: float = 0.0, latent_dim: int = 1) -> Tensor:
    r"""``-(rec - beta * max(KL, lambda * D))``, averaged over the batch.

    Free bits (Kingma et al., 2016) with the whole latent vector as one group: the
    batch-averaged KL is not pushed below ``free_bits`` nats per latent dimension.
    """
    kl = terms.kl.mean()
    if free_bits > 0:
        kl = torch.clamp(kl, min=free_bits * latent_dim)
    return -(terms.rec.mean() - beta * kl)


class ElboObjective:
    r"""The training objective: the negative ELBO with KL warm-up and free bits.

    Arguments:
        kl: ``analytic`` or ``mc`` (resolved, :func:`resolve_kl`).
        samples: posterior samples per example.
        free_bits: nats per latent dimension (:func:`training_loss`).
        latent_dim: D.
    """

    def __init__(self, kl: str, samples: int = 1, free_bits: float = 0.0, latent_dim: int = 1) -> None:
        self.kl, self.samples, self.free_bits, self.latent_dim = kl, samples, free_bits, latent_dim

    def terms(self, model: VAE, x: Tensor, eps: Tensor) -> dict[str, Tensor]:
        r"""Per-example ``rec``, ``kl`` and ``elbo`` ``[B]`` of the noise ``eps [samples, B, D]``."""
        terms = elbo(model, x, self.kl, eps=eps)
        return {"elbo": terms.elbo, "rec": terms.rec, "kl": terms.kl}

    def loss(self, terms: dict[str, Tensor], beta: float) -> Tensor:
        r"""The batch's loss, :func:`training_loss` of the terms with KL weight ``beta``."""
        return training_loss(ElboTerms(terms["rec"], terms["kl"]), beta, self.free_bits, self.latent_dim)
