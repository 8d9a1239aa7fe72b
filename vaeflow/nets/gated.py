r"""Gated layers: a layer's output times a sigmoid gate from a twin layer (Dauphin et al., 2017).

.. math:: \operatorname{Gated}(x) = (W_h x + b_h) \odot \sigma(W_g x + b_g).

The gated dense layers of the VampPrior paper's MLP VAEs (Tomczak & Welling, 2018;
``encoder.activation=gated``) and the gated convolutions of the Sylvester flows paper
(:mod:`vaeflow.nets.gated_conv`).

References:
    | Language Modeling with Gated Convolutional Networks (Dauphin et al., 2017)
    | https://arxiv.org/abs/1612.08083
    | VAE with a VampPrior (Tomczak & Welling, 2018): https://arxiv.org/abs/1705.07120
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["Gated"]


class Gated(nn.Module):
    r"""``h(x) * sigmoid(g(x))`` with ``h`` and ``g`` two layers of the same kind and shape
    (Dauphin et al., 2017), e.g. ``Gated(nn.Conv2d, 32, 64, 5, 1, 2)``.

    Arguments:
        layer: the layer class (:class:`torch.nn.Linear`, :class:`torch.nn.Conv2d`, ...).
        *args, **kwargs: its arguments (channels, kernel size, stride, padding, ...).
    """

    def __init__(self, layer: Callable[..., nn.Module], *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.h, self.g = layer(*args, **kwargs), layer(*args, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        return self.h(x) * torch.sigmoid(self.g(x))
