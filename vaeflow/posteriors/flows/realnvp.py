r"""Affine coupling step of RealNVP (Dinh et al., 2017), conditioned on the encoder features.

The dimensions are split into a kept part ``a`` and a changed part ``b``:

.. math:: z'_a = z_a, \quad z'_b = z_b \odot \exp(s(z_a, h)) + t(z_a, h),
    \quad s = c \tanh(s' / c),

.. math:: \log |\det \partial z' / \partial z| = \sum_j s_j(z_a, h).

The Jacobian is block-triangular with diagonal ``exp(s) > 0``, so every step is invertible
in closed form, ``z_b = (z'_b - t(z'_a, h)) \odot \exp(-s(z'_a, h))``, whatever the
conditioner ``(s', t) = MLP(z_a, h)`` computes. The split alternates between steps so that
every dimension gets changed: ``alternate`` (even / odd dimensions, swapped at each step),
``half`` (first / second half, swapped at each step) or ``random`` (a fixed random half
per step, seeded by its index).

References:
    | Density Estimation using Real NVP (Dinh et al., 2017)
    | https://arxiv.org/abs/1605.08803
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from vaeflow.errors import ConfigError
from vaeflow.nets.conditioner import ContextMLP, soft_clamp
from vaeflow.posteriors.flows.base import FlowStep, register_flow

__all__ = ["RealNVPStep", "coupling_split"]

MASKS = ("alternate", "half", "random")


def coupling_split(latent_dim: int, index: int, mask: str = "alternate") -> tuple[Tensor, Tensor]:
    r"""The kept and the changed dimensions of the ``index``-th coupling step.

    Example:
        >>> coupling_split(5, 0, "alternate")
        (tensor([0, 2, 4]), tensor([1, 3]))
        >>> coupling_split(5, 1, "half")
        (tensor([3, 4]), tensor([0, 1, 2]))
    """
    if latent_dim < 2:
        raise ConfigError(f"posterior=realnvp needs latent_dim >= 2 to split z, got {latent_dim}")
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


@register_flow("realnvp")
class RealNVPStep(FlowStep):
    r"""One affine coupling step whose conditioner reads the kept dimensions and h.

    Arguments:
        latent_dim: D >= 2.
        feature_dim: F, the size of the context h.
        index: position in the stack (sets the split).
        hidden_dims: widths of the conditioner's hidden layers.
        activation: the conditioner's activation.
        mask: ``alternate``, ``half`` or ``random`` (see :func:`coupling_split`).
        max_log_scale: bound of the soft-clamped log-scale ``s``.

    Example:
        >>> import torch
        >>> step = RealNVPStep(3, 4, hidden_dims=[8])
        >>> z, h = torch.randn(2, 5, 3), torch.randn(5, 4)
        >>> y, ladj = step(z, h)
        >>> torch.allclose(step.inverse(y, h)[0], z, atol=1e-6)
        True
    """

    def __init__(
        self,
        latent_dim: int,
        feature_dim: int,
        index: int = 0,
        hidden_dims: Sequence[int] = (320, 320),
        activation: str = "elu",
        mask: str = "alternate",
        max_log_scale: float = 6.0,
    ) -> None:
        super().__init__(latent_dim, feature_dim, index)
        if float(max_log_scale) <= 0:
            raise ConfigError(f"posterior.max_log_scale={max_log_scale}: must be > 0")
        kept, changed = coupling_split(latent_dim, index, mask)
        perm = torch.cat([kept, changed])
        self.register_buffer("perm", perm, persistent=False)
        self.register_buffer("unperm", torch.argsort(perm), persistent=False)
        self.n_kept, self.max_log_scale = kept.numel(), float(max_log_scale)
        self.net = ContextMLP(kept.numel(), feature_dim, hidden_dims, 2 * changed.numel(), activation)

    def _split(self, z: Tensor, h: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        kept, changed = z[..., self.perm].split([self.n_kept, self.latent_dim - self.n_kept], -1)
        s, t = self.net(kept, h).chunk(2, -1)
        return kept, changed, soft_clamp(s, self.max_log_scale), t

    def forward(self, z: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        kept, changed, s, t = self._split(z, h)
        out = torch.cat([kept, torch.addcmul(t, changed, s.exp())], -1)
        return out[..., self.unperm], s.sum(-1)

    def inverse(self, y: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        kept, changed, s, t = self._split(y, h)
        out = torch.cat([kept, (changed - t) * torch.exp(-s)], -1)
        return out[..., self.unperm], s.sum(-1)
