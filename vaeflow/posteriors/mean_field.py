r"""Mean-field posterior: ``q(z|x) = prod_i N(z_i; mu_i(x), sigma_i(x)^2)`` (Kingma & Welling, 2014).

It cannot represent any dependence between latents, which is what the structured
families exist to fix; it is the baseline of every comparison.
"""

from __future__ import annotations

from torch import Tensor, nn

from vaeflow.posteriors.base import DiagonalGaussian, Posterior, PriorParams
from vaeflow.posteriors.registry import POSTERIORS

__all__ = ["MeanField"]


@POSTERIORS.register("mean_field")
class MeanField(Posterior):
    r"""Diagonal Gaussian posterior with a closed-form KL to a diagonal Gaussian prior.

    Arguments:
        latent_dim: D.
        feature_dim: F.

    Example:
        >>> import torch
        >>> q = MeanField(latent_dim=2, feature_dim=3)
        >>> z, log_q = q(torch.randn(5, 3), n=4)
        >>> z.shape, log_q.shape
        (torch.Size([4, 5, 2]), torch.Size([4, 5]))
    """

    has_analytic_kl = True

    def __init__(self, latent_dim: int, feature_dim: int) -> None:
        super().__init__(latent_dim, feature_dim)
        self.base = DiagonalGaussian(latent_dim, feature_dim)

    def reparameterize(self, h: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
        return self.base.reparameterize(h, eps)

    @property
    def gaussian_base(self) -> nn.Module:
        return self

    def log_prob(self, z: Tensor, h: Tensor) -> Tensor:
        return self.base.log_prob(z, h)

    def analytic_kl(self, h: Tensor, prior: PriorParams = None) -> Tensor:
        return self.base.kl(h, prior)

    def sample_with_kl(
        self, h: Tensor, eps: Tensor, prior: PriorParams = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        mu, log_sigma = self.base.params(h)
        z, log_q = self.base.sample_from(mu, log_sigma, eps)
        return z, log_q, self.base.kl_from(mu, log_sigma, prior)
