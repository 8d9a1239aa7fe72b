r"""The gated convolutional encoder and decoder of van den Berg et al. (2018).

A gated convolution multiplies a linear convolution by a sigmoid gate computed by a
second convolution of the same input (Dauphin et al., 2017):

.. math:: \operatorname{GatedConv}(x) = (W_h * x + b_h) \odot \sigma(W_g * x + b_g).

The stacks below are those of the Sylvester flows paper for binary 28x28 images, the
architecture its MNIST, Fashion-MNIST and Omniglot results (and many later flow
posteriors papers) use: six gated convolutions down to a ``1x1`` map of 256 features in
the encoder, six gated transposed convolutions up from ``z`` seen as a ``D x 1 x 1`` map in
the decoder, and a ``1x1`` convolution to the likelihood's parameters of each pixel.

References:
    | Sylvester Normalizing Flows for Variational Inference (van den Berg et al., 2018)
    | https://arxiv.org/abs/1803.05649

    | Language Modeling with Gated Convolutional Networks (Dauphin et al., 2017)
    | https://arxiv.org/abs/1612.08083
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from vaeflow.errors import ConfigError
from vaeflow.nets.gated import Gated

__all__ = ["GatedConv2d", "GatedConvTranspose2d", "GatedConvEncoder", "GatedConvDecoder"]

#: Image sizes ``(H, W)`` the layer stacks fit, and the kernel of the layer between the
#: ``H/4 x W/4`` maps and the ``1x1`` map (the reference code's ``last_kernel_size``).
LAST_KERNEL: dict[tuple[int, int], tuple[int, int]] = {(28, 28): (7, 7), (28, 20): (7, 5)}


def GatedConv2d(*args: Any, **kwargs: Any) -> Gated:
    r"""A gated :class:`torch.nn.Conv2d` (:class:`Gated`), same arguments."""
    return Gated(nn.Conv2d, *args, **kwargs)


def GatedConvTranspose2d(*args: Any, **kwargs: Any) -> Gated:
    r"""A gated :class:`torch.nn.ConvTranspose2d` (:class:`Gated`), same arguments."""
    return Gated(nn.ConvTranspose2d, *args, **kwargs)


def _last_kernel(shape: Sequence[int], group: str) -> tuple[int, int]:
    r"""The last kernel for images of ``shape`` ``(C, H, W)``, or a :class:`ConfigError`."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or shape[1:] not in LAST_KERNEL:
        sizes = " or ".join(f"{h}x{w}" for h, w in LAST_KERNEL)
        raise ConfigError(
            f"{group}=gated_conv needs {sizes} images (mnist, fashion_mnist, omniglot, binarized_mnist), "
            f"not {'x'.join(map(str, shape))}; encoder=mlp and decoder=mlp take any image size"
        )
    return LAST_KERNEL[shape[1:]]


def _check_channels(channels: Sequence[int], count: int, where: str) -> list[int]:
    r"""``channels`` as ``count`` positive ints, or a :class:`ConfigError` naming ``where``."""
    widths = [int(c) for c in channels]
    if len(widths) != count or any(c < 1 for c in widths):
        raise ConfigError(f"{where}={widths}: give {count} channel counts, each >= 1")
    return widths


