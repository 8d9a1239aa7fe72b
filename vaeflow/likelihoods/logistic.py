r"""Discretized logistic likelihoods of pixels with ``L`` levels: one logistic per
sub-pixel (Kingma et al. 2016, IAF) and a mixture of K (Salimans et al. 2017, PixelCNN++).

A pixel value ``x_k = k / (L - 1)`` owns the bin ``[x_k - delta/2, x_k + delta/2]``,
``delta = 1 / (L - 1)``, and its probability is the mass of a logistic with mean ``mu``
and scale ``s`` in that bin; the end bins take the tails, ``(-inf, delta/2]`` and
``[1 - delta/2, inf)``, so the L probabilities sum to 1 exactly:

.. math::

    P(x_k) = \sigma(a) - \sigma(b), \qquad a = \frac{x_k + \delta/2 - \mu}{s},\quad
    b = \frac{x_k - \delta/2 - \mu}{s},

with :math:`\sigma(+\infty) = 1` for the last bin and :math:`\sigma(-\infty) = 0` for the
first. The difference is computed as
:math:`\log P = \log\sigma(a) + \log\sigma(-b) + \log(1 - e^{-(a - b)})`, exact in float32
far in both tails (where ``sigma(a) - sigma(b)`` underflows and PixelCNN++ falls back to the
density at the bin's centre).

References:
    | Improved Variational Inference with Inverse Autoregressive Flow (Kingma et al., 2016)
    | https://arxiv.org/abs/1606.04934
    | PixelCNN++: Improving the PixelCNN with Discretized Logistic Mixture Likelihood and
    | Other Modifications (Salimans et al., 2017)
    | https://arxiv.org/abs/1701.05517
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from vaeflow.checks import choice, integer, number
from vaeflow.errors import ConfigError
from vaeflow.likelihoods.base import Likelihood, bounded_log_scale, describe_levels
from vaeflow.likelihoods.registry import LIKELIHOODS

__all__ = [
    "DiscretizedLogistic",
    "DiscretizedLogisticMixture",
    "discretized_logistic_log_prob",
    "discretized_logistic_mean",
    "discretized_logistic_sample",
]


def _log1mexp(t: Tensor) -> Tensor:
    r"""``log(1 - exp(-t))`` for ``t > 0``, accurate for small and large ``t`` (Mächler 2012)."""
    t = t.clamp_min(1e-30)
    small = t < math.log(2)  # each branch sees only the inputs it is accurate for (finite gradients)
    one = torch.ones((), dtype=t.dtype, device=t.device)
    return torch.where(
        small,
        torch.log(-torch.expm1(-torch.where(small, t, one))),
        torch.log1p(-torch.exp(-torch.where(small, one, t))),
    )


def discretized_logistic_log_prob(x: Tensor, mean: Tensor, log_scale: Tensor, levels: int) -> Tensor:
    r"""``log P(x)`` of every value ``x = k / (levels - 1)`` under the discretized logistic
    with ``mean`` and ``log_scale`` (broadcast), elementwise; the end bins take the tails."""
    delta = 1.0 / (levels - 1)
    k = torch.round(x * (levels - 1))
    inv_scale = torch.exp(-log_scale)
    centred = x - mean
    upper = (centred + delta / 2) * inv_scale
    lower = (centred - delta / 2) * inv_scale
    first, last = k <= 0, k >= levels - 1
    zero = torch.zeros((), dtype=upper.dtype, device=upper.device)
    return (
        torch.where(last, zero, F.logsigmoid(upper))
        + torch.where(first, zero, F.logsigmoid(-lower))
        + torch.where(first | last, zero, _log1mexp(delta * inv_scale))
    )


def discretized_logistic_mean(mean: Tensor, log_scale: Tensor, levels: int) -> Tensor:
    r"""The exact mean ``sum_k x_k P(x_k)``, by summation by parts:
    ``E[x] = 1 - delta sum_{k < L-1} sigma((x_k + delta/2 - mu) / s)`` (one pass per level)."""
    delta = 1.0 / (levels - 1)
    inv_scale = torch.exp(-log_scale)
    below = torch.zeros_like(mean)
    for k in range(levels - 1):
        below = below + torch.sigmoid((k * delta + delta / 2 - mean) * inv_scale)
    return 1.0 - delta * below


def discretized_logistic_sample(
    mean: Tensor, log_scale: Tensor, levels: int, generator: torch.Generator | None = None
) -> Tensor:
    r"""One draw per element: ``mu + s logit(u)`` rounded to the nearest level (the bins'
    centres), the tails falling in the end bins."""
    u = torch.rand(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    u = u.clamp(1e-6, 1 - 1e-6)
    v = mean + torch.exp(log_scale) * (torch.log(u) - torch.log1p(-u))
    return torch.round(v * (levels - 1)).clamp(0, levels - 1) / (levels - 1)


def _levels(likelihood: Likelihood, bits: int | None) -> int:
    r"""The number of bins: the data's levels, which an explicit ``bits`` must match."""
    integer("likelihood.bits", bits, 1, none=True, advice="the data's bit depth, or null")
    levels = likelihood._require_levels(
        "discrete pixels", "use likelihood=gaussian, or give the data as 8-bit integers"
    )
    if levels < 2:
        raise ConfigError(
            f"likelihood={likelihood.name} needs at least 2 levels per pixel, the data have {levels}"
        )
    if bits is not None and 2**bits != levels:
        raise ConfigError(
            f"likelihood.bits={bits} gives {2**bits} bins and the data have {describe_levels(levels)}: "
            "leave likelihood.bits=null (the data's depth)"
        )
    return levels


