r"""The importance-weighted bound as a training loss (Burda et al., 2016), with its STL and
DReG gradients.

.. math:: \mathcal{L}_k(x) = E_{z_1..z_k \sim q}\Big[\log \frac1k \sum_{i=1}^k w_i\Big],
    \quad w_i = \frac{p(x, z_i)}{q(z_i|x)}, \qquad
    \mathcal{L}_1 \le \mathcal{L}_k \le \mathcal{L}_{k+1} \le \log p(x).

Its reparameterization gradient is ``sum_i w~_i d log w_i`` with the normalized weights
``w~_i = w_i / sum_j w_j``. For the inference network that estimate degrades as k grows
(its signal-to-noise ratio falls as ``1/sqrt(k)``, Rainforth et al., 2018). The doubly
reparameterized estimator (Tucker et al., 2019) removes the score term:

.. math:: \nabla_\phi \mathcal{L}_k = E_\epsilon\Big[\sum_i \tilde w_i^2
    \frac{\partial \log w_i}{\partial z_i} \frac{\partial z_i}{\partial \phi}\Big]

with ``log q`` held fixed in ``log w_i``. It is computed in one backward pass: the
surrogate ``sum_i stop(w~_i) log w_i`` gives the decoder (and prior) its IWAE gradient
``sum_i w~_i d log w_i``, and a hook on ``z`` multiplies what reaches the path by ``w~_i``
once more. With KL warm-up, ``log w_i = log p(x|z_i) + beta (log p(z_i) - log q(z_i|x))``,
the same identity gives the factor ``1 - beta + beta w~_i`` instead of ``w~_i``.

Statistics: ``iw_bound`` (the bound at beta = 1), ``elbo`` (the mean of ``log w_i``),
``rec``, ``kl`` and ``ess``, the effective sample size ``1 / sum_i w~_i^2`` in ``[1, k]``.

References:
    | Importance Weighted Autoencoders (Burda et al., 2016) https://arxiv.org/abs/1509.00519
    | Doubly Reparameterized Gradient Estimators for Monte Carlo Objectives (Tucker et al.,
      2019) https://arxiv.org/abs/1810.04152
    | Tighter Variational Bounds are Not Necessarily Better (Rainforth et al., 2018)
      https://arxiv.org/abs/1802.04537
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vaeflow.checks import integer
from vaeflow.model import VAE
from vaeflow.objectives.base import Objective, objective_label
from vaeflow.objectives.registry import OBJECTIVES

__all__ = ["IwaeObjective", "effective_sample_size"]


def effective_sample_size(log_w: Tensor) -> Tensor:
    r"""``1 / sum_i w~_i^2`` of log-weights ``[k, B]``, per example ``[B]``."""
    return torch.exp(-torch.logsumexp(2 * torch.log_softmax(log_w, dim=0), dim=0))


@OBJECTIVES.register("iwae")
class IwaeObjective(Objective):
    r"""The negative IW bound with k samples (``objective=iwae``).

    Arguments:
        model: the VAE.
        kl: unused in training (the weights hold ``log p(z) - log q(z|x)`` at each sample);
            the ``kl`` group sets the validation ELBO's estimator.
        k: importance samples per example.
        warmup_epochs: linear warm-up of the weight of ``log p(z) - log q(z|x)`` in ``log w``.
        gradient: ``reparam``, ``stl`` (biased for k > 1) or ``dreg``.
        family: the ``posterior=`` name, for messages.
    """

    name = "iwae"
    bound_name = "iw_bound"

    def __init__(
        self,
        model: VAE,
        kl: str = "mc",
        k: int = 5,
        warmup_epochs: float = 0.0,
        gradient: str = "reparam",
        family: str = "",
    ) -> None:
        k = integer("objective.k", k, 1, advice="the IW bound needs an integer number of samples k >= 1")
        super().__init__(k, warmup_epochs, gradient, ("reparam", "stl", "dreg"), model, family)
        self.k = self.validation_k = k

    @property
    def label(self) -> str:
        return objective_label(self.name, self.k, self.gradient)

    def __call__(self, model: VAE, x: Tensor, eps: Tensor, beta: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        out = model(x, eps=eps)
        log_q = self.log_q(out, model)
        log_w = out.log_px + beta * (out.log_pz - log_q)  # [k, B]
        bound = torch.logsumexp(log_w, dim=0) - math.log(self.k)
        if self.gradient == "dreg":
            weights = torch.softmax(log_w.detach(), dim=0)
            if out.z.requires_grad:
                factor = (1 - beta + beta * weights).unsqueeze(-1)
                out.z.register_hook(lambda grad: grad * factor)
            surrogate = (weights * log_w).sum(0)
            bound = bound.detach() + surrogate - surrogate.detach()  # the bound's value, DReG's gradient
        loss = -bound.mean()
        with torch.no_grad():
            rec, log_ratio = out.log_px, out.log_pz - out.log_q
            log_w1 = rec + log_ratio
            stats = {
                "iw_bound": torch.logsumexp(log_w1, dim=0) - math.log(self.k),
                "elbo": log_w1.mean(0),
                "rec": rec.mean(0),
                "kl": -log_ratio.mean(0),
                "ess": effective_sample_size(log_w1),
            }
        return loss, stats
