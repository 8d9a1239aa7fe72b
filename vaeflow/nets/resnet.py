r"""A small residual convolutional encoder and decoder, for 32x32 colour images (and any
``H x W`` with ``H`` and ``W`` divisible by 4), after the ResNet VAE of Kingma et al. (2016).

Every block is a pre-activation residual block (He et al., 2016) with ELU activations
(Clevert et al., 2016), as in the IAF paper's ResNet VAE:

.. math:: x_{l+1} = x_l + W_2 * \operatorname{ELU}(W_1 * \operatorname{ELU}(x_l) + b_1) + b_2,
    \qquad \operatorname{ELU}(a) = a \text{ if } a > 0 \text{ else } e^a - 1,

with ``W_1``, ``W_2`` 3x3 convolutions that keep the channels. ``W_2`` starts at
:data:`INIT_SCALE` (0.1) times PyTorch's default initialization and ``b_2`` at 0, so that
every block starts near the identity (``|x_{l+1} - x_l| ~ 0.02 |x_l|`` for unit-variance
inputs) while each weight still has a gradient at the first step (a zero ``W_2`` would
leave ``W_1`` without one until ``W_2`` moves). The IAF paper's convolutions use weight
normalization with a data-dependent initialization instead; ours are plain.

The encoder runs at three resolutions, ``H``, ``H/2`` and ``H/4`` (``width``, ``2 width``,
``2 width`` channels; stride-2 3x3 convolutions between them), then a 1x1 convolution to
``map_channels`` channels, and a linear layer to ``feature_dim`` features followed by the
activation. The decoder mirrors it: a linear layer from z to a ``map_channels`` map at
``H/4``, a 1x1 convolution to ``2 width`` channels, and nearest-neighbour upsampling
followed by a 3x3 convolution (no checkerboard pattern, unlike strided transposed
convolutions) up to ``H/2`` and ``H``, where a last 3x3 convolution gives the ``P``
likelihood parameters of each pixel location. Each transition convolution reads the
activated stream, so the nets stay non-linear even with ``blocks=0``.

Parameters with the defaults (``width=32``, ``blocks=1``, ``map_channels=8``,
``feature_dim=256``) for ``3x32x32`` images and 32 latents: encoder 354,376; decoder
240,806 with ``P=6`` (discretized logistic on colour), 247,742 with ``P=30`` (a mixture of
three logistics); in all 595,182 and 602,118.

References:
    | Improved Variational Inference with Inverse Autoregressive Flow (Kingma et al., 2016)
    | https://arxiv.org/abs/1606.04934

    | Identity Mappings in Deep Residual Networks (He et al., 2016)
    | https://arxiv.org/abs/1603.05027

    | Fast and Accurate Deep Network Learning by Exponential Linear Units (ELUs)
    | (Clevert et al., 2016) https://arxiv.org/abs/1511.07289
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from vaeflow.checks import integer
from vaeflow.errors import ConfigError
from vaeflow.nets.mlp import make_activation

__all__ = ["INIT_SCALE", "ResidualBlock", "ResNetEncoder", "ResNetDecoder"]

#: The factor on the default initialization of the second convolution of every block.
INIT_SCALE = 0.1


def _check_shape(shape: Sequence[int], group: str) -> tuple[int, int, int]:
    r"""``shape`` ``(C, H, W)`` as ints when ``H`` and ``W`` are multiples of 4, or a
    :class:`ConfigError` naming ``group``."""
    dims = tuple(int(s) for s in shape)
    if len(dims) != 3 or dims[1] < 4 or dims[2] < 4 or dims[1] % 4 or dims[2] % 4:
        raise ConfigError(
            f"{group}=resnet needs images whose height and width are multiples of 4 "
            f"(32x32, 28x28, 8x8, ...), not {'x'.join(map(str, dims))}; "
            f"encoder=mlp and decoder=mlp take any image size"
        )
    return dims  # type: ignore[return-value]


def _check_options(group: str, width: int, blocks: int, map_channels: int, activation: str) -> None:
    integer(f"{group}.width", width, 1)
    integer(f"{group}.blocks", blocks, 0)
    integer(f"{group}.map_channels", map_channels, 1)
    make_activation(activation)  # an unknown name is a ConfigError


class ResidualBlock(nn.Module):
    r"""``x + conv3x3(act(conv3x3(act(x))))``, channels and size kept; the second
    convolution starts at ``init_scale`` times its default initialization, its bias at 0.

    Arguments:
        channels: channels of the input and the output.
        activation: name of the activation (:func:`~vaeflow.nets.mlp.make_activation`).
        init_scale: factor on the second convolution's initial weight.

    Example:
        >>> import torch
        >>> block = ResidualBlock(8)
        >>> x = torch.randn(2, 8, 4, 4)
        >>> bool((block(x) - x).norm() < 0.05 * x.norm())  # near the identity at first
        True
    """

    def __init__(self, channels: int, activation: str = "elu", init_scale: float = INIT_SCALE) -> None:
        super().__init__()
        self.branch = nn.Sequential(
            make_activation(activation),
            nn.Conv2d(channels, channels, 3, 1, 1),
            make_activation(activation),
            nn.Conv2d(channels, channels, 3, 1, 1),
        )
        with torch.no_grad():
            self.branch[-1].weight.mul_(init_scale)
            self.branch[-1].bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        return x + self.branch(x)


def _blocks(channels: int, count: int, activation: str) -> list[nn.Module]:
    return [ResidualBlock(channels, activation) for _ in range(count)]


class ResNetEncoder(nn.Module):
    r"""``x -> h``: a residual convolutional encoder (after Kingma et al., 2016).

    ``conv3x3(C -> w)``, ``blocks`` residual blocks at ``H x W``; ``act``, stride-2
    ``conv3x3(w -> 2w)``, blocks at ``H/2``; ``act``, stride-2 ``conv3x3(2w -> 2w)``, blocks
    at ``H/4``; ``act``, ``conv1x1(2w -> map_channels)``, flatten, ``Linear`` to
    ``feature_dim``, ``act``. The features pass through the activation, so that each
    posterior's own heads read non-linear features of x (as :class:`MLPEncoder`).

    Shapes: ``x [..., C, H, W]`` -> ``h [..., feature_dim]``.

    Arguments:
        input_shape: image shape ``(C, H, W)``; ``H`` and ``W`` multiples of 4.
        width: channels ``w`` at full resolution (``2w`` at ``H/2`` and ``H/4``).
        blocks: residual blocks at each of the three resolutions.
        map_channels: channels of the ``H/4 x W/4`` map that the linear layer reads.
        feature_dim: size of h.
        activation: name of the activation (``elu`` as in the IAF paper).

    References:
        | Improved Variational Inference with Inverse Autoregressive Flow (Kingma et al., 2016)
        | https://arxiv.org/abs/1606.04934

    Example:
        >>> import torch
        >>> encoder = ResNetEncoder((3, 32, 32))
        >>> encoder(torch.zeros(2, 5, 3, 32, 32)).shape
        torch.Size([2, 5, 256])
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        width: int = 32,
        blocks: int = 1,
        map_channels: int = 8,
        feature_dim: int = 256,
        activation: str = "elu",
    ) -> None:
        super().__init__()
        channels, height, breadth = _check_shape(input_shape, "encoder")
        _check_options("encoder", width, blocks, map_channels, activation)
        self.feature_dim = integer("encoder.feature_dim", feature_dim, 1)
        self.input_shape = (channels, height, breadth)
        w, act = width, activation
        self.net = nn.Sequential(
            nn.Conv2d(channels, w, 3, 1, 1),
            *_blocks(w, blocks, act),
            make_activation(act),
            nn.Conv2d(w, 2 * w, 3, 2, 1),
            *_blocks(2 * w, blocks, act),
            make_activation(act),
            nn.Conv2d(2 * w, 2 * w, 3, 2, 1),
            *_blocks(2 * w, blocks, act),
            make_activation(act),
            nn.Conv2d(2 * w, map_channels, 1),
            nn.Flatten(),
            nn.Linear(map_channels * (height // 4) * (breadth // 4), self.feature_dim),
            make_activation(act),
        )

    def forward(self, x: Tensor) -> Tensor:
        r"""``x [..., C, H, W]`` -> ``h [..., feature_dim]``."""
        lead = x.shape[:-3]
        h = self.net(x.reshape(-1, *self.input_shape))
        return h.reshape(*lead, self.feature_dim)


class ResNetDecoder(nn.Module):
    r"""``z -> params``: a residual convolutional decoder (after Kingma et al., 2016).

    ``Linear(D -> map_channels * H/4 * W/4)``, ``act``, ``conv1x1(map_channels -> 2w)``,
    blocks at ``H/4``; ``act``, nearest x2, ``conv3x3(2w -> 2w)``, blocks at ``H/2``;
    ``act``, nearest x2, ``conv3x3(2w -> w)``, blocks at ``H``; ``act``,
    ``conv3x3(w -> P)``: the ``P`` likelihood parameters of every pixel location.

    Shapes: ``z [..., D]`` -> ``[..., P*H*W]``, a ``[P, H, W]`` map flattened (the order in
    which the likelihood reads it).

    Arguments:
        latent_dim: size D of z.
        output_shape: ``(P, H, W)``; ``H`` and ``W`` multiples of 4.
        width: channels ``w`` at full resolution (``2w`` at ``H/2`` and ``H/4``).
        blocks: residual blocks at each of the three resolutions.
        map_channels: channels of the ``H/4 x W/4`` map that the linear layer writes.
        activation: name of the activation (``elu`` as in the IAF paper).

    References:
        | Improved Variational Inference with Inverse Autoregressive Flow (Kingma et al., 2016)
        | https://arxiv.org/abs/1606.04934

    Example:
        >>> import torch
        >>> decoder = ResNetDecoder(32, (6, 32, 32))
        >>> decoder(torch.zeros(4, 2, 32)).shape
        torch.Size([4, 2, 6144])
    """

    def __init__(
        self,
        latent_dim: int,
        output_shape: Sequence[int],
        width: int = 32,
        blocks: int = 1,
        map_channels: int = 8,
        activation: str = "elu",
    ) -> None:
        super().__init__()
        params, height, breadth = _check_shape(output_shape, "decoder")
        _check_options("decoder", width, blocks, map_channels, activation)
        self.latent_dim = int(latent_dim)
        self.output_shape = (params, height, breadth)
        w, act = width, activation
        small = (map_channels, height // 4, breadth // 4)
        self.net = nn.Sequential(
            nn.Linear(self.latent_dim, math.prod(small)),
            make_activation(act),
            nn.Unflatten(1, small),
            nn.Conv2d(map_channels, 2 * w, 1),
            *_blocks(2 * w, blocks, act),
            make_activation(act),
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(2 * w, 2 * w, 3, 1, 1),
            *_blocks(2 * w, blocks, act),
            make_activation(act),
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(2 * w, w, 3, 1, 1),
            *_blocks(w, blocks, act),
            make_activation(act),
            nn.Conv2d(w, params, 3, 1, 1),
        )

    def forward(self, z: Tensor) -> Tensor:
        r"""``z [..., D]`` -> ``[..., P*H*W]`` (a ``[P, H, W]`` map, flattened)."""
        lead = z.shape[:-1]
        out = self.net(z.reshape(-1, self.latent_dim))
        return out.reshape(*lead, math.prod(self.output_shape))
