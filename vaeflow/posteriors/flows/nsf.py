r"""Neural spline flows (Durkan et al., 2019): monotonic rational-quadratic splines whose bin
widths, heights and knot derivatives come from a MADE or a coupling network that also
reads the encoder features.

Three steps, each a conditioner of :mod:`vaeflow.posteriors.conditioned` times the
:class:`~vaeflow.posteriors.transforms.RationalQuadraticSpline` (K bins on ``[-B, B]``,
the identity outside):

- ``nsf_ar``: autoregressive in IAF's direction, ``z'_i = RQ(z_i; MADE(z_<i, h))``:
  parallel sampling, a sequential density of a given z (D steps of one MADE pass).
- ``nsf_maf``: in MAF's direction, ``z'_i = RQ(z_i; MADE(z'_<i, h))``: a parallel
  density, sequential sampling.
- ``nsf_coupling``: a coupling step, ``z'_b = RQ(z_b; NN(z_a, h))``: both directions in
  one pass.

The conditioner's output layer starts at zero, which makes every spline the identity
(equal bins, unit derivatives) at initialization; its gradients are not zero, so the
splines move from there. A base point further than B from 0 passes a step unchanged:
the posterior's Gaussian base, which learns where its mass sits, keeps most of it inside.

References:
    | Neural Spline Flows (Durkan et al., 2019) https://arxiv.org/abs/1906.04032
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from vaeflow.nets.made import order_for_step
from vaeflow.posteriors.conditioned import AutoregressiveTransform, CouplingStep
from vaeflow.posteriors.flows.base import FlowStep, register_flow
from vaeflow.posteriors.transforms import RationalQuadraticSpline

__all__ = ["SplineAutoregressiveStep", "SplineMaskedStep", "SplineCouplingStep"]


def _start_at_identity(layer: nn.Linear) -> None:
    r"""Zero output: every spline is the identity until the weights move."""
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)


class _SplineAutoregressive(FlowStep):
    r"""A MADE with context times a rational-quadratic spline (see the subclasses)."""

    def __init__(
        self,
        latent_dim: int,
        feature_dim: int,
        index: int = 0,
        hidden_dims: Sequence[int] = (320, 320),
        activation: str = "elu",
        order: str = "reverse",
        bins: int = 8,
        tail_bound: float = 3.0,
    ) -> None:
        super().__init__(latent_dim, feature_dim, index)
        spline = RationalQuadraticSpline(bins, tail_bound)
        self.transform = AutoregressiveTransform(
            latent_dim, feature_dim, hidden_dims, order_for_step(latent_dim, index, order), spline, activation
        )
        _start_at_identity(self.transform.made.output)

    @property
    def order(self) -> Tensor:
        r"""The autoregressive order of this step."""
        return self.transform.order


@register_flow("nsf_ar")
class SplineAutoregressiveStep(_SplineAutoregressive):
    r"""``z'_i = RQ(z_i; MADE(z_<i, h))``: IAF's direction, parallel sampling.

    Arguments:
        latent_dim: D.
        feature_dim: F, the size of the context h.
        index: position in the stack (sets the order).
        hidden_dims: widths of the MADE's hidden layers.
        activation: the MADE's activation.
        order: ``reverse`` (default: natural and reversed in turn), ``natural`` or ``random``.
        bins: K, the spline's bins.
        tail_bound: B, the spline acts on ``[-B, B]``.
    """

    sequential_inverse = True

    def forward(self, z: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        return self.transform.apply(z, h)

    def inverse(self, y: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        return self.transform.solve_inverse(y, h)


@register_flow("nsf_maf")
class SplineMaskedStep(_SplineAutoregressive):
    r"""``z'_i = RQ(z_i; MADE(z'_<i, h))``: MAF's direction, a parallel density.

    Arguments: as :class:`SplineAutoregressiveStep`.
    """

    def forward(self, z: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        return self.transform.solve_forward(z, h)

    def inverse(self, y: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        return self.transform.invert(y, h)


@register_flow("nsf_coupling")
class SplineCouplingStep(CouplingStep):
    r"""``z'_b = RQ(z_b; NN(z_a, h))``, ``z'_a = z_a``: both directions in one pass.

    Arguments:
        latent_dim: D >= 2.
        feature_dim: F, the size of the context h.
        index: position in the stack (sets the split).
        hidden_dims: widths of the network's hidden layers.
        activation: the network's activation.
        mask: ``alternate``, ``half`` or ``random`` (see :func:`~vaeflow.posteriors.conditioned.coupling_split`).
        bins: K, the spline's bins.
        tail_bound: B, the spline acts on ``[-B, B]``.
    """

    def __init__(
        self,
        latent_dim: int,
        feature_dim: int,
        index: int = 0,
        hidden_dims: Sequence[int] = (320, 320),
        activation: str = "elu",
        mask: str = "alternate",
        bins: int = 8,
        tail_bound: float = 3.0,
    ) -> None:
        spline = RationalQuadraticSpline(bins, tail_bound)
        super().__init__(
            latent_dim, feature_dim, index, spline, hidden_dims, activation, mask, family="nsf_coupling"
        )
        _start_at_identity([m for m in self.net.modules() if isinstance(m, nn.Linear)][-1])
