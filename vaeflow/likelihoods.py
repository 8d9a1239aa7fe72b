r"""Likelihoods p(x|z), from the decoder's output parameters."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaeflow.registry import Registry

__all__ = ["LIKELIHOODS", "Bernoulli"]

LIKELIHOODS = Registry("likelihood")


@LIKELIHOODS.register("bernoulli")
class Bernoulli(nn.Module):
    r"""Independent Bernoulli pixels with logits ``l``:

    .. math:: \log p(x|z) = \sum_j x_j l_j - \operatorname{softplus}(l_j),

    the stable form of ``x log sigmoid(l) + (1 - x) log sigmoid(-l)``.
    """

    def log_prob(self, logits: Tensor, x: Tensor) -> Tensor:
        r"""``logits [..., B, P]`` and images ``x [B, ...]`` -> ``log p(x|z) [..., B]``."""
        x = x.flatten(1)
        return (x * logits - F.softplus(logits)).sum(-1)

    def log_prob_pairs(self, logits: Tensor, x: Tensor) -> Tensor:
        r"""``log p(x_b|z_p)`` for every pair of ``logits [P, Pixels]`` and image ``x [B, ...]``,
        ``[P, B]``: ``l_p . x_b - sum softplus(l_p)``, one matrix product instead of ``P x B``
        elementwise rows (quadrature decodes a grid of points once for a batch of images)."""
        x = x.flatten(1).to(logits.dtype)
        return logits @ x.T - F.softplus(logits).sum(-1, keepdim=True)

    def mean(self, logits: Tensor) -> Tensor:
        return torch.sigmoid(logits)

    def sample(self, logits: Tensor) -> Tensor:
        return torch.bernoulli(torch.sigmoid(logits))
