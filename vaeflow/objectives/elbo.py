r"""The ELBO as a training loss, with KL warm-up, free bits and the STL gradient.

.. math:: \mathcal{L}(x) = E_{q(z|x)}[\log p(x|z)] - KL(q(z|x) \| p(z)) \le \log p(x)

References:
    | Auto-Encoding Variational Bayes (Kingma & Welling, 2014)
    | https://arxiv.org/abs/1312.6114
    | Improved Variational Inference with Inverse Autoregressive Flow (Kingma et al., 2016),
      free bits: https://arxiv.org/abs/1606.04934
    | Sticking the Landing (Roeder et al., 2017) https://arxiv.org/abs/1703.09194
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vaeflow.checks import integer, number
from vaeflow.errors import ConfigError
from vaeflow.model import VAE, Pass
from vaeflow.objectives.base import Objective
from vaeflow.objectives.registry import OBJECTIVES

__all__ = ["ElboTerms", "ElboObjective", "elbo", "training_loss"]


@dataclass
class ElboTerms:
    r"""Per-example terms ``[B]``, each averaged over the samples drawn."""

    rec: Tensor
    kl: Tensor

    @property
    def elbo(self) -> Tensor:
        return self.rec - self.kl


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
        kl: ``analytic`` or ``mc`` (see :func:`~vaeflow.objectives.resolve_kl`).
        n: samples per example (when ``eps`` is not given).
        eps: the posterior noise ``[n, B, D]``.
        generator: where to draw it from when it is not given.
    """
    out = model(x, n, analytic_kl=kl == "analytic", eps=eps, generator=generator)
    return _terms(out, out.log_q)


def _terms(out: Pass, log_q: Tensor) -> ElboTerms:
    r"""The terms of a forward pass: its closed-form KL where it computed one, else the Monte
    Carlo ``log q - log p(z)`` with ``log q`` as given (held fixed for STL)."""
    kl = out.kl if out.kl is not None else (log_q - out.log_pz).mean(0)
    return ElboTerms(out.log_px.mean(0), kl)


def training_loss(
    terms: ElboTerms, beta: float | Tensor = 1.0, free_bits: float = 0.0, latent_dim: int = 1
) -> Tensor:
    r"""``-(rec - beta * max(KL, lambda * D))``, averaged over the batch.

    Free bits (Kingma et al., 2016) with the whole latent vector as one group: the
    batch-averaged KL is not pushed below ``free_bits`` nats per latent dimension.
    """
    kl = terms.kl.mean()
    if free_bits > 0:
        kl = torch.clamp(kl, min=free_bits * latent_dim)
    return -(terms.rec.mean() - beta * kl)


@OBJECTIVES.register("elbo")
class ElboObjective(Objective):
    r"""The negative ELBO with KL warm-up and free bits (``objective=elbo``).

    With ``gradient=stl`` the Monte Carlo KL ``log q(z|x) - log p(z)`` enters the loss with
    q's parameters held fixed: the same value, the path gradient only (Roeder et al., 2017);
    it needs the Monte Carlo KL, so ``kl=analytic`` is refused with it.

    Arguments:
        model: the VAE.
        kl: ``analytic`` or ``mc`` (resolved, :func:`~vaeflow.objectives.resolve_kl`).
        samples: posterior samples per example.
        warmup_epochs: linear KL warm-up.
        free_bits: nats per latent dimension (:func:`training_loss`).
        gradient: ``reparam`` or ``stl``.
        family: the ``posterior=`` name, for messages.
    """

    name = "elbo"
    bound_name = "elbo"

    def __init__(
        self,
        model: VAE,
        kl: str = "mc",
        samples: int = 1,
        warmup_epochs: float = 0.0,
        free_bits: float = 0.0,
        gradient: str = "reparam",
        family: str = "",
    ) -> None:
        samples = integer("objective.samples", samples, 1, advice="draw at least 1 sample (an integer)")
        super().__init__(samples, warmup_epochs, gradient, ("reparam", "stl"), model, family)
        self.free_bits = float(number("objective.free_bits", free_bits, 0))
        self.latent_dim = model.latent_dim
        if self.gradient == "stl" and kl == "analytic":
            raise ConfigError(
                "objective.gradient=stl needs the Monte Carlo KL (log q(z|x) - log p(z) at the sample, with q's "
                "parameters held fixed); use kl=mc or kl=auto"
            )
        self.kl = "mc" if self.gradient == "stl" else kl

    def __call__(self, model: VAE, x: Tensor, eps: Tensor, beta: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        out = model(x, analytic_kl=self.kl == "analytic", eps=eps)
        terms = _terms(out, self.log_q(out, model))
        loss = training_loss(terms, beta, self.free_bits, self.latent_dim)
        rec, kl = terms.rec.detach(), terms.kl.detach()
        return loss, {"elbo": rec - kl, "rec": rec, "kl": kl}
