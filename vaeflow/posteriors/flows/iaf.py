r"""Inverse autoregressive flow step (Kingma et al., 2016), in its numerically stable gated form.

.. math:: (m, s) = \text{MADE}(z, h), \quad \sigma = \operatorname{sigmoid}(s),
    \quad z' = \sigma \odot z + (1 - \sigma) \odot m,

.. math:: \log |\det \partial z' / \partial z| = \sum_i \log \sigma_i .

``m`` and ``s`` of dimension ``i`` depend only on the dimensions before ``i`` in the
step's order, so the Jacobian is triangular with diagonal ``sigma``; all dimensions are
updated in one parallel pass: an :class:`~vaeflow.posteriors.conditioned.AutoregressiveTransform`
that reads its input, with the :class:`~vaeflow.posteriors.transforms.GatedAffine`
transform. The order is reversed between consecutive steps. The bias
of ``s`` starts positive, so that each step starts near the identity (the forget-gate
bias of the paper).

References:
    | Improved Variational Inference with Inverse Autoregressive Flow (Kingma et al., 2016)
    | https://arxiv.org/abs/1606.04934
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from vaeflow.nets.made import order_for_step
from vaeflow.posteriors.conditioned import AutoregressiveTransform
from vaeflow.posteriors.flows.base import FlowStep, register_flow
from vaeflow.posteriors.transforms import GatedAffine

__all__ = ["IAFStep"]


@register_flow("iaf")
class IAFStep(FlowStep):
    r"""One gated IAF step with a MADE that also sees the encoder features.

    Arguments:
        latent_dim: D.
        feature_dim: F, the size of the context h.
        index: position in the stack (even: natural order, odd: reversed, by default).
        hidden_dims: widths of the MADE's hidden layers.
        activation: the MADE's activation.
        order: ``reverse`` (default), ``natural`` or ``random``.
        gate_bias: initial bias of ``s`` (``sigmoid(gate_bias)`` is the initial gate).
    """

    sequential_inverse = True  # z_i needs z_<i: D dependent steps (MADE.solve)

    def __init__(
        self,
        latent_dim: int,
        feature_dim: int,
        index: int = 0,
        hidden_dims: Sequence[int] = (320, 320),
        activation: str = "elu",
        order: str = "reverse",
        gate_bias: float = 2.0,
    ) -> None:
        super().__init__(latent_dim, feature_dim, index)
        self.transform = AutoregressiveTransform(
            latent_dim,
            feature_dim,
            hidden_dims,
            order_for_step(latent_dim, index, order),
            GatedAffine(),
            activation,
        )
        with torch.no_grad():
            self.transform.made.output.bias[latent_dim:].fill_(gate_bias)

    def forward(self, z: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        return self.transform.apply(z, h)

    @property
    def order(self) -> Tensor:
        r"""The autoregressive order of this step (a permutation of ``0..D-1``)."""
        return self.transform.order

    def inverse(self, y: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        # z_i = (y_i - (1 - gate_i) m_i) / gate_i with (m_i, gate_i) functions of z_<i
        return self.transform.solve_inverse(y, h)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        # checkpoints written before the univariate-transform layer held the MADE as "made"
        for key in [k for k in state_dict if k.startswith(prefix + "made.")]:
            state_dict[prefix + "transform." + key[len(prefix) :]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
