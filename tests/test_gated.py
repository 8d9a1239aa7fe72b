"""The gated convolutional encoder and decoder of van den Berg et al. (2018)."""

from __future__ import annotations

import pytest
import torch

from vaeflow.data.base import DataSplits, Split
from vaeflow.errors import ConfigError
from vaeflow.model import build_model
from vaeflow.nets import DECODERS, ENCODERS, GatedConvDecoder, GatedConvEncoder
from vaeflow.training import Trainer

MNIST = (1, 28, 28)
FAST = ["trainer.progress=plain", "trainer.images=0", "trainer.threads=1"]


def randn(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.float64)


def test_the_layer_stack_of_the_paper():
    encoder, decoder = GatedConvEncoder(MNIST), GatedConvDecoder(64, MNIST)
    convs = [m.h for m in encoder.net] + [m.h for m in decoder.net[:-1]] + [decoder.net[-1]]
    layers = [(c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0], c.padding[0]) for c in convs]
    assert layers == [
        (1, 32, 5, 1, 2), (32, 32, 5, 2, 2), (32, 64, 5, 1, 2), (64, 64, 5, 2, 2), (64, 64, 5, 1, 2),
        (64, 256, 7, 1, 0),
        (64, 64, 7, 1, 0), (64, 64, 5, 1, 2), (64, 32, 5, 2, 2), (32, 32, 5, 1, 2), (32, 32, 5, 2, 2),
        (32, 32, 5, 1, 2),
        (32, 1, 1, 1, 0),
    ]  # fmt: skip
    assert [m.h.output_padding[0] for m in decoder.net[:-1]] == [0, 0, 1, 0, 1, 0]
    assert all(m.g.weight.shape == m.h.weight.shape for m in [*encoder.net, *decoder.net[:-1]])
    assert encoder.feature_dim == 256


@pytest.mark.parametrize("shape", [MNIST, (3, 28, 28), (1, 28, 20)])
def test_shapes(shape: tuple[int, int, int]):
    encoder, decoder = GatedConvEncoder(shape).double(), GatedConvDecoder(8, shape).double()
    assert encoder(randn(4, *shape)).shape == (4, 256)
    assert encoder(randn(2, 3, *shape)).shape == (2, 3, 256)
    pixels = shape[0] * shape[1] * shape[2]
    assert decoder(randn(5, 3, 8)).shape == (5, 3, pixels)
    assert decoder(randn(3, 8)).shape == (3, pixels)


def test_the_decoder_does_not_mix_samples_or_examples():
    decoder = GatedConvDecoder(8, MNIST).double()
    z = randn(3, 4, 8)
    logits = decoder(z)
    for i in range(3):
        torch.testing.assert_close(logits[i], decoder(z[i]))
        for b in range(4):
            torch.testing.assert_close(logits[i, b], decoder(z[i, b : b + 1])[0])


def test_every_parameter_gets_a_gradient():
    encoder, decoder = GatedConvEncoder(MNIST).double(), GatedConvDecoder(8, MNIST).double()
    x = torch.bernoulli(torch.full((3, *MNIST), 0.5, dtype=torch.float64)).requires_grad_()
    z = randn(2, 3, 8).requires_grad_()
    ((encoder(x) * randn(3, 256)).sum() + (decoder(z) * randn(2, 3, 784)).sum()).backward()
    for net in (encoder, decoder):
        for name, p in net.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{name} gets no gradient"
    assert x.grad.abs().sum() > 0 and z.grad.abs().sum() > 0


