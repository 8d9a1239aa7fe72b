r"""Independent Bernoulli pixels: the likelihood of binary images."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from vaeflow.errors import ConfigError
from vaeflow.likelihoods.base import Likelihood, describe_levels
from vaeflow.likelihoods.registry import LIKELIHOODS

__all__ = ["Bernoulli"]


@LIKELIHOODS.register("bernoulli")
class Bernoulli(Likelihood):
    r"""Independent Bernoulli pixels with logits ``l`` (one per pixel):

    .. math:: \log p(x|z) = \sum_j x_j l_j - \operatorname{softplus}(l_j),

    the stable form of ``x log sigmoid(l) + (1 - x) log sigmoid(-l)``. For binary data
    only: on grey values it is not a distribution (the "continuous Bernoulli" mistake).

    Arguments:
        shape: the image shape ``(C, H, W)``.
        levels: the data's levels; must be 2.
    """

    name = "bernoulli"
    mean_caption = "Bernoulli means E[x|z]"

    def __init__(self, shape: Sequence[int] = (1, 1, 1), levels: int | None = 2) -> None:
        super().__init__(shape, levels)
        if levels != 2:
            raise ConfigError(
                f"likelihood=bernoulli needs binary pixels and the data have {describe_levels(levels)}: "
                "set dataset.binarize=dynamic (or static), or choose likelihood=discretized_logistic "
                "(or gaussian for continuous data)"
            )

    def channels(self, c: int) -> int:
        return c

    def log_prob(self, out: Tensor, x: Tensor) -> Tensor:
        x = x.flatten(1)
        return (x * out - F.softplus(out)).sum(-1)

    def log_prob_pairs(self, out: Tensor, x: Tensor) -> Tensor:
        r"""``log p(x_b|z_p)`` for every pair of ``out [P, Pixels]`` and image ``x [B, ...]``,
        ``[P, B]``: ``l_p . x_b - sum softplus(l_p)``, one matrix product instead of ``P x B``
        elementwise rows (quadrature decodes a grid of points once for a batch of images)."""
        x = x.flatten(1).to(out.dtype)
        return out @ x.T - F.softplus(out).sum(-1, keepdim=True)

    def mean(self, out: Tensor) -> Tensor:
        return torch.sigmoid(out)

    def sample(self, out: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return torch.bernoulli(torch.sigmoid(out), generator=generator)
