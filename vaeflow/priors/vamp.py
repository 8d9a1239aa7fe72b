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

    It needs ``log q(z|u)`` of a given z, which planar, radial and Sylvester flows cannot
    evaluate (their inverse has no closed form): with those families it is refused rather
    than replaced by their Gaussian base, which would be another prior than the one asked.
    The KL is by Monte Carlo. The encoder and posterior are the model's (not registered
    here: their parameters belong to the VAE once, and receive the prior's gradient too).

    Arguments:
        latent_dim: D.
        encoder: the model's encoder ``x -> h``.
        posterior: the model's posterior family (with :meth:`log_prob`).
        input_shape: the image shape ``(C, H, W)``.
        components: K, the number of pseudo-inputs.
        init: ``data`` or ``random``.
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
        posterior_name: str = "",
    ) -> None:
        super().__init__(latent_dim)
        self.components = integer("prior.components", components, 1, advice="the number of pseudo-inputs")
        self.init = choice("prior.init", init, INITS)
        if not posterior.has_log_prob:
            raise ConfigError(
                f"prior=vamp needs log q(z|u) of a given z, which posterior={posterior_name or type(posterior).__name__} cannot "
                "evaluate (no closed-form inverse); use mean_field, full_cov, autoregressive, iaf, maf, realnvp "
                "or householder"
            )
        self._model = (encoder, posterior)  # a tuple: not submodules of the prior
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
        encoder, posterior = self._model
        h = encoder(self.pseudo_inputs())  # [K, F]
        flat = z.reshape(-1, 1, self.latent_dim).expand(-1, self.components, -1)  # [N, K, D]
        log_q = posterior.log_prob(flat, h)  # [N, K]
        return (torch.logsumexp(log_q, dim=-1) - math.log(self.components)).reshape(z.shape[:-1])

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        r"""``n`` draws: a component ``k`` uniformly, then ``z ~ q(z | u_k)``, from ``generator``
        (on the prior's device)."""
        encoder, posterior = self._model
        device = self.pseudo_raw.device
        k = torch.randint(self.components, (n,), generator=generator, device=device)
        h = encoder(self.pseudo_inputs()[k])  # [n, F]
        z, _ = posterior.reparameterize(h, posterior.noise(h, 1, generator))
        return z[0]
