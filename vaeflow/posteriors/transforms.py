r"""Univariate transforms: elementwise bijections ``y_i = tau(x_i; p_i)`` whose parameters
``p_i`` come from elsewhere (a MADE, a coupling network).

Every autoregressive and coupling family is a *conditioner* that computes the parameters,
times one of these transforms:

- :class:`Affine`: ``y = t + exp(s) x``, with the log-scale soft-clamped (MAF, RealNVP, the
  autoregressive posterior; Papamakarios et al. 2017, Dinh et al. 2017);
- :class:`GatedAffine`: ``y = sigmoid(s) x + (1 - sigmoid(s)) m``, IAF's numerically stable
  form (Kingma et al. 2016);
- :class:`RationalQuadraticSpline`: a monotonic rational-quadratic spline on
  ``[-B, B]`` with K bins and the identity outside, the neural spline flow's transform
  (Durkan et al. 2019).

A transform takes its parameters as a sequence of ``n_params`` tensors shaped like x (the
MADE's outputs are such a sequence), and gives its forward map and its inverse, each with
the elementwise log-derivative ``log |dy/dx|`` at the input of the forward map.

References:
    | Neural Spline Flows (Durkan et al., 2019) https://arxiv.org/abs/1906.04032
    | Improved Variational Inference with Inverse Autoregressive Flow (Kingma et al., 2016)
      https://arxiv.org/abs/1606.04934
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from vaeflow.checks import integer, number
from vaeflow.errors import ConfigError
from vaeflow.nets.conditioner import soft_clamp

__all__ = ["Univariate", "Affine", "GatedAffine", "RationalQuadraticSpline"]


class Univariate:
    r"""An elementwise bijection ``y = tau(x; p)`` with ``n_params`` parameters per element."""

    n_params = 0

    def forward(self, x: Tensor, p: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        r"""``y = tau(x; p)`` and ``log |dy/dx|``, both shaped like x."""
        raise NotImplementedError

    def inverse(self, y: Tensor, p: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        r"""``x = tau^-1(y; p)`` and ``log |dy/dx|`` at that x."""
        raise NotImplementedError

    def log_abs_det(self, x: Tensor, p: Sequence[Tensor]) -> Tensor:
        r"""``log |dy/dx|`` at ``x`` (by default through :meth:`forward`)."""
        return self.forward(x, p)[1]


class Affine(Univariate):
    r"""``y = t + exp(s) x`` with ``p = (t, s')`` and ``s = b tanh(s' / b)`` (no clamp without
    ``max_log_scale``); ``log |dy/dx| = s``."""

    n_params = 2

    def __init__(self, max_log_scale: float | None = None) -> None:
        if max_log_scale is not None and float(max_log_scale) <= 0:
            raise ConfigError(f"posterior.max_log_scale={max_log_scale}: must be > 0")
        self.max_log_scale = None if max_log_scale is None else float(max_log_scale)

    def log_scale(self, raw: Tensor) -> Tensor:
        return raw if self.max_log_scale is None else soft_clamp(raw, self.max_log_scale)

    def forward(self, x: Tensor, p: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        s = self.log_scale(p[1])
        return torch.addcmul(p[0], s.exp(), x), s

    def inverse(self, y: Tensor, p: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        s = self.log_scale(p[1])
        return (y - p[0]) * torch.exp(-s), s

    def log_abs_det(self, x: Tensor, p: Sequence[Tensor]) -> Tensor:
        return self.log_scale(p[1])


class GatedAffine(Univariate):
    r"""``y = g x + (1 - g) m`` with ``p = (m, s)`` and the gate ``g = sigmoid(s)`` in (0, 1);
    ``log |dy/dx| = log sigmoid(s)``."""

    n_params = 2

    def forward(self, x: Tensor, p: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        m, s = p[0], p[1]
        gate = torch.sigmoid(s)
        return gate * x + (1 - gate) * m, F.logsigmoid(s)

    def inverse(self, y: Tensor, p: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        m, s = p[0], p[1]
        gate = torch.sigmoid(s)
        return (y - (1 - gate) * m) / gate, F.logsigmoid(s)

    def log_abs_det(self, x: Tensor, p: Sequence[Tensor]) -> Tensor:
        return F.logsigmoid(p[1])


class RationalQuadraticSpline(Univariate):
    r"""A monotonic rational-quadratic spline on ``[-B, B]``, the identity outside it
    (Durkan et al., 2019, section 3 and appendix A).

    ``p`` holds ``3K - 1`` raw values per element: K bin widths and K bin heights (softmax,
    each at least ``min_bin``, scaled to ``2B``) and the derivatives at the ``K - 1`` inner
    knots (``min_derivative + softplus``); the derivative at both ends is 1, so that the
    spline meets the identity tails with a continuous slope. All raw values zero give equal
    bins and unit derivatives: the identity. In bin k, with ``xi = (x - x_k) / w_k``, slope
    ``s_k = h_k / w_k`` and knot derivatives ``d_k, d_{k+1}``:

    .. math:: y = y_k + \frac{h_k [s_k \xi^2 + d_k \xi (1 - \xi)]}{s_k + (d_{k+1} + d_k - 2 s_k) \xi (1 - \xi)},

    .. math:: \frac{dy}{dx} = \frac{s_k^2 [d_{k+1} \xi^2 + 2 s_k \xi (1 - \xi) + d_k (1 - \xi)^2]}
        {[s_k + (d_{k+1} + d_k - 2 s_k) \xi (1 - \xi)]^2},

    and the inverse is the root in [0, 1] of a quadratic in xi, taken in the form
    ``xi = 2c / (-b - sqrt(b^2 - 4ac))`` that does not cancel.

    Arguments:
        bins: K.
        tail_bound: B.
        min_bin: the smallest bin width and height, as a fraction of ``2B``.
        min_derivative: the smallest derivative at a knot.
    """

    def __init__(
        self, bins: int = 8, tail_bound: float = 3.0, min_bin: float = 1e-3, min_derivative: float = 1e-3
    ) -> None:
        self.bins = integer("posterior.bins", bins, 2, advice="a spline needs at least 2 bins")
        self.tail_bound = float(number("posterior.tail_bound", tail_bound, 0, above=True))
        self.min_bin, self.min_derivative = float(min_bin), float(min_derivative)
        if self.min_bin * self.bins >= 1:
            raise ConfigError(f"posterior.bins={bins}: at most {int(1 / self.min_bin) - 1} bins")
        self.n_params = 3 * self.bins - 1
        # softplus(raw + offset) + min_derivative = 1 at raw = 0: zero parameters are the identity
        self.offset = math.log(math.expm1(1 - self.min_derivative))

    # The parameters are stacked on an axis before x's last one, [..., P, D] for x [..., D]:
    # softmax, cumsum and gathers over that axis are several times faster on the CPU than
    # over a short last axis.

    def _knots(self, p: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        r"""Knot positions ``xs, ys`` and derivatives ``ds``, ``[..., K+1, D]`` each, and the
        bin widths and heights as fractions of ``2B``, ``[..., K, D]``."""
        raw = torch.stack(tuple(p), -2)
        k, bound = self.bins, self.tail_bound
        widths = self._bins(raw[..., :k, :])
        heights = self._bins(raw[..., k : 2 * k, :])
        inner = self.min_derivative + F.softplus(raw[..., 2 * k :, :] + self.offset)
        one = torch.ones_like(inner[..., :1, :])
        ds = torch.cat([one, inner, one], -2)
        xs, ys = self._cumulative(widths, bound), self._cumulative(heights, bound)
        return xs, ys, ds, widths, heights

    def _bins(self, raw: Tensor) -> Tensor:
        return self.min_bin + (1 - self.min_bin * self.bins) * torch.softmax(raw, -2)

    @staticmethod
    def _cumulative(fractions: Tensor, bound: float) -> Tensor:
        r"""Knots from ``-B`` to ``B`` exactly at both ends (rounding never leaves a gap)."""
        inner = 2 * bound * torch.cumsum(fractions[..., :-1, :], -2) - bound
        ends = torch.full_like(fractions[..., :1, :], bound)
        return torch.cat([-ends, inner, ends], -2)

    @staticmethod
    def _gather(values: Tensor, index: Tensor) -> Tensor:
        return values.gather(-2, index.unsqueeze(-2)).squeeze(-2)

    def _bin_of(self, v: Tensor, knots: Tensor) -> Tensor:
        r"""The bin ``0..K-1`` of each ``v`` inside ``[-B, B]``."""
        return (v.unsqueeze(-2) >= knots[..., 1:-1, :]).sum(-2)

    def _rq(self, v: Tensor, p: Sequence[Tensor], inverse: bool) -> tuple[Tensor, Tensor]:
        bound = self.tail_bound
        inside = (v >= -bound) & (v <= bound)
        vin = torch.where(inside, v, torch.zeros_like(v))  # outside: a harmless stand-in (not a clamp,
        # whose gradient vanishes at +-B)
        xs, ys, ds, _, _ = self._knots(p)
        k = self._bin_of(vin, ys if inverse else xs)
        x_k, y_k = self._gather(xs, k), self._gather(ys, k)
        w_k = self._gather(xs, k + 1) - x_k
        h_k = self._gather(ys, k + 1) - y_k
        d_k, d_k1 = self._gather(ds, k), self._gather(ds, k + 1)
        s_k = h_k / w_k
        curve = d_k1 + d_k - 2 * s_k
        if inverse:
            dy = vin - y_k
            a = h_k * (s_k - d_k) + dy * curve
            b = h_k * d_k - dy * curve
            c = -s_k * dy
            disc = (b.square() - 4 * a * c).clamp_min(0)
            xi = 2 * c / (-b - disc.sqrt())  # in [0, 1] up to rounding (no clamp: it would stop gradients)
        else:
            xi = (vin - x_k) / w_k
        both = xi * (1 - xi)
        denominator = s_k + curve * both  # of y and, squared, of dy/dx
        if inverse:
            out = x_k + xi * w_k
        else:
            out = y_k + h_k * (s_k * xi.square() + d_k * both) / denominator
        numerator = s_k.square() * (d_k1 * xi.square() + 2 * s_k * both + d_k * (1 - xi).square())
        log_det = numerator.log() - 2 * torch.log(denominator)
        return torch.where(inside, out, v), torch.where(inside, log_det, torch.zeros_like(v))

    def forward(self, x: Tensor, p: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        return self._rq(x, p, inverse=False)

    def inverse(self, y: Tensor, p: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        return self._rq(y, p, inverse=True)