class GatedConvEncoder(nn.Module):
    r"""``x -> h``: the gated convolutional encoder of van den Berg et al. (2018).

    Six gated convolutions (kernel, stride, padding; no other non-linearity):

    ``5,1,2 -> 5,2,2 -> 5,1,2 -> 5,2,2 -> 5,1,2`` take ``C x 28 x 28`` images to
    ``64 x 7 x 7`` maps (default widths 32, 32, 64, 64, 64), and a last ``7x7`` gated
    convolution without padding takes these to a ``1x1`` map of ``feature_dim`` channels.
    The features h are that map, flattened: ``[..., feature_dim]`` (256 in the paper), the
    gated output itself; every posterior reads h through its own linear heads.

    Arguments:
        input_shape: image shape ``(C, H, W)``; ``H x W`` must be 28x28 (or 28x20, the
            Frey faces size of the reference code, last kernel ``7x5``).
        channels: widths of the first five layers.
        feature_dim: channels of the last layer, the size of h.

    References:
        | Sylvester Normalizing Flows for Variational Inference (van den Berg et al., 2018)
        | https://arxiv.org/abs/1803.05649

    Example:
        >>> import torch
        >>> encoder = GatedConvEncoder((1, 28, 28))
        >>> encoder(torch.zeros(3, 1, 28, 28)).shape
        torch.Size([3, 256])
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        channels: Sequence[int] = (32, 32, 64, 64, 64),
        feature_dim: int = 256,
    ) -> None:
        super().__init__()
        last = _last_kernel(input_shape, "encoder")
        c1, c2, c3, c4, c5 = _check_channels(channels, 5, "encoder.channels")
        if int(feature_dim) < 1:
            raise ConfigError(f"encoder.feature_dim={feature_dim}: the features need at least 1 channel")
        self.input_shape = tuple(int(s) for s in input_shape)
        self.feature_dim = int(feature_dim)
        self.net = nn.Sequential(
            GatedConv2d(self.input_shape[0], c1, 5, 1, 2),
            GatedConv2d(c1, c2, 5, 2, 2),
            GatedConv2d(c2, c3, 5, 1, 2),
            GatedConv2d(c3, c4, 5, 2, 2),
            GatedConv2d(c4, c5, 5, 1, 2),
            GatedConv2d(c5, self.feature_dim, last, 1, 0),
        )

    def forward(self, x: Tensor) -> Tensor:
        r"""``x [..., C, H, W]`` -> ``h [..., feature_dim]``."""
        lead = x.shape[:-3]
        h = self.net(x.reshape(-1, *self.input_shape))
        return h.reshape(*lead, self.feature_dim)


class GatedConvDecoder(nn.Module):
    r"""``z -> likelihood parameters``: the gated convolutional decoder of van den Berg et al. (2018).

    z is read as a ``D x 1 x 1`` map; six gated transposed convolutions (kernel, stride,
    padding, output padding) ``7,1,0 -> 5,1,2 -> 5,2,2,1 -> 5,1,2 -> 5,2,2,1 -> 5,1,2``
    take it to ``7x7``, ``14x14`` and ``28x28`` maps (default widths 64, 64, 32, 32, 32,
    32), and a ``1x1`` convolution gives the likelihood's ``P`` parameters per pixel (one
    Bernoulli logit in the reference, which applies a sigmoid to it for the mean).

    Arguments:
        latent_dim: size D of z.
        output_shape: ``(P, H, W)``, the likelihood's parameters per pixel and the image size; ``H x W`` as for the encoder.
        channels: widths of the six gated layers.

    References:
        | Sylvester Normalizing Flows for Variational Inference (van den Berg et al., 2018)
        | https://arxiv.org/abs/1803.05649

    Example:
        >>> import torch
        >>> decoder = GatedConvDecoder(64, (1, 28, 28))
        >>> decoder(torch.zeros(5, 3, 64)).shape
        torch.Size([5, 3, 784])
    """

    def __init__(
        self,
        latent_dim: int,
        output_shape: Sequence[int],
        channels: Sequence[int] = (64, 64, 32, 32, 32, 32),
    ) -> None:
        super().__init__()
        first = _last_kernel(output_shape, "decoder")
        c1, c2, c3, c4, c5, c6 = _check_channels(channels, 6, "decoder.channels")
        self.latent_dim = int(latent_dim)
        self.output_shape = tuple(int(s) for s in output_shape)
        self.net = nn.Sequential(
            GatedConvTranspose2d(self.latent_dim, c1, first, 1, 0),
            GatedConvTranspose2d(c1, c2, 5, 1, 2),
            GatedConvTranspose2d(c2, c3, 5, 2, 2, 1),
            GatedConvTranspose2d(c3, c4, 5, 1, 2),
            GatedConvTranspose2d(c4, c5, 5, 2, 2, 1),
            GatedConvTranspose2d(c5, c6, 5, 1, 2),
            nn.Conv2d(c6, self.output_shape[0], 1),
        )

    def forward(self, z: Tensor) -> Tensor:
        r"""``z [..., D]`` -> ``parameters [..., P*H*W]`` (pixels in ``C, H, W`` order, as the
        likelihood flattens images)."""
        lead = z.shape[:-1]
        logits = self.net(z.reshape(-1, self.latent_dim, 1, 1))
        return logits.reshape(*lead, math.prod(self.output_shape))
