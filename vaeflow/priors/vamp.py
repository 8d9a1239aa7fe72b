r"""The VampPrior: a mixture of the approximate posteriors of K learned pseudo-inputs
(Tomczak & Welling, 2018)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from vaeflow.checks import choice, integer
from vaeflow.errors import ConfigError
from vaeflow.priors.base import Prior
from vaeflow.priors.registry import PRIORS

__all__ = ["VampPrior"]

INITS = ("data", "random")
MIXTURES = ("posterior", "base")
_EDGE = 0.02  # a data pixel at 0 or 1 starts at sigmoid(raw) = 0.02 or 0.98, where it still has a gradient


@PRIORS.register("vamp")
class VampPrior(Prior):
    r"""``p(z) = (1/K) sum_k q(z | u_k)``, the variational mixture of posteriors of K learned
    pseudo-inputs ``u_k`` passed through the model's own encoder and posterior family:

    .. math:: \log p(z) = \operatorname{logsumexp}_k \log q(z \mid u_k) - \log K.

    The pseudo-inputs are ``u_k = sigmoid(r_k)``, images in (0, 1) everywhere with a
    gradient everywhere: the reference code maps them through a hard-tanh clipped to [0, 1]
    and starts them at N(-0.05, 0.01) on MNIST, where most pseudo-pixels sit on the clipped,
    flat side and receive no gradient. ``init="data"`` starts them at K random training
    images (pixels at 0 or 1 moved to 0.02 or 0.98), ``init="random"`` at ``r ~ N(0, 1)``.

    ``mixture`` says which density of u_k is the component. ``posterior`` (the paper's):
    the family's own ``q(z|u_k)``, which needs the family to evaluate a given z; planar,
    radial and Sylvester flows cannot (their inverse has no closed form), and IAF can only by
    a sequential inverse, D dependent MADE steps for every (z, u_k) pair, K = 500 times an
    IAF step's work: both are refused with this setting rather than silently replaced.
    ``base``: the family's Gaussian ``q_0(z|u_k)`` (the posterior itself for mean_field and
    full_cov, a flow's base distribution): a mixture of K Gaussians whose parameters the
    encoder computes from the pseudo-inputs, one pass for every family that has such a base.
    The KL is by Monte Carlo. The encoder and posterior are the model's (not registered
    here: their parameters belong to the VAE once, and receive the prior's gradient too).

    Arguments:
        latent_dim: D.
        encoder: the model's encoder ``x -> h``.
        posterior: the model's posterior family (with :meth:`log_prob`).
        input_shape: the image shape ``(C, H, W)``.
        components: K, the number of pseudo-inputs.
        init: ``data`` or ``random``.
        mixture: ``posterior`` or ``base``, the density of each component.
        posterior_name: the family's ``posterior=`` name, for messages.

    References:
        | VAE with a VampPrior (Tomczak & Welling, 2018)
        | https://arxiv.org/abs/1705.07120
    """

    def __init__(
        self,
        latent_dim: int,
        encoder: nn.Module,
        posterior: nn.Module,
        input_shape: Sequence[int],
        components: int = 500,
        init: str = "data",
        mixture: str = "posterior",
        posterior_name: str = "",
    ) -> None:
        super().__init__(latent_dim)
        self.components = integer("prior.components", components, 1, advice="the number of pseudo-inputs")
        self.init = choice("prior.init", init, INITS)
        self.mixture = choice("prior.mixture", mixture, MIXTURES)
        family = f"posterior={posterior_name or type(posterior).__name__}"
        if self.mixture == "base":
            component = posterior.gaussian_base
            if component is None:
                raise ConfigError(
                    f"prior.mixture=base needs the family's Gaussian base q0(z|u), which {family} does not have; "
                    "set prior.mixture=posterior"
                )
        elif not posterior.has_log_prob:
            raise ConfigError(
                f"prior=vamp needs log q(z|u) of a given z, which {family} cannot evaluate (no closed-form "
                "inverse); set prior.mixture=base to mix the family's Gaussian base q0(z|u_k) instead"
            )
        elif posterior.sequential_log_prob:
            raise ConfigError(
                f"prior=vamp with {family} evaluates q(z|u) by a sequential inverse for every z and each of the "
                f"{self.components} pseudo-inputs (about {self.components} times the work of a training step); "
                "set prior.mixture=base to mix the family's Gaussian base q0(z|u_k) instead"
            )
        else:
            component = posterior
        self._model = (encoder, component)  # a tuple: not submodules of the prior
        generator = torch.Generator().manual_seed(0)
        self.pseudo_raw = nn.Parameter(torch.randn(self.components, *input_shape, generator=generator))

    def pseudo_inputs(self) -> Tensor:
        r"""``u [K, C, H, W] = sigmoid(r)``."""
        return torch.sigmoid(self.pseudo_raw)

    def initialize(self, images: Tensor, generator: torch.Generator) -> None:
        r"""``init="data"``: K random training images (seeded), as the pseudo-inputs' start."""
        if self.init != "data":
            return
        pick = torch.randint(images.shape[0], (self.components,), generator=generator)
        start = images[pick].to(self.pseudo_raw).clamp(_EDGE, 1 - _EDGE)
        with torch.no_grad():
            self.pseudo_raw.copy_(torch.logit(start))

    def log_prob(self, z: Tensor) -> Tensor:
        r"""``log p(z)`` of ``z [..., D]``, ``[...]``: every z against every component."""
        encoder, component = self._model
        h = encoder(self.pseudo_inputs())  # [K, F]
        flat = z.reshape(-1, 1, self.latent_dim).expand(-1, self.components, -1)  # [N, K, D]
        log_q = component.log_prob(flat, h)  # [N, K]
        return (torch.logsumexp(log_q, dim=-1) - math.log(self.components)).reshape(z.shape[:-1])

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        r"""``n`` draws: a component ``k`` uniformly, then z from that component, from ``generator``
        (on the prior's device)."""
        encoder, component = self._model
        device = self.pseudo_raw.device
        k = torch.randint(self.components, (n,), generator=generator, device=device)
        h = encoder(self.pseudo_inputs()[k])  # [n, F]
        eps = torch.randn((1, n, self.latent_dim), generator=generator, dtype=h.dtype, device=device)
        z, _ = component.reparameterize(h, eps)
        return z[0]
