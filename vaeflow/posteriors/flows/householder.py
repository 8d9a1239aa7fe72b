r"""Householder flow step (Tomczak & Welling, 2016): an amortized reflection.

.. math:: z' = H z, \quad H = I - 2 \frac{v v^\top}{\|v\|^2}, \quad v = v(h),

with ``v`` a linear map of the encoder features. ``H`` is orthogonal and symmetric, so the
step is volume-preserving, ``log |det H| = 0``, and its own inverse (``H^{-1} = H``).
On a mean-field base ``N(mu, diag sigma^2)``, K reflections give a Gaussian with the full
covariance ``U diag(sigma^2) U^T``, ``U = H_K ... H_1`` (every orthogonal matrix is a
product of at most D reflections). The paper chains the vectors, ``v_k = W_k v_{k-1}``, with
``v_1`` from the encoder; each ``v_k`` is then a linear map of h, which is what we compute
directly, one linear map per step.

:func:`reflect` is shared with the Householder variant of Sylvester flows.

References:
    | Improving Variational Auto-Encoders using Householder Flow (Tomczak & Welling, 2016)
    | https://arxiv.org/abs/1611.09630
"""

from __future__ import annotations

from torch import Tensor, nn

from vaeflow.posteriors.flows.base import FlowStep, register_flow

__all__ = ["HouseholderStep", "reflect"]


def reflect(x: Tensor, v: Tensor) -> Tensor:
    r"""``H x = x - 2 v (v^T x) / ||v||^2`` over the last dimension (``v`` broadcasts).

    Example:
        >>> import torch
        >>> reflect(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 0.0]))
        tensor([-1.,  2.])
    """
    return x - (2 * (x * v).sum(-1, keepdim=True) / v.square().sum(-1, keepdim=True)) * v


@register_flow("householder")
class HouseholderStep(FlowStep):
    r"""One reflection ``z' = (I - 2 v v^T / ||v||^2) z`` with ``v = v(h)``.

    Arguments:
        latent_dim: D.
        feature_dim: F.
        index: position in the stack (unused).

    Example:
        >>> import torch
        >>> step = HouseholderStep(3, 4)
        >>> z, h = torch.randn(2, 5, 3), torch.randn(5, 4)
        >>> torch.allclose(step(step(z, h)[0], h)[0], z, atol=1e-6)
        True
    """

    def __init__(self, latent_dim: int, feature_dim: int, index: int = 0) -> None:
        super().__init__(latent_dim, feature_dim, index)
        self.v = nn.Linear(feature_dim, latent_dim)

    def forward(self, z: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        return reflect(z, self.v(h)), z.new_zeros(z.shape[:-1])

    def inverse(self, y: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        return self.forward(y, h)
