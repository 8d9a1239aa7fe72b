r"""Objectives: the ELBO with its KL estimators, KL warm-up, free bits, and the IWAE bound.

.. math:: \mathcal{L}(x) = E_{q(z|x)}[\log p(x|z)] - KL(q(z|x) \| p(z)) \le \log p(x)

The KL is either in closed form (``analytic``; only where the posterior has one against
the prior) or estimated by Monte Carlo on the same samples as the reconstruction term,
``log q(z|x) - log p(z)`` (``mc``); ``auto`` takes the closed form where it exists.

.. math:: \log p(x) \ge \mathcal{L}_k(x) = E\left[\log \frac{1}{k} \sum_{i=1}^k
    \frac{p(x, z_i)}{q(z_i|x)}\right], \quad \mathcal{L}_1 = \mathcal{L},

the importance-weighted bound, computed with ``logsumexp`` in sample chunks so that
memory stays bounded for large k.

References:
    | Auto-Encoding Variational Bayes (Kingma & Welling, 2014)
    | https://arxiv.org/abs/1312.6114
    | Importance Weighted Autoencoders (Burda et al., 2016)
    | https://arxiv.org/abs/1509.00519
    | Improved Variational Inference with Inverse Autoregressive Flow (Kingma et al., 2016),
      free bits: https://arxiv.org/abs/1606.04934
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from vaeflow.errors import ConfigError
from vaeflow.model import VAE
from vaeflow.priors import StandardNormal

__all__ = [
    "KL_ESTIMATORS",
    "ElboTerms",
    "resolve_kl",
    "elbo",
    "kl_beta",
    "training_loss",
    "log_weights",
    "iwae_bound",
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
    return model.posterior.has_analytic_kl and isinstance(model.prior, StandardNormal)


def resolve_kl(estimator: str, model: VAE, family: str = "") -> str:
    r"""Turns ``analytic | mc | auto`` into the estimator used with ``model``.

    Raises a :class:`ConfigError` for ``analytic`` where no closed form exists.
    """
    if estimator not in KL_ESTIMATORS:
        raise ConfigError(f"kl={estimator}: choose one of {', '.join(KL_ESTIMATORS)}")
    if estimator == "auto":
        return "analytic" if has_analytic_kl(model) else "mc"
    if estimator == "analytic" and not has_analytic_kl(model):
        name = family or type(model.posterior).__name__
        raise ConfigError(
            f"kl=analytic: posterior={name} has no closed-form KL to this prior; use kl=mc or kl=auto"
        )
    return estimator


def elbo(model: VAE, x: Tensor, kl: str = "mc", n: int = 1) -> ElboTerms:
    r"""The ELBO's terms for a batch ``x``, with ``n`` samples per example.

    Arguments:
        model: the VAE.
        x: images ``[B, C, H, W]``.
        kl: ``analytic`` or ``mc`` (see :func:`resolve_kl`).
        n: samples per example.
    """
    out = model(x, n, analytic_kl=kl == "analytic")
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


def log_weights(model: VAE, x: Tensor, k: int, chunk: int | None = None) -> Tensor:
    r"""Importance log-weights ``log p(x, z_i) - log q(z_i|x)``, ``[k, B]``.

    The encoder runs once; posterior sampling and the decoder run in chunks of at most
    ``chunk`` samples per example.
    """
    if k < 1:
        raise ConfigError(f"k={k}: the importance-weighted bound needs k >= 1 samples")
    chunk = k if chunk is None else max(1, min(chunk, k))
    h = model.encoder(x)
    parts = []
    for start in range(0, k, chunk):
        z, log_q = model.posterior(h, min(chunk, k - start))
        log_px, log_pz = model.log_joint(z, x)
        parts.append(log_px + log_pz - log_q)
    return torch.cat(parts, 0)


def iwae_bound(model: VAE, x: Tensor, k: int, chunk: int | None = None) -> Tensor:
    r"""``log (1/k) sum_i p(x, z_i) / q(z_i|x)`` per example, ``[B]`` (Burda et al., 2016)."""
    return torch.logsumexp(log_weights(model, x, k, chunk), 0) - math.log(k)
