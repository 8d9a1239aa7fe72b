r"""Small pieces that the amortized flow steps share: a context MLP and a soft clamp.

A conditioner reads part of the latent vector and the encoder features h; the features
are projected once per example and broadcast over the leading sample dimensions, so that
``z [n, B, d]`` and ``h [B, F]`` give ``[n, B, out]`` without copying h n times.

.. math:: \operatorname{softclamp}_b(s) = b \tanh(s / b) \in (-b, b)

keeps a log-scale bounded while leaving it (almost) untouched near 0, and keeps a
non-zero gradient everywhere (unlike a hard clamp).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from vaeflow.errors import ConfigError
from vaeflow.nets.mlp import MLP, check_widths, make_activation

__all__ = ["ContextMLP", "soft_clamp"]


def soft_clamp(s: Tensor, bound: float) -> Tensor:
    r"""``bound * tanh(s / bound)``: a smooth clamp of ``s`` into ``(-bound, bound)``.

    Example:
        >>> import torch
        >>> soft_clamp(torch.tensor([0.0, 1e3]), 5.0)
        tensor([0., 5.])
    """
    return bound * torch.tanh(s / bound)


class ContextMLP(nn.Module):
    r"""An MLP of ``x [..., B, in_dim]`` whose first layer also reads a context ``h [B, F]``.

    .. math:: a_1 = \phi(W x + V h + c), \quad \dots, \quad y = W_L a_{L-1} + c_L

    Arguments:
        in_dim: size of x.
        context_dim: F, size of the context h.
        hidden_dims: widths of the hidden layers (at least one).
        out_dim: size of the output.
        activation: name of the activation.

    Example:
        >>> import torch
        >>> net = ContextMLP(2, 3, [8], 4)
        >>> net(torch.randn(5, 7, 2), torch.randn(7, 3)).shape
        torch.Size([5, 7, 4])
    """

    def __init__(
        self,
        in_dim: int,
        context_dim: int,
        hidden_dims: Sequence[int],
        out_dim: int,
        activation: str = "elu",
    ) -> None:
        super().__init__()
        dims = check_widths(hidden_dims, "posterior")
        if not dims:
            raise ConfigError(
                "posterior.hidden_dims is empty: the conditioner needs at least one hidden layer"
            )
        self.input = nn.Linear(in_dim, dims[0])
        self.context = nn.Linear(context_dim, dims[0], bias=False)
        self.act = make_activation(activation)
        self.rest = MLP(dims[0], dims[1:], out_dim, activation)

    def forward(self, x: Tensor, h: Tensor) -> Tensor:
        return self.rest(self.act(self.input(x) + self.context(h)))
