r"""A learned diagonal Gaussian prior ``p(z) = N(mu, diag(sigma^2))``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vaeflow.likelihoods.base import bounded_log_scale
from vaeflow.posteriors.base import standard_normal_log_prob
from vaeflow.priors.base import Prior, check_log_scale_min, raw_log_scale
from vaeflow.priors.registry import PRIORS

__all__ = ["Gaussian"]


@PRIORS.register("gaussian")
class Gaussian(Prior):
    r"""A diagonal Gaussian with a learned mean and log-scale,

    .. math:: \log p(z) = \sum_{i=1}^D \left( -\frac{(z_i - \mu_i)^2}{2\sigma_i^2}
              - \log\sigma_i - \tfrac12 \log 2\pi \right),

    with ``log sigma = m + softplus(r - m)`` for a raw parameter ``r`` and the bound
    ``m = log_scale_min``: a scale cannot collapse to 0, and the bound has no flat region
    that would stop its gradient. It starts at ``N(0, I)`` (``mu = 0``, ``r`` such that
    ``log sigma = 0``), the standard normal prior, and is sampled by reparameterization,
    ``z = mu + sigma * eps`` with ``eps ~ N(0, I)``.

    Against a Gaussian posterior only the KL's location and scale change; a learned
    Gaussian cannot model a multimodal aggregate posterior (see the mixture ``mog``).

    Arguments:
        latent_dim: D.
        log_scale_min: the soft lower bound of each ``log sigma_i`` (a number < 0).

    References:
        | VAE with a VampPrior (Tomczak & Welling, 2018)
        | https://arxiv.org/abs/1705.07120

    Example:
        >>> import torch
        >>> p = Gaussian(latent_dim=2)
        >>> torch.allclose(p.log_prob(torch.zeros(3, 2)), torch.full((3,), -1.8379), atol=1e-4)
        True
        >>> p.sample(4, torch.Generator().manual_seed(0)).shape
        torch.Size([4, 2])
    """

    def __init__(self, latent_dim: int, log_scale_min: float = -7.0) -> None:
        super().__init__(latent_dim)
        self.log_scale_min = check_log_scale_min(log_scale_min)
        self.mean = nn.Parameter(torch.zeros(latent_dim))
        self.log_scale_raw = nn.Parameter(torch.full((latent_dim,), raw_log_scale(0.0, self.log_scale_min)))

    def gaussian_params(self) -> tuple[Tensor, Tensor]:
        r"""``(mu [D], log sigma [D])``, the bound applied."""
        return self.mean, bounded_log_scale(self.log_scale_raw, self.log_scale_min)

    def log_prob(self, z: Tensor) -> Tensor:
        r"""``log p(z)`` of ``z [..., D]``, ``[...]``."""
        mean, log_scale = self.gaussian_params()
        return standard_normal_log_prob((z - mean) * torch.exp(-log_scale)) - log_scale.sum(-1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        r"""``z = mu + sigma * eps``, ``[n, D]``, with ``eps`` drawn from ``generator``."""
        mean, log_scale = self.gaussian_params()
        eps = torch.randn(n, self.latent_dim, generator=generator, device=mean.device, dtype=mean.dtype)
        return torch.addcmul(mean, log_scale.exp(), eps)
