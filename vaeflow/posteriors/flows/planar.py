r"""Planar flow step (Rezende & Mohamed, 2015), amortized: ``u, w, b`` are linear maps of h.

.. math:: f(z) = z + \hat u \tanh(w^\top z + b), \qquad
    \log |\det \partial f / \partial z| = \log |1 + \hat u^\top \psi(z)|,
    \quad \psi(z) = (1 - \tanh^2(w^\top z + b))\, w .

Invertibility constraint (appendix A of the paper): ``f`` is invertible iff
``w^T u_hat >= -1``. The raw ``u`` is projected onto that set by

.. math:: \hat u = u + \big(m(w^\top u) - w^\top u\big) \frac{w}{\|w\|^2},
    \quad m(x) = -1 + \operatorname{softplus}(x), \quad\text{so}\quad
    w^\top \hat u = m(w^\top u) > -1 .

With ``a = w^T z + b`` and ``t = tanh(a)``, the determinant is computed without
cancellation as ``1 + w^T u_hat (1 - t^2) = t^2 + softplus(w^T u) (1 - t^2) > 0``, so
its log stays finite even when ``w^T u`` is very negative (where ``1 + w^T u_hat``
underflows). There is no closed-form inverse (``inverse`` is not implemented).

References:
    | Variational Inference with Normalizing Flows (Rezende & Mohamed, 2015)
    | https://arxiv.org/abs/1505.05770
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaeflow.posteriors.flows.base import FlowStep, register_flow

__all__ = ["PlanarStep"]


@register_flow("planar")
class PlanarStep(FlowStep):
    r"""One planar step ``z + u_hat(h) tanh(w(h)^T z + b(h))``.

    Arguments:
        latent_dim: D.
        feature_dim: F.
        index: position in the stack (unused).

    Example:
        >>> import torch
        >>> step = PlanarStep(3, 4)
        >>> u_hat, w, b = step.params(torch.randn(5, 4))
        >>> bool(((w * u_hat).sum(-1) >= -1).all())
        True
    """

    def __init__(self, latent_dim: int, feature_dim: int, index: int = 0) -> None:
        super().__init__(latent_dim, feature_dim, index)
        self.u = nn.Linear(feature_dim, latent_dim)
        self.w = nn.Linear(feature_dim, latent_dim)
        self.b = nn.Linear(feature_dim, 1)

    def _raw(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        u, w = self.u(h), self.w(h)
        wu = (w * u).sum(-1, keepdim=True)
        u_hat = u + (F.softplus(wu) - 1 - wu) * w / w.square().sum(-1, keepdim=True)
        return u_hat, w, self.b(h), wu

    def params(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        r"""The effective ``u_hat [B, D]``, ``w [B, D]`` and ``b [B, 1]``."""
        u_hat, w, b, _ = self._raw(h)
        return u_hat, w, b

    def forward(self, z: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        u_hat, w, b, wu = self._raw(h)
        t = torch.tanh((z * w).sum(-1, keepdim=True) + b)
        t2 = t.square()
        det = t2 + F.softplus(wu) * (1 - t2)  # = 1 + u_hat^T psi(z), without cancellation
        return z + u_hat * t, det.log().squeeze(-1)
