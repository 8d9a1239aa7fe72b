r"""Conditioners times a univariate transform: the autoregressive and coupling maps of every
autoregressive and coupling family.

A conditioner computes the parameters ``p_i`` of the univariate transform of dimension
``i`` (:mod:`vaeflow.posteriors.transforms`) from the other dimensions and the encoder
features h:

- :class:`AutoregressiveTransform`: a MADE, ``p_i`` a function of the dimensions before
  ``i`` in an order (Germain et al., 2015). Whether it reads the input of the map (IAF:
  parallel forward, sequential inverse) or its output (MAF and the autoregressive
  posterior: sequential forward, parallel inverse) is the family's choice of methods.
- :class:`CouplingStep`: a network of the kept half, which passes unchanged, for the
  other half (Dinh et al., 2017): both directions are one pass.

A new elementwise bijection is one :class:`~vaeflow.posteriors.transforms.Univariate`;
every conditioner takes it.

References:
    | MADE (Germain et al., 2015) https://arxiv.org/abs/1502.03509
    | Density estimation using Real NVP (Dinh et al., 2017) https://arxiv.org/abs/1605.08803
    | Neural Spline Flows (Durkan et al., 2019) https://arxiv.org/abs/1906.04032
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from vaeflow.errors import ConfigError
from vaeflow.nets.conditioner import ContextMLP
from vaeflow.nets.made import MADE
from vaeflow.posteriors.flows.base import FlowStep
from vaeflow.posteriors.transforms import Univariate

__all__ = ["AutoregressiveTransform", "CouplingStep", "coupling_split", "MASKS"]

MASKS = ("alternate", "half", "random")


class AutoregressiveTransform(nn.Module):
    r"""``y_i = tau(v_i; p_i)`` with ``p = MADE(w, h)``, where ``w`` is the input ``v`` of the
    map (IAF's direction) or its output ``y`` (MAF's).

    Arguments:
        latent_dim: D.
        feature_dim: F, the size of the context h.
        hidden_dims: widths of the MADE's hidden layers.
        order: a permutation of ``0..D-1``.
        univariate: the transform ``tau``; the MADE has one output per parameter.
        activation: the MADE's activation.
        skip: add a linear map of h to the MADE's parameters, so that the first dimensions
            in the order see all of h (in a MADE they read only the hidden units of degree
            0, 1/D of each layer).
    """

    def __init__(
        self,
        latent_dim: int,
        feature_dim: int,
        hidden_dims: Sequence[int],
        order: Tensor,
        univariate: Univariate,
        activation: str = "elu",
        skip: bool = False,
    ) -> None:
        super().__init__()
        self.latent_dim, self.univariate = latent_dim, univariate
        self.made = MADE(latent_dim, feature_dim, hidden_dims, univariate.n_params, order, activation)
        self.skip = nn.Linear(feature_dim, univariate.n_params * latent_dim) if skip else None

    @property
    def order(self) -> Tensor:
        return self.made.order

    def _extra(self, h: Tensor) -> tuple[Tensor, ...] | None:
        return None if self.skip is None else self.skip(h).chunk(self.univariate.n_params, -1)

    def params(self, w: Tensor, h: Tensor) -> tuple[Tensor, ...]:
        r"""The transform's parameters ``[..., D]`` each, with ``p_i`` a function of ``w_<i``."""
        outs, extra = self.made(w, h), self._extra(h)
        return outs if extra is None else tuple(o + e for o, e in zip(outs, extra))

    def apply(self, x: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        r"""``y = tau(x; p(x))`` in one pass (IAF forward), and ``sum log |dy/dx|``."""
        y, log_det = self.univariate.forward(x, self.params(x, h))
        return y, log_det.sum(-1)

    def invert(self, y: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        r"""``x = tau^-1(y; p(y))`` in one pass (MAF inverse), and ``sum log |dy/dx|``."""
        x, log_det = self.univariate.inverse(y, self.params(y, h))
        return x, log_det.sum(-1)

    def solve_forward(self, x: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        r"""``y`` with ``y = tau(x; p(y))``, one dimension at a time (MAF forward, sampling
        of the autoregressive posterior), and ``sum log |dy/dx|``."""
        return self._solve(x, h, inverse=False)

    def solve_inverse(self, y: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        r"""``x`` with ``y = tau(x; p(x))``, one dimension at a time (IAF inverse), and
        ``sum log |dy/dx|`` at that x."""
        return self._solve(y, h, inverse=True)

    def _solve(self, v: Tensor, h: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        extra, fn = self._extra(h), (self.univariate.inverse if inverse else self.univariate.forward)

        def solve_dim(outs: tuple[Tensor, ...], d: int) -> Tensor:
            p = outs if extra is None else tuple(o + e[..., d] for o, e in zip(outs, extra))
            return fn(v[..., d], p)[0]

        w, outs = self.made.solve(solve_dim, h, v)  # the MADE at its input w, the solution
        p = outs if extra is None else tuple(o + e for o, e in zip(outs, extra))
        return w, self.univariate.log_abs_det(w if inverse else v, p).sum(-1)


def coupling_split(
    latent_dim: int, index: int, mask: str = "alternate", family: str = "realnvp"
) -> tuple[Tensor, Tensor]:
    r"""The kept and the changed dimensions of the ``index``-th coupling step.

    Example:
        >>> coupling_split(5, 0, "alternate")
        (tensor([0, 2, 4]), tensor([1, 3]))
        >>> coupling_split(5, 1, "half")
        (tensor([3, 4]), tensor([0, 1, 2]))
    """
    if latent_dim < 2:
        raise ConfigError(f"posterior={family} needs latent_dim >= 2 to split z, got {latent_dim}")
    dims = torch.arange(latent_dim)
    if mask == "alternate":
        first, second = dims[0::2], dims[1::2]
    elif mask == "half":
        first, second = dims[: (latent_dim + 1) // 2], dims[(latent_dim + 1) // 2 :]
    elif mask == "random":
        perm = torch.randperm(latent_dim, generator=torch.Generator().manual_seed(1000 + index))
        return perm[: latent_dim // 2].sort().values, perm[latent_dim // 2 :].sort().values
    else:
        raise ConfigError(f"posterior.mask={mask!r}: choose one of {', '.join(MASKS)}")
    return (first, second) if index % 2 == 0 else (second, first)


class CouplingStep(FlowStep):
    r"""A coupling step: the kept dimensions pass unchanged and set, through a network that
    also reads h, the parameters of the univariate transform of the changed ones.

    The network's output is ``n_params`` chunks of the changed size; ``layout[j]`` is the
    chunk that holds the transform's parameter ``j``.

    Arguments:
        latent_dim: D >= 2.
        feature_dim: F, the size of the context h.
        index: position in the stack (sets the split).
        univariate: the transform of the changed dimensions.
        hidden_dims: widths of the network's hidden layers.
        activation: the network's activation.
        mask: ``alternate``, ``half`` or ``random`` (see :func:`coupling_split`).
        layout: the chunk of each parameter (default: in order).
        family: the ``posterior=`` name, for messages.
    """

    def __init__(
        self,
        latent_dim: int,
        feature_dim: int,
        index: int,
        univariate: Univariate,
        hidden_dims: Sequence[int],
        activation: str = "elu",
        mask: str = "alternate",
        layout: Sequence[int] | None = None,
        family: str = "realnvp",
    ) -> None:
        super().__init__(latent_dim, feature_dim, index)
        kept, changed = coupling_split(latent_dim, index, mask, family)
        perm = torch.cat([kept, changed])
        self.register_buffer("perm", perm, persistent=False)
        self.register_buffer("unperm", torch.argsort(perm), persistent=False)
        self.n_kept, self.univariate = kept.numel(), univariate
        self.layout = tuple(range(univariate.n_params)) if layout is None else tuple(layout)
        self.net = ContextMLP(
            kept.numel(), feature_dim, hidden_dims, univariate.n_params * changed.numel(), activation
        )

    def _split(self, z: Tensor, h: Tensor) -> tuple[Tensor, Tensor, tuple[Tensor, ...]]:
        kept, changed = z[..., self.perm].split([self.n_kept, self.latent_dim - self.n_kept], -1)
        chunks = self.net(kept, h).chunk(self.univariate.n_params, -1)
        return kept, changed, tuple(chunks[j] for j in self.layout)

    def forward(self, z: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        kept, changed, p = self._split(z, h)
        y, log_det = self.univariate.forward(changed, p)
        return torch.cat([kept, y], -1)[..., self.unperm], log_det.sum(-1)

    def inverse(self, y: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        kept, changed, p = self._split(y, h)
        z, log_det = self.univariate.inverse(changed, p)
        return torch.cat([kept, z], -1)[..., self.unperm], log_det.sum(-1)
