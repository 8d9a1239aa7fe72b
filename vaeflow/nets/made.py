r"""MADE: a masked autoencoder whose outputs are autoregressive in its inputs.

Output ``i`` depends on the inputs that come before ``i`` in a given order, and on a
context vector (here the encoder features h), never on input ``i`` itself or later ones:

.. math:: (a_1(z, h), ..., a_D(z, h)), \quad \partial a_i / \partial z_j = 0
    \text{ unless } \operatorname{deg}(j) < \operatorname{deg}(i).

Degrees follow Germain et al.: input ``order[k]`` has degree ``k + 1``; hidden units get
degrees cycling over ``0 .. D-1``; a hidden unit of degree ``m`` sees the inputs of degree
``<= m`` and an output of degree ``d`` sees hidden units of degree ``< d``. Units of
degree 0 see only the context, so that every output, the first in the order included,
depends on x (as the context inputs of Kingma et al. 2016 require).

Inverting such a map, or sampling from the distribution it defines, is sequential:
:func:`autoregressive_solve` solves ``x = g(x)`` for any ``g`` whose output ``i`` depends
only on the dimensions of ``x`` before ``i`` in some order, in ``D`` parallel passes. IAF's
inverse, MAF's sampling direction and the autoregressive posterior's sampling all use it.

References:
    | MADE: Masked Autoencoder for Distribution Estimation (Germain et al., 2015)
    | https://arxiv.org/abs/1502.03509
    | Improved Variational Inference with Inverse Autoregressive Flow (Kingma et al., 2016)
    | https://arxiv.org/abs/1606.04934
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaeflow.errors import ConfigError
from vaeflow.nets.mlp import check_widths, make_activation

__all__ = ["MaskedLinear", "MADE", "order_for_step", "autoregressive_solve"]


class MaskedLinear(nn.Linear):
    r"""A linear layer whose weight is multiplied by a fixed 0/1 mask ``[out, in]``."""

    def __init__(self, mask: Tensor, bias: bool = True) -> None:
        super().__init__(mask.shape[1], mask.shape[0], bias=bias)
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


def order_for_step(latent_dim: int, index: int, order: str = "reverse") -> Tensor:
    r"""The autoregressive order of the ``index``-th step of a stack.

    Arguments:
        latent_dim: D.
        index: position of the step in its stack.
        order: ``natural`` (always ``0..D-1``), ``reverse`` (natural and reversed in
            turn, as in Kingma et al. 2016) or ``random`` (a fixed permutation per step,
            seeded by its index).
    """
    natural = torch.arange(latent_dim)
    if order == "natural":
        return natural
    if order == "reverse":
        return natural if index % 2 == 0 else natural.flip(0)
    if order == "random":
        return torch.randperm(latent_dim, generator=torch.Generator().manual_seed(1000 + index))
    raise ConfigError(f"posterior.order={order!r}: use natural, reverse or random")


class MADE(nn.Module):
    r"""An autoregressive network with context: ``(z [..., D], h [B, F]) -> k tensors [..., D]``.

    ``z`` may carry leading sample dimensions ``[n, B, D]``; the context ``h [B, F]``
    broadcasts over them and is projected once per example.

    Arguments:
        latent_dim: D.
        context_dim: F, the size of the context (0 for none).
        hidden_dims: widths of the hidden layers (at least one).
        n_outputs: k, the number of outputs per input dimension.
        order: a permutation of ``0..D-1``: the autoregressive order.
        activation: name of the activation.
    """

    def __init__(
        self,
        latent_dim: int,
        context_dim: int,
        hidden_dims: Sequence[int],
        n_outputs: int,
        order: Tensor,
        activation: str = "elu",
    ) -> None:
        super().__init__()
        dims = check_widths(hidden_dims, "posterior")
        if not dims:
            raise ConfigError("posterior.hidden_dims is empty: MADE needs at least one hidden layer")
        order = torch.as_tensor(order)
        self.latent_dim, self.n_outputs = latent_dim, n_outputs
        self.register_buffer("order", order)

        degree_in = torch.empty(latent_dim, dtype=torch.long)
        degree_in[order] = torch.arange(1, latent_dim + 1)
        degrees = [degree_in] + [torch.arange(w) % latent_dim for w in dims]
        degree_out = degree_in.repeat(n_outputs)

        self.input = MaskedLinear(degrees[1][:, None] >= degrees[0][None, :])
        self.context = nn.Linear(context_dim, dims[0], bias=False) if context_dim else None
        self.hidden = nn.ModuleList(
            MaskedLinear(b[:, None] >= a[None, :]) for a, b in zip(degrees[1:-1], degrees[2:])
        )
        self.output = MaskedLinear(degree_out[:, None] > degrees[-1][None, :])
        self.act = make_activation(activation)

    def project_context(self, h: Tensor | None) -> Tensor | None:
        r"""The context's contribution to the first hidden layer, ``V h [B, H]`` (``None``
        without a context). Sequential solvers compute it once and pass it to every pass."""
        return None if self.context is None else self.context(h)

    def forward(
        self, z: Tensor, h: Tensor | None = None, *, context: Tensor | None = None
    ) -> tuple[Tensor, ...]:
        r"""The ``n_outputs`` tensors ``[..., D]`` at ``z``, given the features ``h`` or
        their projection ``context`` (from :meth:`project_context`)."""
        a = self.input(z)
        if self.context is not None:
            a = a + (self.context(h) if context is None else context)
        a = self.act(a)
        for layer in self.hidden:
            a = self.act(layer(a))
        out = self.output(a)
        return out.unflatten(-1, (self.n_outputs, self.latent_dim)).unbind(-2)


def autoregressive_solve(
    update: Callable[[Tensor], tuple[Tensor, Tensor]], like: Tensor, passes: int
) -> tuple[Tensor, Tensor]:
    r"""Solves ``x = g(x)`` for an autoregressive ``g``, in ``passes`` parallel passes.

    Output ``i`` of ``g`` may depend only on the dimensions of ``x`` that come before
    ``i`` in some order (a MADE's). Starting from ``x = 0``, after pass ``k`` the first
    ``k`` dimensions in that order are exact, so ``passes = D`` gives the exact solution.
    Since each exact dimension stays the same function of the inputs in every later pass,
    autograd through the passes gives the exact derivatives of the solution too.

    Arguments:
        update: ``x -> (g(x), aux)``, with ``aux`` any autoregressive by-product of the
            pass (the log-scales, say). The last pass computes it at the exact solution,
            so no extra network evaluation is needed.
        like: a tensor of the shape, dtype and device of ``x`` (``[..., D]``).
        passes: the number of passes, ``D`` for an exact solution.

    Returns:
        The solution ``x`` and the ``aux`` of the last pass.

    Example:
        >>> import torch
        >>> y = torch.tensor([1.0, 2.0, 3.0])
        >>> def update(x):  # x_i = y_i + 0.5 * x_{i-1}
        ...     return y + 0.5 * torch.cat([x.new_zeros(1), x[:-1]]), x.new_zeros(())
        >>> autoregressive_solve(update, y, 3)[0]
        tensor([1.0000, 2.5000, 4.2500])
    """
    if passes < 1:
        raise ValueError(f"autoregressive_solve needs at least one pass, got {passes}")
    x = torch.zeros_like(like)
    for _ in range(passes):
        x, aux = update(x)
    return x, aux
