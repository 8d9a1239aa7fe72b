r"""Masked autoregressive flow step (Papamakarios et al., 2017) used as a posterior flow.

In the sampling direction, ``z -> z'`` with ``z'`` defined autoregressively by

.. math:: z'_{o_i} = \mu_{o_i}(z'_{o_{<i}}, h) + \sigma_{o_i}(z'_{o_{<i}}, h)\, z_{o_i},
    \quad (\mu, \log\sigma') = \text{MADE}(z', h), \quad \log\sigma = b\tanh(\log\sigma'/b),

.. math:: \log |\det \partial z' / \partial z| = \sum_i \log \sigma_i(z'_{<i}, h).

The Jacobian is triangular in the step's order ``o`` with diagonal ``sigma > 0``, so the
step is invertible whatever the MADE computes. Its inverse (the density direction) is one
parallel pass, ``z = (z' - mu(z')) / sigma(z')``; sampling is exactly sequential, one
dimension at a time (:meth:`~vaeflow.nets.made.MADE.solve`: D steps that together cost one
MADE pass, where re-running the MADE D times would cost D). This is the mirror image
of IAF (parallel sampling, sequential density). The order changes between steps
(``reverse``: natural and reversed in turn, or ``random`` permutations).

References:
    | Masked Autoregressive Flow for Density Estimation (Papamakarios et al., 2017)
    | https://arxiv.org/abs/1705.07057
    | MADE: Masked Autoencoder for Distribution Estimation (Germain et al., 2015)
    | https://arxiv.org/abs/1502.03509
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from vaeflow.nets.made import order_for_step
from vaeflow.posteriors.conditioned import AutoregressiveTransform
from vaeflow.posteriors.flows.base import FlowStep, register_flow
from vaeflow.posteriors.transforms import Affine

__all__ = ["MAFStep"]


@register_flow("maf")
class MAFStep(FlowStep):
    r"""One MAF step: an affine autoregressive map whose MADE reads the output and h.

    Arguments:
        latent_dim: D.
        feature_dim: F, the size of the context h.
        index: position in the stack (sets the order).
        hidden_dims: widths of the MADE's hidden layers.
        activation: the MADE's activation.
        order: ``reverse`` (default: natural and reversed in turn), ``natural`` or ``random``.
        max_log_scale: bound of the soft-clamped ``log sigma``.

    Example:
        >>> import torch
        >>> from vaeflow.posteriors import POSTERIORS
        >>> q = POSTERIORS.build({"name": "maf", "depth": 2, "hidden_dims": [8]}, latent_dim=3, feature_dim=4)
        >>> h = torch.randn(5, 4)
        >>> z, log_q = q(h, n=2)
        >>> torch.allclose(q.log_prob(z, h), log_q, atol=1e-5)
        True
    """

    def __init__(
        self,
        latent_dim: int,
        feature_dim: int,
        index: int = 0,
        hidden_dims: Sequence[int] = (320, 320),
        activation: str = "elu",
        order: str = "reverse",
        max_log_scale: float = 6.0,
    ) -> None:
        super().__init__(latent_dim, feature_dim, index)
        self.transform = AutoregressiveTransform(
            latent_dim, feature_dim, hidden_dims, order_for_step(latent_dim, index, order), Affine(max_log_scale),
            activation,
        )  # fmt: skip
        nn.init.zeros_(self.transform.made.input.weight)  # start as an elementwise affine map of h

    @property
    def order(self) -> Tensor:
        r"""The autoregressive order of this step."""
        return self.transform.order

    def forward(self, z: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        return self.transform.solve_forward(z, h)

    def inverse(self, y: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        return self.transform.invert(y, h)
