r"""A learned mixture of diagonal Gaussians, ``p(z) = sum_k pi_k N(z; mu_k, diag(sigma_k^2))``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vaeflow.checks import integer, number
from vaeflow.likelihoods.base import bounded_log_scale
from vaeflow.posteriors.base import standard_normal_log_prob
from vaeflow.priors.base import Prior, check_log_scale_min, raw_log_scale
from vaeflow.priors.registry import PRIORS
from vaeflow.randomness import Stream, stream_seed

__all__ = ["MixtureOfGaussians"]


@PRIORS.register("mog")
class MixtureOfGaussians(Prior):
    r"""A mixture of ``K`` diagonal Gaussians with learned weights, means and scales,

    .. math:: \log p(z) = \log \sum_{k=1}^K \pi_k\, \mathcal N(z; \mu_k, \mathrm{diag}\,\sigma_k^2)
              = \operatorname{logsumexp}_k \Big( \log\pi_k + \sum_{i=1}^D \big(
              -\tfrac{(z_i - \mu_{ki})^2}{2\sigma_{ki}^2} - \log\sigma_{ki} - \tfrac12\log 2\pi \big) \Big),

    with ``pi = softmax(logits)`` and ``log sigma_k = m + softplus(r_k - m)`` (``m`` =
    ``log_scale_min``, as in the ``gaussian`` prior). The log-density is a ``logsumexp``
    over components, so it stays finite where every component's density underflows. A
    sample draws a component ``k ~ Categorical(pi)`` and then ``z = mu_k + sigma_k * eps``,
    both from the given generator (the component draw carries no gradient to the logits;
    the objectives need ``log p(z)``, which does).

    Initialization: uniform weights (logits 0) and unit scales (``log sigma = 0``); the
    means are draws from ``N(0, init_spread^2 I)``. Distinct means break the symmetry
    between components (identical components receive identical gradients and would stay
    one Gaussian); at the scale of ``N(0, I)``, where the KL term keeps the posteriors of a
    fresh model, every component overlaps the posterior samples and so receives gradient
    (a component far from them would never move). The draws come from a private
    generator seeded by ``(run seed, Stream.PRIOR_INIT)``, the run seed read as
    :func:`torch.initial_seed`, which :func:`~vaeflow.randomness.seed_everything` sets: runs
    with different seeds start from different means, and building the prior draws nothing
    from torch's global generator, so the encoder and decoder start from the same weights
    as a run of the same seed with any other prior (a paired comparison of priors).

    Arguments:
        latent_dim: D.
        components: K >= 1 (``K = 1`` is a learned Gaussian and says so in
            :meth:`gaussian_params`).
        init_spread: the standard deviation of the initial means (a number >= 0).
        log_scale_min: the soft lower bound of each ``log sigma_ki`` (a number < 0).

    References:
        | VAE with a VampPrior (Tomczak & Welling, 2018)
        | https://arxiv.org/abs/1705.07120

        | Deep Unsupervised Clustering with Gaussian Mixture Variational Autoencoders
          (Dilokthanakul et al., 2016)
        | https://arxiv.org/abs/1611.02648

    Example:
        >>> import torch
        >>> p = MixtureOfGaussians(latent_dim=2, components=3)
        >>> p.log_prob(torch.zeros(5, 4, 2)).shape
        torch.Size([5, 4])
        >>> p.sample(6, torch.Generator().manual_seed(0)).shape
        torch.Size([6, 2])
    """

    def __init__(
        self,
        latent_dim: int,
        components: int = 10,
        init_spread: float = 1.0,
        log_scale_min: float = -7.0,
    ) -> None:
        super().__init__(latent_dim)
        k = integer("prior.components", components, 1, advice="use an integer >= 1 (prior=mog)")
        spread = number("prior.init_spread", init_spread, 0)
        self.components = k
        self.log_scale_min = check_log_scale_min(log_scale_min)
        generator = torch.Generator().manual_seed(stream_seed(torch.initial_seed(), Stream.PRIOR_INIT))
        self.logits = nn.Parameter(torch.zeros(k))
        self.means = nn.Parameter(spread * torch.randn(k, latent_dim, generator=generator))
        self.log_scales_raw = nn.Parameter(
            torch.full((k, latent_dim), raw_log_scale(0.0, self.log_scale_min))
        )

    def mixture_params(self) -> tuple[Tensor, Tensor, Tensor]:
        r"""``log pi [K]``, ``mu [K, D]`` and ``log sigma [K, D]``, the bound applied."""
        log_scales = bounded_log_scale(self.log_scales_raw, self.log_scale_min)
        return self.logits.log_softmax(-1), self.means, log_scales

    def log_prob(self, z: Tensor) -> Tensor:
        r"""``log p(z)`` of ``z [..., D]``, ``[...]``, by ``logsumexp`` over components."""
        log_weights, means, log_scales = self.mixture_params()
        eps = (z.unsqueeze(-2) - means) * torch.exp(-log_scales)  # [..., K, D]
        log_components = standard_normal_log_prob(eps) - log_scales.sum(-1)  # [..., K]
        return torch.logsumexp(log_weights + log_components, dim=-1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        r"""``n`` draws ``[n, D]``: components ``k ~ Categorical(pi)``, then
        ``z = mu_k + sigma_k * eps``, both from ``generator``."""
        log_weights, means, log_scales = self.mixture_params()
        k = torch.multinomial(log_weights.exp(), n, replacement=True, generator=generator)
        eps = torch.randn(n, self.latent_dim, generator=generator, device=means.device, dtype=means.dtype)
        return torch.addcmul(means[k], log_scales[k].exp(), eps)

    def gaussian_params(self) -> tuple[Tensor, Tensor] | None:
        r"""The component's ``(mu [D], log sigma [D])`` when ``K = 1``; ``None`` otherwise."""
        if self.components != 1:
            return None
        _, means, log_scales = self.mixture_params()
        return means[0], log_scales[0]
