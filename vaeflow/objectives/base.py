r"""What every training objective shares: the KL warm-up, the gradient estimators of the
inference network, and log q(z|x) with q's parameters held fixed.

An objective is called on a batch and the posterior noise drawn for it,
``loss, stats = objective(model, x, eps, beta)``: ``loss`` is the scalar to minimize, a
surrogate whose gradient is the estimator chosen by ``objective.gradient``, and ``stats``
per-example figures ``[B]`` (no gradient) that the trainer sums, logs and checkpoints
without knowing their names. ``bound_name`` names the one that is the training bound.

Gradient estimators of the inference network's parameters phi (the decoder's gradient is
the same in all three):

- ``reparam``: the reparameterization gradient of the bound (Kingma & Welling, 2014).
- ``stl``, sticking the landing (Roeder et al., 2017): ``log q`` enters the surrogate with
  its parameters held fixed, so that only the path ``z(eps, phi)`` carries phi's gradient;
  the score term ``-E[d log q_phi(z) / d phi]``, zero in expectation for the ELBO, is
  dropped. Its variance vanishes where q equals the true posterior. For the ELBO it is
  unbiased; for the IW bound with k > 1 it is biased (Tucker et al., 2019, section 3),
  since there the score term is weighted by the normalized weights.
- ``dreg``, doubly reparameterized (Tucker et al., 2019): for the IW bound, the score term
  is rewritten by the reparameterization identity
  ``E_q[f(z) d log q / d phi] = E_eps[df/dz dz/dphi]``, which turns the phi gradient into
  ``sum_i w_i^2 d log w_i / dz_i dz_i / dphi`` (normalized weights ``w``, log q held
  fixed); see :mod:`vaeflow.objectives.iwae`.

Both need ``log q(z|x)`` of a given z (:func:`stopped_log_q`): the families with an
inverse. Planar, radial and Sylvester flows have none and are refused.

References:
    | Sticking the Landing (Roeder et al., 2017) https://arxiv.org/abs/1703.09194
    | Doubly Reparameterized Gradient Estimators (Tucker et al., 2019)
      https://arxiv.org/abs/1810.04152
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from vaeflow.checks import choice, number
from vaeflow.errors import ConfigError
from vaeflow.model import VAE, Pass

__all__ = ["GRADIENTS", "Objective", "kl_beta", "objective_label", "stopped_log_q"]

GRADIENTS = ("reparam", "stl", "dreg")


def kl_beta(epoch: float, warmup_epochs: float) -> float:
    r"""KL weight of linear warm-up: ``min(1, epoch / warmup_epochs)`` (1 without warm-up).

    ``epoch`` counts fractional epochs, so beta rises every step.
    """
    if warmup_epochs <= 0:
        return 1.0
    return min(1.0, epoch / warmup_epochs)


def objective_label(name: str, k: int | None = None, gradient: str = "reparam") -> str:
    r"""What a run optimizes, in a few words: ``elbo``, ``iwae k=50 dreg``."""
    label = name + (f" k={k}" if k is not None else "")
    return label + ("" if gradient == "reparam" else f" {gradient}")


class _LogProb(nn.Module):
    r"""``posterior.log_prob`` as a module's forward, for :func:`torch.func.functional_call`."""

    def __init__(self, posterior: nn.Module) -> None:
        super().__init__()
        self.posterior = posterior

    def forward(self, z: Tensor, h: Tensor) -> Tensor:
        return self.posterior.log_prob(z, h)


def stopped_log_q(posterior: nn.Module, z: Tensor, h: Tensor) -> Tensor:
    r"""``log q(z|x) [n, B]`` of given ``z [n, B, D]`` with q's parameters held fixed: the
    encoder's features ``h`` and the posterior's own parameters are detached, so that the
    gradient reaches only ``z`` (and through it the path ``z(eps, phi)``)."""
    call = _LogProb(posterior)
    params = {name: p.detach() for name, p in call.named_parameters()}
    buffers = dict(call.named_buffers())
    return torch.func.functional_call(call, (params, buffers), (z, h.detach()))


class Objective:
    r"""Base class of the training objectives.

    Arguments:
        samples: posterior samples per example in each step.
        warmup_epochs: linear KL warm-up (:func:`kl_beta`).
        gradient: the inference network's gradient estimator, one of ``gradients``.
        gradients: the estimators this objective supports.
        model: the VAE it trains (to check that its family supports the estimator).
        family: the ``posterior=`` name, for messages.
    """

    name = ""
    bound_name = ""  # the key of ``stats`` that is the training bound
    #: importance samples of the bound that the validation split scores to choose ``best.pt``
    #: (``None``: the validation ELBO)
    validation_k: int | None = None

    def __init__(
        self,
        samples: int,
        warmup_epochs: float,
        gradient: str,
        gradients: Sequence[str],
        model: VAE,
        family: str = "",
    ) -> None:
        self.samples = samples
        self.warmup_epochs = float(number("objective.warmup_epochs", warmup_epochs, 0))
        if gradient in GRADIENTS and gradient not in gradients:
            raise ConfigError(
                f"objective.gradient={gradient} is for {'objective=iwae' if gradient == 'dreg' else 'other objectives'}; "
                f"objective={self.name} takes {' | '.join(gradients)}"
            )
        self.gradient = choice("objective.gradient", gradient, gradients)
        if self.gradient != "reparam" and not model.posterior.has_log_prob:
            name = family or type(model.posterior).__name__
            raise ConfigError(
                f"objective.gradient={self.gradient} needs log q(z|x) of a given z with q's parameters held fixed, "
                f"which posterior={name} cannot evaluate (no closed-form inverse); use objective.gradient=reparam"
            )

    @property
    def label(self) -> str:
        r"""What the run optimizes, in a few words (:func:`objective_label`)."""
        return objective_label(self.name, None, self.gradient)

    def beta(self, epoch: float) -> float:
        r"""The KL weight at ``epoch`` (fractional) of the warm-up."""
        return kl_beta(epoch, self.warmup_epochs)

    def log_q(self, out: Pass, model: VAE) -> Tensor:
        r"""``log q(z|x) [n, B]`` as the estimator needs it: with q's parameters held fixed
        (:func:`stopped_log_q`) for ``stl`` and ``dreg``, as sampled for ``reparam``."""
        if self.gradient == "reparam":
            return out.log_q
        return stopped_log_q(model.posterior, out.z, out.h)

    def __call__(self, model: VAE, x: Tensor, eps: Tensor, beta: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        r"""``(loss, stats)`` of the batch ``x [B, C, H, W]`` with posterior noise
        ``eps [samples, B, D]`` and KL weight ``beta`` (a 0-d tensor)."""
        raise NotImplementedError
