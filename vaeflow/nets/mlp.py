r"""Multilayer perceptrons, and the MLP encoder and decoder built from them.

``activation: gated`` makes every hidden layer a gated linear layer, ``(W_h x + b_h) *
sigmoid(W_g x + b_g)`` (:class:`~vaeflow.nets.gated.Gated`), the "GatedDense" layers of the
MLP VAEs of Tomczak & Welling (2018, VampPrior), the setting of the ~88.5-nat mean-field
figure on static binarized MNIST; their code uses them in the encoder and the decoder.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from vaeflow.errors import ConfigError
from vaeflow.nets.gated import Gated

__all__ = ["ACTIVATIONS", "GATED", "make_activation", "MLP", "MLPEncoder", "MLPDecoder"]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "leaky_relu": nn.LeakyReLU,
    "softplus": nn.Softplus,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
}


#: the ``activation`` of an MLP whose hidden layers are gated linear layers
GATED = "gated"


def make_activation(name: str) -> nn.Module:
    r"""The activation module called ``name`` (a key of :data:`ACTIVATIONS`)."""
    if name not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {name!r}: choose one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def check_widths(hidden_dims: Sequence[int], where: str) -> list[int]:
    r"""``hidden_dims`` as a list of ints, or a :class:`ConfigError` naming ``where``."""
    dims = [int(d) for d in hidden_dims]
    if any(d < 1 for d in dims):
        raise ConfigError(f"{where}.hidden_dims={dims}: every width must be >= 1")
    return dims


class MLP(nn.Sequential):
    r"""``Linear -> act -> ... -> Linear`` (no activation after the last layer unless
    ``activate_output``); with ``activation="gated"``, ``Gated(Linear) -> ... -> Linear``.

    Arguments:
        in_dim: input size.
        hidden_dims: widths of the hidden layers.
        out_dim: output size.
        activation: name of the activation between layers, or ``gated``.
        activate_output: the last layer is activated (or gated) too.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dims: Sequence[int],
        out_dim: int,
        activation: str = "relu",
        activate_output: bool = False,
    ) -> None:
        gated = activation == GATED
        if not gated:
            make_activation(activation)  # an unknown name fails before any layer is built
        dims = [in_dim, *hidden_dims, out_dim]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            activated = activate_output or i < len(dims) - 2
            if gated and activated:
                layers.append(Gated(nn.Linear, a, b))
            else:
                layers.append(nn.Linear(a, b))
                if activated:
                    layers.append(make_activation(activation))
        super().__init__(*layers)


class MLPEncoder(nn.Module):
    r"""``x -> h``: flattens an image and maps it to features of size ``hidden_dims[-1]``.

    The features pass through the activation, so that each posterior's own heads read
    non-linear features of x.

    Arguments:
        input_shape: image shape ``(C, H, W)``.
        hidden_dims: widths of the layers; the last is ``feature_dim``.
        activation: name of the activation, or ``gated`` (gated linear layers).
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        hidden_dims: Sequence[int] = (300, 300),
        activation: str = "relu",
    ) -> None:
        super().__init__()
        dims = check_widths(hidden_dims, "encoder")
        if not dims:
            raise ConfigError("encoder.hidden_dims must name at least one layer")
        self.feature_dim = dims[-1]
        self.net = nn.Sequential(
            nn.Flatten(-len(input_shape)),
            MLP(math.prod(input_shape), dims[:-1], dims[-1], activation, activate_output=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class MLPDecoder(nn.Module):
    r"""``z -> parameters``: maps latents ``[..., D]`` to likelihood parameters ``[..., P*H*W]``.

    Arguments:
        latent_dim: size D of z.
        output_shape: ``(P, H, W)``, the likelihood's parameters per pixel and the image size.
        hidden_dims: widths of the hidden layers.
        activation: name of the activation.
    """

    def __init__(
        self,
        latent_dim: int,
        output_shape: Sequence[int],
        hidden_dims: Sequence[int] = (300, 300),
        activation: str = "relu",
    ) -> None:
        super().__init__()
        dims = check_widths(hidden_dims, "decoder")
        self.output_shape = tuple(output_shape)
        self.net = MLP(latent_dim, dims, math.prod(output_shape), activation)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)
