r"""Affine coupling step of RealNVP (Dinh et al., 2017), conditioned on the encoder features.

The dimensions are split into a kept part ``a`` and a changed part ``b``:

.. math:: z'_a = z_a, \quad z'_b = z_b \odot \exp(s(z_a, h)) + t(z_a, h),
    \quad s = c \tanh(s' / c),

.. math:: \log |\det \partial z' / \partial z| = \sum_j s_j(z_a, h).

The Jacobian is block-triangular with diagonal ``exp(s) > 0``, so every step is invertible
in closed form, ``z_b = (z'_b - t(z'_a, h)) \odot \exp(-s(z'_a, h))``, whatever the
conditioner ``(s', t) = MLP(z_a, h)`` computes. The split alternates between steps so that
every dimension gets changed: ``alternate`` (even / odd dimensions, swapped at each step),
``half`` (first / second half, swapped at each step) or ``random`` (a fixed random half
per step, seeded by its index). The step is a :class:`~vaeflow.posteriors.conditioned.CouplingStep`
with the :class:`~vaeflow.posteriors.transforms.Affine` transform.

References:
    | Density Estimation using Real NVP (Dinh et al., 2017)
    | https://arxiv.org/abs/1605.08803
"""

from __future__ import annotations

from collections.abc import Sequence

from vaeflow.posteriors.conditioned import CouplingStep
from vaeflow.posteriors.flows.base import register_flow
from vaeflow.posteriors.transforms import Affine

__all__ = ["RealNVPStep"]


@register_flow("realnvp")
class RealNVPStep(CouplingStep):
    r"""One affine coupling step whose conditioner reads the kept dimensions and h.

    Arguments:
        latent_dim: D >= 2.
        feature_dim: F, the size of the context h.
        index: position in the stack (sets the split).
        hidden_dims: widths of the conditioner's hidden layers.
        activation: the conditioner's activation.
        mask: ``alternate``, ``half`` or ``random`` (see :func:`~vaeflow.posteriors.conditioned.coupling_split`).
        max_log_scale: bound of the soft-clamped log-scale ``s``.

    Example:
        >>> import torch
        >>> step = RealNVPStep(3, 4, hidden_dims=[8])
        >>> z, h = torch.randn(2, 5, 3), torch.randn(5, 4)
        >>> y, ladj = step(z, h)
        >>> torch.allclose(step.inverse(y, h)[0], z, atol=1e-6)
        True
    """

    def __init__(
        self,
        latent_dim: int,
        feature_dim: int,
        index: int = 0,
        hidden_dims: Sequence[int] = (320, 320),
        activation: str = "elu",
        mask: str = "alternate",
        max_log_scale: float = 6.0,
    ) -> None:
        # the network's output is (s', t): the transform's (shift, log-scale) are chunks 1 and 0
        super().__init__(
            latent_dim,
            feature_dim,
            index,
            Affine(max_log_scale),
            hidden_dims,
            activation,
            mask,
            layout=(1, 0),
        )
