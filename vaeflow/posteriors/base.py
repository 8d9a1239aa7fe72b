r"""The posterior interface, and the amortized diagonal Gaussian that most families start from.

A posterior ``q(z|x)`` is an ``nn.Module`` built from ``(latent_dim, feature_dim,
**options)``. One call returns reparameterized samples and their log-density,

.. code-block:: python

    z, log_q = posterior(h, n=1)  # z: [n, B, D], log_q: [n, B]

so that the density of a sample is never recomputed or cached by object identity.
Every family is a reparameterization: ``forward`` draws standard normal noise
``eps [n, B, D]`` (from the generator it is given: randomness is owned by the caller) and
:meth:`Posterior.reparameterize` maps it to ``(z, log q(z|x))``; tests differentiate that
map to check ``log q`` against a brute-force Jacobian.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = [
    "Posterior",
    "DiagonalGaussian",
    "LOG_2PI",
    "standard_normal_log_prob",
    "gaussian_kl",
    "PriorParams",
]

#: a diagonal Gaussian prior's ``(mean [D], log_scale [D])``; ``None`` for ``N(0, I)``
PriorParams = tuple[Tensor, Tensor] | None

LOG_2PI = math.log(2 * math.pi)


def standard_normal_log_prob(eps: Tensor) -> Tensor:
    r"""``log N(eps; 0, I)`` summed over the last dimension."""
    return -0.5 * (eps.square().sum(-1) + eps.shape[-1] * LOG_2PI)


def gaussian_kl(mu: Tensor, row_sq: Tensor, log_det_half: Tensor, prior: PriorParams = None) -> Tensor:
    r"""``KL(N(mu, L L^T) || N(m, diag(s^2)))`` in closed form, ``[B]``:

    .. math::

        \tfrac12 \sum_i \Big[\frac{\sum_j L_{ij}^2 + (\mu_i - m_i)^2}{s_i^2} - 1
        + 2\log s_i\Big] - \sum_i \log L_{ii},

    from ``mu [B, D]``, the squared row norms of ``L`` (``row_sq [B, D]``: ``sigma^2`` for a
    diagonal Gaussian) and ``log_det_half = sum_i log L_ii [B]``; ``prior=None`` is
    ``N(0, I)`` (``m = 0``, ``s = 1``)."""
    if prior is None:
        return 0.5 * (row_sq + mu.square() - 1).sum(-1) - log_det_half
    mean, log_scale = prior
    inv_var = torch.exp(-2 * log_scale)
    per = (row_sq + (mu - mean).square()) * inv_var - 1 + 2 * log_scale
    return 0.5 * per.sum(-1) - log_det_half


class Posterior(nn.Module):
    r"""Base class of every approximate posterior ``q(z|x)``.

    Arguments:
        latent_dim: D, the size of z.
        feature_dim: F, the size of the encoder features h.
    """

    #: whether :meth:`analytic_kl` has a closed form (a Gaussian q, against a diagonal
    #: Gaussian prior: the prior's :meth:`~vaeflow.priors.Prior.gaussian_params`).
    has_analytic_kl: bool = False

    def __init__(self, latent_dim: int, feature_dim: int) -> None:
        super().__init__()
        self.latent_dim, self.feature_dim = latent_dim, feature_dim

    def forward(
        self, h: Tensor, n: int = 1, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        r"""Draws ``n`` reparameterized samples per example.

        Arguments:
            h: encoder features ``[B, F]``.
            n: samples per example.
            generator: where the noise comes from (``None``: torch's global generator).

        Returns:
            ``z [n, B, D]`` and ``log q(z|x) [n, B]``.
        """
        return self.reparameterize(h, self.noise(h, n, generator))

    def reparameterize(self, h: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
        r"""Maps standard normal noise ``eps [n, B, D]`` to samples ``z [n, B, D]`` and
        their log-density ``log q(z|x) [n, B]``."""
        raise NotImplementedError

    def log_prob(self, z: Tensor, h: Tensor) -> Tensor:
        r"""``log q(z|x)`` of given samples ``z [n, B, D]`` (families with an inverse)."""
        raise NotImplementedError(f"{type(self).__name__} has no tractable inverse")

    @property
    def has_log_prob(self) -> bool:
        r"""Whether :meth:`log_prob` can evaluate a given z (the family has an inverse)."""
        return type(self).log_prob is not Posterior.log_prob

    @property
    def sequential_log_prob(self) -> bool:
        r"""Whether :meth:`log_prob` solves for z one dimension at a time (an IAF's inverse):
        D dependent steps per z instead of one parallel pass."""
        return False

    @property
    def gaussian_base(self) -> nn.Module | None:
        r"""The family's Gaussian ``q_0(z|x)`` as a module with ``log_prob(z, h)`` and
        ``reparameterize(h, eps)``: the posterior itself where it is Gaussian, a flow's base
        distribution, ``None`` where the family has none."""
        return None

    def analytic_kl(self, h: Tensor, prior: PriorParams = None) -> Tensor:
        r"""``KL(q(z|x) || p(z))`` in closed form, ``[B]``, for the diagonal Gaussian prior
        ``prior = (mean, log_scale)`` (``None``: ``N(0, I)``)."""
        raise NotImplementedError(f"{type(self).__name__} has no closed-form KL")

    def sample_with_kl(
        self, h: Tensor, eps: Tensor, prior: PriorParams = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        r"""``z [n, B, D]`` and ``log q(z|x) [n, B]`` of the noise ``eps [n, B, D]``, and the
        closed-form KL ``[B]``, from one evaluation of q's parameters.

        Families with a closed form override it to compute q's parameters once for both
        (the ELBO with ``kl=analytic`` then does not evaluate them twice); by default it is
        :meth:`reparameterize` followed by :meth:`analytic_kl`.
        """
        z, log_q = self.reparameterize(h, eps)
        return z, log_q, self.analytic_kl(h, prior)

    def noise(self, h: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
        r"""Standard normal ``eps [n, B, D]`` of ``h``'s dtype and device, from ``generator``."""
        shape = (n, h.shape[0], self.latent_dim)
        return torch.randn(shape, generator=generator, dtype=h.dtype, device=h.device)


class DiagonalGaussian(nn.Module):
    r"""An amortized diagonal Gaussian ``N(mu(h), diag(sigma(h)^2))``, with
    ``(mu, log sigma)`` a linear map of the features (Kingma & Welling, 2014).

    References:
        | Auto-Encoding Variational Bayes (Kingma & Welling, 2014)
        | https://arxiv.org/abs/1312.6114
    """

    def __init__(self, latent_dim: int, feature_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(feature_dim, 2 * latent_dim)

    def params(self, h: Tensor) -> tuple[Tensor, Tensor]:
        r"""``mu [B, D]`` and ``log sigma [B, D]``."""
        mu, log_sigma = self.linear(h).chunk(2, dim=-1)
        return mu, log_sigma

    def reparameterize(self, h: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
        r"""``z = mu + sigma * eps`` and ``log q(z) = log N(eps) - sum log sigma``."""
        return self.sample_from(*self.params(h), eps)

    @staticmethod
    def sample_from(mu: Tensor, log_sigma: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
        r""":meth:`reparameterize` given the parameters ``mu`` and ``log sigma``."""
        z = torch.addcmul(mu, log_sigma.exp(), eps)
        return z, standard_normal_log_prob(eps) - log_sigma.sum(-1)

    def log_prob(self, z: Tensor, h: Tensor) -> Tensor:
        mu, log_sigma = self.params(h)
        eps = (z - mu) * torch.exp(-log_sigma)
        return standard_normal_log_prob(eps) - log_sigma.sum(-1)

    def kl(self, h: Tensor, prior: PriorParams = None) -> Tensor:
        r"""``KL(N(mu, sigma^2) || p(z))`` (:func:`gaussian_kl`; against ``N(0, I)``:
        ``1/2 sum (sigma^2 + mu^2 - 1) - sum log sigma``)."""
        return self.kl_from(*self.params(h), prior)

    @staticmethod
    def kl_from(mu: Tensor, log_sigma: Tensor, prior: PriorParams = None) -> Tensor:
        r""":meth:`kl` given the parameters ``mu`` and ``log sigma``."""
        return gaussian_kl(mu, torch.exp(2 * log_sigma), log_sigma.sum(-1), prior)
