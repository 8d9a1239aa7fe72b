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

    def mean(self, logits: Tensor) -> Tensor:
        return torch.sigmoid(logits)

    def sample(self, logits: Tensor) -> Tensor:
        return torch.bernoulli(torch.sigmoid(logits))
