r"""The fixed standard normal prior ``p(z) = N(0, I)``, the default of every run."""

from __future__ import annotations

import torch
from torch import Tensor

from vaeflow.posteriors.base import standard_normal_log_prob
from vaeflow.priors.base import Prior
from vaeflow.priors.registry import PRIORS

__all__ = ["StandardNormal"]


@PRIORS.register("standard_normal")
class StandardNormal(Prior):
    r"""``p(z) = N(0, I)``,

    .. math:: \log p(z) = -\tfrac12 \lVert z \rVert^2 - \tfrac D2 \log 2\pi.

    It has no parameters and saves nothing: a non-persistent buffer only tells
    :meth:`sample` the device and dtype that :meth:`~torch.nn.Module.to` gave the module.

    Arguments:
        latent_dim: D.

    References:
        | Auto-Encoding Variational Bayes (Kingma & Welling, 2014)
        | https://arxiv.org/abs/1312.6114

    Example:
        >>> import torch
        >>> p = StandardNormal(latent_dim=2)
        >>> p.log_prob(torch.zeros(3, 2))  # -log(2 pi)
        tensor([-1.8379, -1.8379, -1.8379])
        >>> p.sample(4, torch.Generator().manual_seed(0)).shape
        torch.Size([4, 2])
    """

    def __init__(self, latent_dim: int) -> None:
        super().__init__(latent_dim)
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    def log_prob(self, z: Tensor) -> Tensor:
        r"""``log p(z)`` summed over the last dimension."""
        return standard_normal_log_prob(z)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        r"""``n`` samples ``[n, D]`` on the prior's device, from ``generator``."""
        anchor = self._anchor
        return torch.randn(n, self.latent_dim, generator=generator, device=anchor.device, dtype=anchor.dtype)

    def gaussian_params(self) -> tuple[Tensor, Tensor]:
        r"""``(0, 0)``: the mean and log-scale of ``N(0, I)``, each ``[D]``."""
        zeros = self._anchor.new_zeros(self.latent_dim)
        return zeros, zeros.clone()
