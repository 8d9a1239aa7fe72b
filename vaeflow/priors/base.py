r"""The prior interface ``p(z)``, and the helpers the learned Gaussian priors share.

A prior is an ``nn.Module`` built from ``(latent_dim, **options)``. It evaluates the
log-density of given latents and draws new ones, from the generator it is given
(randomness is owned by the caller):

.. code-block:: python

    log_p = prior.log_prob(z)  # z: [..., D], log_p: [...]
    z = prior.sample(n, generator)  # z: [n, D], on the prior's device and dtype

:meth:`Prior.gaussian_params` exposes the mean and log-scale of a prior that is a diagonal
Gaussian, for closed-form KLs against Gaussian posteriors; other priors return ``None``
and their KL is estimated by Monte Carlo.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from vaeflow.checks import number
from vaeflow.errors import ConfigError

__all__ = ["Prior", "check_log_scale_min", "raw_log_scale"]


def check_log_scale_min(value: Any) -> float:
    r"""``prior.log_scale_min`` when it is a number below 0, so that the initial scale 1
    lies above the bound; otherwise a one-line :class:`~vaeflow.errors.ConfigError`."""
    number("prior.log_scale_min", value)
    if value >= 0:
        raise ConfigError(f"prior.log_scale_min={value}: use a number < 0 (the scales start at 1)")
    return float(value)


def raw_log_scale(log_scale: float, minimum: float) -> float:
    r"""The raw value that :func:`~vaeflow.likelihoods.base.bounded_log_scale` maps to
    ``log_scale > minimum``: the inverse of ``minimum + softplus(raw - minimum)``, that is
    ``minimum + log(expm1(g))`` with ``g = log_scale - minimum``."""
    gap = log_scale - minimum
    return minimum + gap + math.log(-math.expm1(-gap))  # log(expm1(g)) without overflow


class Prior(nn.Module):
    r"""Base class of every prior ``p(z)`` over ``D`` latents.

    Subclasses define :meth:`log_prob` and :meth:`sample`, and :meth:`gaussian_params`
    where they are a diagonal Gaussian.

    Arguments:
        latent_dim: D, the size of z.
    """

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim

    def log_prob(self, z: Tensor) -> Tensor:
        r"""``log p(z)`` of latents ``z [..., D]``, shaped ``[...]``."""
        raise NotImplementedError

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        r"""``n`` draws ``[n, D]`` on the prior's device and dtype, from ``generator``
        (``None``: torch's global generator)."""
        raise NotImplementedError

    def initialize(self, images: Tensor, generator: torch.Generator) -> None:
        r"""A data-dependent initialization, called once at the start of a fresh training run
        with the training images ``[N, C, H, W]`` (not on resume; by default nothing)."""

    def gaussian_params(self) -> tuple[Tensor, Tensor] | None:
        r"""``(mean [D], log_scale [D])`` where ``p(z) = N(mean, diag(exp(2 log_scale)))``;
        ``None`` where the prior is not a diagonal Gaussian."""
        return None
