r"""What every likelihood p(x|z) is: a map from the decoder's output to a distribution over
images, and what the data must be for it.

The decoder emits ``P`` numbers per pixel location, a ``[P, H, W]`` map flattened to
``[..., P*H*W]``; :attr:`Likelihood.param_shape` says ``P`` for the image shape
``(C, H, W)``, so every encoder/decoder serves every likelihood. Images are ``[B, C, H, W]``
with values in ``[0, 1]``: ``k / (levels - 1)`` for data with ``levels`` discrete values.

A *discrete* likelihood gives the probability of those values, so its NLL is the NLL of
the data. A *density* (``continuous = True``) on discrete data models the data
dequantized by uniform noise, ``y = (k + u) / levels``, ``u ~ U[0, 1)`` (Uria et al. 2013;
Theis et al. 2016), and adds the log of the bin width ``1/levels`` per dimension, so that
``E_u[log p(y) - D log levels]`` is a lower bound on the log-probability of the discrete
data and every figure (ELBO, IW-NLL, bits/dim) is one of the data, comparable across
likelihoods.

References:
    | RNADE: The real-valued neural autoregressive density-estimator (Uria et al., 2013)
    | https://arxiv.org/abs/1306.0186
    | A note on the evaluation of generative models (Theis et al., 2016)
    | https://arxiv.org/abs/1511.01844
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaeflow.errors import ConfigError

__all__ = ["Likelihood", "bounded_log_scale", "describe_levels"]


def describe_levels(levels: int | None) -> str:
    r"""``binary pixels``, ``256 levels per pixel (8 bits)``, ``continuous values``."""
    if levels is None:
        return "continuous values"
    if levels == 2:
        return "binary pixels"
    bits = math.log2(levels)
    return f"{levels} levels per pixel" + (f" ({int(bits)} bits)" if bits.is_integer() else "")


def bounded_log_scale(raw: Tensor, minimum: float) -> Tensor:
    r"""``minimum + softplus(raw - minimum)``: a log-scale bounded below by ``minimum``
    without a flat region (a hard clamp stops the gradient of every pixel below it), and
    close to ``raw`` above it."""
    return minimum + F.softplus(raw - minimum)


class Likelihood(nn.Module):
    r"""The base of every likelihood.

    Arguments:
        shape: the image shape ``(C, H, W)``.
        levels: the data's discrete values per pixel (``None``: continuous data).

    Subclasses set :attr:`name`, :attr:`continuous` and :attr:`mean_caption` and define
    :meth:`channels`, :meth:`log_prob`, :meth:`mean` and :meth:`sample`.
    """

    name = ""
    #: a density on ``[0, 1]`` (dequantizes discrete data) rather than a distribution over levels
    continuous = False
    #: what :meth:`mean` shows, for the captions of sample images
    mean_caption = "means E[x|z]"

    def __init__(self, shape: Sequence[int], levels: int | None) -> None:
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        self.levels = levels

    @property
    def dims(self) -> int:
        r"""``D = C * H * W``, the data's dimensions."""
        return math.prod(self.shape)

    def channels(self, c: int) -> int:
        r"""Parameters per pixel location for images of ``c`` channels."""
        raise NotImplementedError

    @property
    def param_shape(self) -> tuple[int, int, int]:
        r"""``(P, H, W)``: what the decoder emits, flattened."""
        c, h, w = self.shape
        return (self.channels(c), h, w)

    @property
    def dequantizes(self) -> int | None:
        r"""``levels`` when this is a density on discrete data (the data are dequantized
        with ``levels`` bins per unit), else ``None``."""
        return self.levels if self.continuous else None

    def params(self, out: Tensor) -> Tensor:
        r"""The decoder's output ``[..., P*H*W]`` as ``[..., P, H, W]``."""
        return out.unflatten(-1, self.param_shape)

    def log_prob(self, out: Tensor, x: Tensor) -> Tensor:
        r"""``log p(x|z)``: decoder output ``[..., B, P*H*W]``, images ``[B, C, H, W]`` ->
        ``[..., B]``."""
        raise NotImplementedError

    def mean(self, out: Tensor) -> Tensor:
        r"""``E[x|z]`` (or what :attr:`mean_caption` says), ``[..., C*H*W]``."""
        raise NotImplementedError

    def sample(self, out: Tensor, generator: torch.Generator | None = None) -> Tensor:
        r"""One draw of ``x ~ p(x|z)``, ``[..., C*H*W]`` (values on the data's levels)."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"shape={self.shape}, levels={self.levels}"

    def _require_levels(self, what: str, advice: str) -> int:
        if self.levels is None:
            raise ConfigError(
                f"likelihood={self.name} needs {what}; the data have continuous values: {advice}"
            )
        return self.levels