@LIKELIHOODS.register("discretized_logistic")
class DiscretizedLogistic(Likelihood):
    r"""One discretized logistic per sub-pixel, as in the IAF paper's ResNet VAE and the
    VampPrior code: the decoder gives a mean and a log-scale per sub-pixel.

    The mean is kept inside the end bins, ``mu = -delta/2 + (1 + delta) sigmoid(m)`` (the
    references clamp it to ``[1/512, 1 - 1/512]``; a sigmoid has no flat region), so a
    pixel at 0 or 1 reaches probability ``sigma(delta / s) -> 1`` as the scale shrinks;
    the log-scale is bounded below, ``log s >= log_scale_min`` (softly, see
    :func:`~vaeflow.likelihoods.base.bounded_log_scale`).

    Arguments:
        shape: the image shape ``(C, H, W)``.
        levels: the data's levels ``L`` per pixel.
        bits: ``log2`` of the number of bins; ``None``: the data's (must match if given).
        log_scale_min: the lower bound of ``log s`` (in units of the ``[0, 1]`` range).
    """

    name = "discretized_logistic"
    mean_caption = "discretized logistic means E[x|z]"

    def __init__(
        self,
        shape: Sequence[int] = (1, 1, 1),
        levels: int | None = 256,
        bits: int | None = None,
        log_scale_min: float = -8.0,
    ) -> None:
        super().__init__(shape, levels)
        self.bins = _levels(self, bits)
        self.log_scale_min = number("likelihood.log_scale_min", log_scale_min)

    def channels(self, c: int) -> int:
        return 2 * c

    def _mean_log_scale(self, out: Tensor) -> tuple[Tensor, Tensor]:
        raw_mean, raw_log_scale = self.params(out).chunk(2, dim=-3)
        delta = 1.0 / (self.bins - 1)
        return -delta / 2 + (1 + delta) * torch.sigmoid(raw_mean), bounded_log_scale(
            raw_log_scale, self.log_scale_min
        )

    def log_prob(self, out: Tensor, x: Tensor) -> Tensor:
        mean, log_scale = self._mean_log_scale(out)
        return discretized_logistic_log_prob(x, mean, log_scale, self.bins).flatten(-3).sum(-1)

    def mean(self, out: Tensor) -> Tensor:
        return discretized_logistic_mean(*self._mean_log_scale(out), self.bins).flatten(-3)

    def sample(self, out: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return discretized_logistic_sample(*self._mean_log_scale(out), self.bins, generator).flatten(-3)


CONDITIONING = ("paper", "independent")


@LIKELIHOODS.register("discretized_logistic_mixture")
class DiscretizedLogisticMixture(Likelihood):
    r"""A mixture of K discretized logistics per pixel location (Salimans et al. 2017).

    ``conditioning="paper"``: one mixture indicator per location for all channels, and
    channel ``c``'s mean in component ``k`` moves linearly with the earlier channels' values,
    ``mu_kc = m_kc + sum_{c' < c} tanh(alpha_kcc') x_c'`` (the paper's RGB model;
    ``K (1 + 2C + C(C-1)/2)`` parameters per location, ``10K`` for colour):

    .. math:: p(x_{ij}) = \sum_k \pi_k \prod_c P(x_{ijc} \mid \mu_{kc}(x_{ij,<c}), s_{kc}).

    ``conditioning="independent"``: every channel its own mixture of K (``3KC`` parameters).
    The means are the paper's, unbounded (the tails fall in the end bins); the log-scales
    are bounded below by ``log_scale_min``.

    Arguments:
        shape: the image shape ``(C, H, W)``.
        levels: the data's levels ``L`` per pixel.
        components: ``K``.
        conditioning: ``paper`` or ``independent``.
        bits: ``log2`` of the number of bins; ``None``: the data's (must match if given).
        log_scale_min: the lower bound of ``log s``.
    """

    name = "discretized_logistic_mixture"
    mean_caption = "logistic-mixture means E[x|z] (later channels: given the earlier ones' means)"

    def __init__(
        self,
        shape: Sequence[int] = (1, 1, 1),
        levels: int | None = 256,
        components: int = 5,
        conditioning: str = "paper",
        bits: int | None = None,
        log_scale_min: float = -8.0,
    ) -> None:
        super().__init__(shape, levels)
        self.bins = _levels(self, bits)
        self.k = integer("likelihood.components", components, 1, advice="the number of mixture components")
        self.conditioning = choice("likelihood.conditioning", conditioning, CONDITIONING)
        self.log_scale_min = number("likelihood.log_scale_min", log_scale_min)

    def channels(self, c: int) -> int:
        if self.conditioning == "paper":
            return self.k * (1 + 2 * c + c * (c - 1) // 2)
        return 3 * self.k * c

    def _split(self, out: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        r"""``log pi [..., K, c', H, W]`` (``c' = 1`` paper, ``C`` independent), means and
        log-scales ``[..., K, C, H, W]``, coefficients ``[..., K, C(C-1)/2, H, W]`` (paper)."""
        p = self.params(out)
        c, (h, w), k = self.shape[0], self.shape[1:], self.k
        lead = p.shape[:-3]
        mix = 1 if self.conditioning == "paper" else c
        sizes = [k * mix, k * c, k * c] + ([k * (c * (c - 1) // 2)] if self.conditioning == "paper" else [])
        parts = list(p.split(sizes, dim=-3))
        logits = parts[0].reshape(*lead, k, mix, h, w)
        means = parts[1].reshape(*lead, k, c, h, w)
        log_scales = bounded_log_scale(parts[2].reshape(*lead, k, c, h, w), self.log_scale_min)
        coeffs = torch.tanh(parts[3].reshape(*lead, k, -1, h, w)) if len(parts) > 3 else None
        return torch.log_softmax(logits, dim=-4), means, log_scales, coeffs

    def _mean_of(self, means: Tensor, coeffs: Tensor | None, earlier: Sequence[Tensor], c: int) -> Tensor:
        r"""Channel ``c``'s means ``[..., K, H, W]`` given the values ``earlier`` of channels
        ``< c`` (paper conditioning: coefficient ``c(c-1)/2 + i`` multiplies channel ``i``)."""
        mu = means[..., c, :, :]
        if coeffs is not None:
            for i, value in enumerate(earlier[:c]):
                mu = mu + coeffs[..., c * (c - 1) // 2 + i, :, :] * value
        return mu

    def log_prob(self, out: Tensor, x: Tensor) -> Tensor:
        log_pi, means, log_scales, coeffs = self._split(out)
        xs = [x[:, c, None] for c in range(self.shape[0])]  # [B, 1, H, W] against [..., B, K, H, W]
        per = torch.stack(
            [
                discretized_logistic_log_prob(
                    xs[c], self._mean_of(means, coeffs, xs, c), log_scales[..., c, :, :], self.bins
                )
                for c in range(self.shape[0])
            ],
            dim=-3,
        )
        if self.conditioning == "paper":
            per = per.sum(-3, keepdim=True)  # channels jointly, under one indicator
        return torch.logsumexp(log_pi + per, dim=-4).flatten(-3).sum(-1)

    def mean(self, out: Tensor) -> Tensor:
        log_pi, means, log_scales, coeffs = self._split(out)
        component: list[Tensor] = []  # channel by channel, each component's earlier channels at their means
        for c in range(self.shape[0]):
            mu = self._mean_of(means, coeffs, component, c)
            component.append(discretized_logistic_mean(mu, log_scales[..., c, :, :], self.bins))
        return (log_pi.exp() * torch.stack(component, dim=-3)).sum(-4).flatten(-3)

    def sample(self, out: Tensor, generator: torch.Generator | None = None) -> Tensor:
        log_pi, means, log_scales, coeffs = self._split(out)
        u = torch.rand(log_pi.shape, generator=generator, device=out.device, dtype=out.dtype)
        gumbel = -torch.log(-torch.log(u.clamp(1e-12, 1 - 1e-7)))
        pick = F.one_hot((log_pi + gumbel).argmax(-4), self.k).movedim(-1, -4).to(out.dtype)
        means, log_scales = (pick * means).sum(-4), (pick * log_scales).sum(-4)  # [..., C, H, W]
        coeffs = None if coeffs is None else (pick * coeffs).sum(-4)
        values: list[Tensor] = []
        for c in range(self.shape[0]):
            mu = self._mean_of(
                means.unsqueeze(-4), None if coeffs is None else coeffs.unsqueeze(-4), values, c
            )
            values.append(
                discretized_logistic_sample(mu, log_scales[..., c, None, :, :], self.bins, generator)
            )
        return torch.stack(values, dim=-3).squeeze(-4).flatten(-3)
