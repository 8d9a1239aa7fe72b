r"""A Gaussian likelihood with a learned scale, for continuous data (and for dequantized
discrete data, with the log of the bin width added)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from vaeflow.checks import choice, number
from vaeflow.likelihoods.base import Likelihood, bounded_log_scale
from vaeflow.likelihoods.registry import LIKELIHOODS

__all__ = ["Gaussian"]

SCALES = ("pixel", "shared")
LOG_2PI = math.log(2 * math.pi)


@LIKELIHOODS.register("gaussian")
class Gaussian(Likelihood):
    r"""Independent Gaussian pixels, ``x_j ~ N(m_j(z), sigma_j^2)``, the whole log-density

    .. math:: \log p(x|z) = \sum_j -\frac{(x_j - m_j)^2}{2\sigma_j^2} - \log\sigma_j
              - \tfrac12\log 2\pi,

    never a mean-reduced squared error (which drops the scale and the normalization and
    so weighs the KL arbitrarily). ``scale="pixel"``: the decoder gives ``log sigma_j`` per
    sub-pixel; ``scale="shared"``: one learned ``log sigma`` for every pixel and image, as
    in the sigma-VAE (Rybkin et al. 2021, who also derive its optimum). ``log sigma`` is
    bounded below by ``log_scale_min``.

    On discrete data (``levels`` values) the data are dequantized, ``y = (k + u) / levels``
    (see :mod:`vaeflow.likelihoods.base`), and ``log p(x|z)`` includes ``-D log levels``:
    the figures are of the discrete data, comparable with a discrete likelihood's. On
    continuous data (``levels=None``) they are densities, and bits/dim are not defined.

    Arguments:
        shape: the image shape ``(C, H, W)``.
        levels: the data's levels per pixel (``None``: continuous data).
        scale: ``pixel`` or ``shared``.
        log_scale_min: the lower bound of ``log sigma``.

    References:
        | Simple and Effective VAE Training with Calibrated Decoders (Rybkin et al., 2021)
        | https://arxiv.org/abs/2006.13202
    """

    name = "gaussian"
    continuous = True
    mean_caption = "Gaussian means E[x|z]"

    def __init__(
        self,
        shape: Sequence[int] = (1, 1, 1),
        levels: int | None = None,
        scale: str = "pixel",
        log_scale_min: float = -7.0,
    ) -> None:
        super().__init__(shape, levels)
        self.scale = choice("likelihood.scale", scale, SCALES)
        self.log_scale_min = number("likelihood.log_scale_min", log_scale_min)
        if self.scale == "shared":
            self.shared_log_scale = nn.Parameter(torch.zeros(()))
        self.log_bin = -math.log(levels) if levels is not None else 0.0

    def channels(self, c: int) -> int:
        return 2 * c if self.scale == "pixel" else c

    def _mean_log_scale(self, out: Tensor) -> tuple[Tensor, Tensor]:
        p = self.params(out)
        if self.scale == "pixel":
            mean, raw = p.chunk(2, dim=-3)
        else:
            mean, raw = p, self.shared_log_scale.expand_as(p)
        return mean, bounded_log_scale(raw, self.log_scale_min)

    def log_prob(self, out: Tensor, x: Tensor) -> Tensor:
        mean, log_scale = self._mean_log_scale(out)
        z = (x - mean) * torch.exp(-log_scale)
        per = -0.5 * z.square() - log_scale - 0.5 * LOG_2PI + self.log_bin
        return per.flatten(-3).sum(-1)

    def mean(self, out: Tensor) -> Tensor:
        return self._mean_log_scale(out)[0].flatten(-3)

    def sample(self, out: Tensor, generator: torch.Generator | None = None) -> Tensor:
        r"""A draw of ``y``, and on discrete data the level it falls in, ``floor(y L)``."""
        mean, log_scale = self._mean_log_scale(out)
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        y = mean + torch.exp(log_scale) * noise
        if self.levels is not None:
            y = torch.floor(y * self.levels).clamp(0, self.levels - 1) / (self.levels - 1)
        return y.flatten(-3)
