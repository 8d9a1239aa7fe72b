r"""Networks: MLP and gated convolutional encoders and decoders, MADE, and the
encoder/decoder registries."""

from vaeflow.nets.gated_conv import GatedConvDecoder, GatedConvEncoder
from vaeflow.nets.made import MADE, MaskedLinear, order_for_step
from vaeflow.nets.mlp import MLP, MLPDecoder, MLPEncoder, make_activation
from vaeflow.nets.resnet import ResidualBlock, ResNetDecoder, ResNetEncoder
from vaeflow.registry import Registry

__all__ = [
    "DECODERS",
    "ENCODERS",
    "GatedConvDecoder",
    "GatedConvEncoder",
    "MADE",
    "MLP",
    "MLPDecoder",
    "MLPEncoder",
    "MaskedLinear",
    "ResNetDecoder",
    "ResNetEncoder",
    "ResidualBlock",
    "make_activation",
    "order_for_step",
]

ENCODERS = Registry("encoder")
DECODERS = Registry("decoder")
ENCODERS.register("mlp")(MLPEncoder)
DECODERS.register("mlp")(MLPDecoder)
ENCODERS.register("gated_conv")(GatedConvEncoder)
DECODERS.register("gated_conv")(GatedConvDecoder)
ENCODERS.register("resnet")(ResNetEncoder)
DECODERS.register("resnet")(ResNetDecoder)