@pytest.mark.parametrize("posterior", ["mean_field", "iaf"])
def test_a_vae_trains_one_step_on_28x28_images(compose_train, tmp_path, posterior: str):
    cfg = compose_train("encoder=gated_conv", "decoder=gated_conv", f"posterior={posterior}",
                        "model.latent_dim=8", "trainer.batch_size=4", *FAST)  # fmt: skip
    generator = torch.Generator().manual_seed(0)
    images = [torch.bernoulli(torch.full((n, *MNIST), 0.3), generator=generator) for n in (8, 4, 4)]
    data = DataSplits("random", Split(images[0]), Split(images[1]), Split(images[2]))
    trainer = Trainer(cfg, tmp_path, data=data)
    assert isinstance(trainer.model.encoder, GatedConvEncoder)
    assert isinstance(trainer.model.decoder, GatedConvDecoder)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    result = trainer.step_fn(images[0][:4], beta=1.0)
    assert bool(result.taken) and all(torch.isfinite(v) for v in result.stats.values())
    changed = [not torch.equal(a, p) for a, p in zip(before, trainer.model.parameters(), strict=True)]
    assert all(changed)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["encoder=gated_conv", "decoder=gated_conv"], "encoder=gated_conv needs 28x28 or 28x20 images"),
        (["decoder=gated_conv"], "decoder=gated_conv needs 28x28 or 28x20 images"),
    ],
)
def test_the_digits_shape_is_a_config_error(compose_train, overrides: list[str], message: str):
    cfg = compose_train(*overrides)
    with pytest.raises(ConfigError, match=rf"^{message} .*not 1x8x8; encoder=mlp and decoder=mlp take any"):
        build_model(cfg, (1, 8, 8))


@pytest.mark.parametrize(
    ("registry", "options", "match"),
    [
        (ENCODERS, {"channels": [32, 32, 64]}, r"encoder\.channels=\[32, 32, 64\]: give 5"),
        (ENCODERS, {"feature_dim": 0}, r"encoder\.feature_dim=0"),
        (DECODERS, {"channels": [64, 0, 32, 32, 32, 32]}, r"decoder\.channels=.*each >= 1"),
    ],
)
def test_bad_options_are_config_errors(registry, options: dict, match: str):
    fixed = {"input_shape": MNIST} if registry is ENCODERS else {"latent_dim": 8, "output_shape": MNIST}
    with pytest.raises(ConfigError, match=match):
        registry.build({"name": "gated_conv", **options}, **fixed)


def test_gated_mlp_is_the_vampprior_papers_gated_dense_stack():
    # encoder.activation=gated: x -> Gated(784, 300) -> Gated(300, 300) = h, no other
    # activation; decoder: z -> Gated(40, 300) -> Gated(300, 300) -> Linear(300, 784).
    torch.manual_seed(0)
    encoder = ENCODERS.build(
        {"name": "mlp", "hidden_dims": [300, 300], "activation": "gated"}, input_shape=(1, 28, 28)
    )
    decoder = DECODERS.build({"name": "mlp", "hidden_dims": [300, 300], "activation": "gated"}, latent_dim=40,
                             output_shape=(1, 28, 28))  # fmt: skip
    x = torch.rand(5, 1, 28, 28)
    h = x.flatten(1)
    for layer in encoder.net[1]:
        h = layer.h(h) * torch.sigmoid(layer.g(h))
    torch.testing.assert_close(encoder(x), h)
    shapes = [tuple(p.shape) for p in decoder.parameters() if p.dim() == 2]
    assert shapes == [(300, 40), (300, 40), (300, 300), (300, 300), (784, 300)]
    assert decoder(torch.randn(2, 5, 40)).shape == (2, 5, 784)


def test_relu_mlp_keeps_its_parameter_names():
    # checkpoints of MLP runs written before gated layers existed still load
    encoder = ENCODERS.build(
        {"name": "mlp", "hidden_dims": [300, 300], "activation": "relu"}, input_shape=(1, 28, 28)
    )
    assert list(encoder.state_dict()) == ["net.1.0.weight", "net.1.0.bias", "net.1.2.weight", "net.1.2.bias"]
    with pytest.raises(ConfigError, match="unknown activation 'swish'"):
        ENCODERS.build({"name": "mlp", "hidden_dims": [8], "activation": "swish"}, input_shape=(1, 28, 28))
