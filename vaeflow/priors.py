r"""Priors p(z)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vaeflow.posteriors.base import standard_normal_log_prob
from vaeflow.registry import Registry

__all__ = ["PRIORS", "StandardNormal"]

PRIORS = Registry("prior")


@PRIORS.register("standard_normal")
class StandardNormal(nn.Module):
    r"""``p(z) = N(0, I)``.

    Arguments:
        latent_dim: D.
    """

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    def log_prob(self, z: Tensor) -> Tensor:
        r"""``log p(z)`` summed over the last dimension."""
        return standard_normal_log_prob(z)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        r"""``n`` samples ``[n, D]`` on the prior's device, from ``generator``."""
        anchor = self._anchor
        return torch.randn(n, self.latent_dim, generator=generator, device=anchor.device, dtype=anchor.dtype)
