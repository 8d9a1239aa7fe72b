"""The residual convolutional encoder and decoder (after Kingma et al., 2016, IAF)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vaeflow.errors import ConfigError
from vaeflow.model import build_model
from vaeflow.nets import DECODERS, ENCODERS, ResidualBlock, ResNetDecoder, ResNetEncoder

CIFAR, MNIST = (3, 32, 32), (1, 28, 28)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    r"""Small convolutions: one intra-op thread is faster, and much faster when other
    processes share the cores (15 steps: 0.3 s with one thread, 19 s with two on a loaded
    2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def encoder(shape: tuple[int, int, int], **options) -> ResNetEncoder:
    return ENCODERS.build({"name": "resnet", **options}, input_shape=shape)


def decoder(latent_dim: int, shape: tuple[int, int, int], **options) -> ResNetDecoder:
    return DECODERS.build({"name": "resnet", **options}, latent_dim=latent_dim, output_shape=shape)


@pytest.mark.parametrize(("shape", "params"), [(CIFAR, 6), (CIFAR, 30), (MNIST, 1)])
def test_shapes_with_leading_dims(shape: tuple[int, int, int], params: int):
    torch.manual_seed(0)
    enc, dec = encoder(shape, width=8), decoder(4, (params, *shape[1:]), width=8)
    assert enc.feature_dim == 256
    assert enc(torch.rand(2, 3, *shape)).shape == (2, 3, 256)
    assert enc(torch.rand(3, *shape)).shape == (3, 256)
    out = dec(torch.randn(2, 3, 4))
    assert out.shape == (2, 3, params * shape[1] * shape[2])
    assert dec(torch.randn(3, 4)).shape == (3, params * shape[1] * shape[2])
    assert dec.net[-1].out_channels == params  # P parameters per pixel location


def test_the_decoder_does_not_mix_samples_or_examples():
    torch.manual_seed(0)
    dec = decoder(4, CIFAR, width=8).double()
    z = torch.randn(2, 3, 4, dtype=torch.float64)
    out = dec(z)
    for i in range(2):
        for b in range(3):
            expected = dec.net(z[i, b : b + 1])[0]  # the [P, H, W] map, flattened in that order
            assert expected.shape == CIFAR
            torch.testing.assert_close(out[i, b], expected.flatten())


def test_default_parameter_counts():
    count = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    assert count(encoder(CIFAR)) == 354_376
    assert count(decoder(32, (6, 32, 32))) == 240_806
    assert count(decoder(32, (30, 32, 32))) == 247_742


def test_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    enc, dec = encoder(CIFAR, width=4, blocks=2).double(), decoder(5, (6, 32, 32), width=4, blocks=2).double()
    x = torch.rand(3, *CIFAR, dtype=torch.float64, requires_grad=True)
    z = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    h, out = enc(x), dec(z)
    ((h * torch.randn_like(h)).sum() + (out * torch.randn_like(out)).sum()).backward()
    for net in (enc, dec):
        for name, p in net.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{name} gets no gradient"
    assert x.grad.abs().sum() > 0 and z.grad.abs().sum() > 0


def test_every_block_starts_near_the_identity():
    torch.manual_seed(0)
    blocks = [m for net in (encoder(CIFAR, width=8, blocks=2), decoder(4, CIFAR, width=8, blocks=2))
              for m in net.modules() if isinstance(m, ResidualBlock)]  # fmt: skip
    assert len(blocks) == 12
    for block in blocks:
        x = torch.randn(4, block.branch[1].in_channels, 8, 8)
        assert (block(x) - x).norm() < 0.05 * x.norm()
        assert not torch.equal(block(x), x)  # not exactly: every weight has a gradient
        assert torch.all(block.branch[-1].bias == 0)


@pytest.mark.parametrize("shape", [(3, 30, 30), (1, 28, 26), (3, 2, 2), (3, 32)])
def test_sizes_not_divisible_by_4_are_config_errors(shape: tuple[int, ...]):
    size = "x".join(map(str, shape))
    for group, build in (("encoder", lambda: encoder(shape)), ("decoder", lambda: decoder(4, shape))):
        with pytest.raises(ConfigError, match=rf"^{group}=resnet needs .*multiples of 4 .*not {size};") as e:
            build()
        assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("registry", "options", "match"),
    [
        (ENCODERS, {"width": 0}, r"^encoder\.width=0: use an integer >= 1"),
        (ENCODERS, {"feature_dim": 0}, r"^encoder\.feature_dim=0"),
        (ENCODERS, {"blocks": 1.5}, r"^encoder\.blocks=1\.5"),
        (DECODERS, {"blocks": -1}, r"^decoder\.blocks=-1: use an integer >= 0"),
        (DECODERS, {"map_channels": 0}, r"^decoder\.map_channels=0"),
        (DECODERS, {"activation": "swish"}, r"^unknown activation 'swish'"),
    ],
)
def test_bad_options_are_config_errors(registry, options: dict, match: str):
    fixed = {"input_shape": CIFAR} if registry is ENCODERS else {"latent_dim": 4, "output_shape": CIFAR}
    with pytest.raises(ConfigError, match=match):
        registry.build({"name": "resnet", **options}, **fixed)


def test_build_model_takes_the_resnet_nets():
    cfg = {
        "model": {"latent_dim": 3},
        "encoder": {"name": "resnet", "width": 4},
        "decoder": {"name": "resnet", "width": 4},
        "posterior": {"name": "mean_field"},
        "prior": {"name": "standard_normal"},
    }
    model = build_model(cfg, (1, 8, 8))
    assert isinstance(model.encoder, ResNetEncoder) and isinstance(model.decoder, ResNetDecoder)
    assert model.decode_mean(model.prior.sample(2)).shape == (2, 1, 8, 8)


def test_a_few_adam_steps_reduce_a_bernoulli_reconstruction_loss():
    torch.manual_seed(0)
    enc, dec = encoder(MNIST, width=8, feature_dim=32), decoder(32, MNIST, width=8)
    x = torch.bernoulli(torch.full((8, *MNIST), 0.3))

    def loss() -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(dec(enc(x)), x.flatten(1), reduction="sum") / len(x)

    optimizer = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=3e-3)
    first = loss().item()
    for _ in range(15):
        optimizer.zero_grad()
        value = loss()
        value.backward()
        optimizer.step()
    # random pixels: the loss falls from ~log 2 per pixel towards their entropy (~0.61)
    assert loss().item() < 0.9 * first
