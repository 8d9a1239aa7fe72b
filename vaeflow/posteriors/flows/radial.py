r"""Radial flow step (Rezende & Mohamed, 2015), amortized: ``z0, alpha, beta`` are linear maps of h.

.. math:: f(z) = z + \beta\, \eta(\alpha, r)\, (z - z_0), \quad r = \|z - z_0\|,
    \quad \eta(\alpha, r) = \frac{1}{\alpha + r},

.. math:: \log |\det \partial f / \partial z| = (D - 1) \log(1 + \beta\eta)
    + \log(1 + \beta\eta + \beta\eta'(r)\, r).

Invertibility constraint (appendix A of the paper): ``alpha > 0`` and ``beta >= -alpha``,
enforced by ``alpha = softplus(alpha')`` and ``beta = -alpha + softplus(beta')``. With
``e = beta + alpha = softplus(beta') >= 0`` both factors are sums of non-negative terms,

.. math:: 1 + \beta\eta = \frac{r + e}{\alpha + r}, \qquad
    1 + \beta\eta + \beta\eta' r = \frac{r (r + 2\alpha) + \alpha e}{(\alpha + r)^2},

which is how they are computed (no cancellation, finite logs for ``r > 0`` even when
``beta`` sits at ``-alpha``). The radius ``r -> r (1 + beta eta)`` is then strictly
increasing, so the map is injective. There is no closed-form inverse.

References:
    | Variational Inference with Normalizing Flows (Rezende & Mohamed, 2015)
    | https://arxiv.org/abs/1505.05770
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from vaeflow.posteriors.flows.base import FlowStep, register_flow

__all__ = ["RadialStep"]


@register_flow("radial")
class RadialStep(FlowStep):
    r"""One radial step ``z + beta(h) / (alpha(h) + r) * (z - z0(h))``.

    Arguments:
        latent_dim: D.
        feature_dim: F.
        index: position in the stack (unused).

    Example:
        >>> import torch
        >>> step = RadialStep(3, 4)
        >>> z0, alpha, beta = step.params(torch.randn(5, 4))
        >>> bool((alpha > 0).all() and (beta >= -alpha).all())
        True
    """

    def __init__(self, latent_dim: int, feature_dim: int, index: int = 0) -> None:
        super().__init__(latent_dim, feature_dim, index)
        self.z0 = nn.Linear(feature_dim, latent_dim)
        self.alpha = nn.Linear(feature_dim, 1)
        self.beta = nn.Linear(feature_dim, 1)

    def _raw(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        r"""``z0 [B, D]``, ``alpha [B, 1]`` and ``e = beta + alpha >= 0 [B, 1]``."""
        return self.z0(h), F.softplus(self.alpha(h)), F.softplus(self.beta(h))

    def params(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        r"""The effective ``z0 [B, D]``, ``alpha [B, 1]`` and ``beta [B, 1]``."""
        z0, alpha, excess = self._raw(h)
        return z0, alpha, excess - alpha

    def forward(self, z: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        z0, alpha, excess = self._raw(h)
        diff = z - z0
        r = diff.norm(dim=-1, keepdim=True)
        log_ar = (alpha + r).log()
        ladj = (self.latent_dim - 1) * ((r + excess).log() - log_ar) + (
            (r * (r + 2 * alpha) + alpha * excess).log() - 2 * log_ar
        )
        return z + (excess - alpha) / (alpha + r) * diff, ladj.squeeze(-1)
