r"""A flow prior: a Gaussian base followed by unconditional flow steps of one of the
posterior families (MAF, RealNVP, ...)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from vaeflow.errors import ConfigError
from vaeflow.priors.base import Prior
from vaeflow.priors.registry import PRIORS

__all__ = ["FlowPrior"]


@PRIORS.register("flow")
class FlowPrior(Prior):
    r"""``p(z)``: a learned diagonal Gaussian base ``N(mu, diag(sigma^2))`` pushed through
    ``depth`` flow steps of the posterior family ``family``, with the density of a given z
    by the change of variables,

    .. math:: \log p(z) = \log N(f^{-1}(z); \mu, \sigma^2) + \log\left|\det
              \frac{\partial f^{-1}}{\partial z}\right|.

    One implementation serves posteriors and priors: the family's :class:`FlowPosterior` is
    built with a single feature fixed at zero, so every conditioner (MADE, coupling
    network, base head) reads z and its own biases only, an unconditional flow. The family
    must evaluate the density of a given z (:attr:`has_log_prob`): ``maf`` and ``realnvp``
    in one pass (the default ``maf``: Papamakarios et al. 2017, whose density is one pass and
    whose sampling, for sample images only, is sequential), ``iaf`` by a sequential inverse,
    and the spline flows ``nsf_maf``, ``nsf_coupling`` (one pass) and ``nsf_ar`` (sequential).

    Arguments:
        latent_dim: D.
        family: the posterior family whose steps to stack.
        depth: the number of steps.
        hidden_dims: widths of the steps' networks (``None``: the family's default).
        bins: the spline families' bins (``None``: their default).
        tail_bound: the spline families' interval ``[-B, B]`` (``None``: their default).

    References:
        | Masked Autoregressive Flow for Density Estimation (Papamakarios et al., 2017)
        | https://arxiv.org/abs/1705.07057
        | Variational Lossy Autoencoder (Chen et al., 2017): an autoregressive flow prior
        | https://arxiv.org/abs/1611.02731
    """

    def __init__(
        self,
        latent_dim: int,
        family: str = "maf",
        depth: int = 4,
        hidden_dims: Sequence[int] | None = None,
        bins: int | None = None,
        tail_bound: float | None = None,
    ) -> None:
        super().__init__(latent_dim)
        from vaeflow.posteriors import POSTERIORS

        given = {"hidden_dims": hidden_dims, "bins": bins, "tail_bound": tail_bound}
        options = {"name": family, "depth": depth, **{k: v for k, v in given.items() if v is not None}}
        try:
            self.flow = POSTERIORS.build(options, latent_dim=latent_dim, feature_dim=1)
        except ConfigError as e:  # the posterior's message, with the prior's keys
            message = str(e).replace("posterior.", "prior.").replace("posterior=", "prior.family=")
            raise ConfigError(message.replace("'posterior'", "'prior'")) from None
        if not self.flow.has_log_prob:
            raise ConfigError(
                f"prior=flow with prior.family={family}: the prior needs the density of a given z, which "
                f"{family} cannot evaluate (no closed-form inverse); use maf, realnvp, iaf or an nsf_ family"
            )
        self.register_buffer("context", torch.zeros(1, 1), persistent=False)

    def log_prob(self, z: Tensor) -> Tensor:
        r"""``log p(z)`` of ``z [..., D]``, ``[...]``."""
        flat = z.reshape(-1, 1, self.latent_dim)  # [N, 1, D]: N samples of one "example"
        return self.flow.log_prob(flat, self.context).reshape(z.shape[:-1])

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        r"""``n`` draws ``[n, D]``: base noise from ``generator`` through the steps."""
        z, _ = self.flow.reparameterize(self.context, self.flow.noise(self.context, n, generator))
        return z[:, 0]
