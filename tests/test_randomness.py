"""Owned randomness: the counter-based noise is standard normal, independent of how it is
asked for, and bit-exact against an integer reference; streams are distinct; generator
states are restored only on the device they belong to."""

from __future__ import annotations

import math

import pytest
import torch

from vaeflow.randomness import (
    Stream,
    _mix32,
    _mix32_reference,
    example_noise,
    generator_state,
    restore_generator,
    stream_seed,
)


def test_the_hash_is_bit_exact_against_an_integer_reference():
    # int32 multiplication wraps modulo 2^32 and shifts are made logical by masks: every
    # bit must match the hash computed in exact integer arithmetic, extremes included
    values = [0, 1, 2**31 - 1, -(2**31), -1, 0x7FEB352D, 123456789, -987654321]
    values += torch.randint(-(2**31), 2**31, (2000,), generator=torch.Generator().manual_seed(0)).tolist()
    mixed = _mix32(torch.tensor(values, dtype=torch.int32)).tolist()
    assert [m & 0xFFFFFFFF for m in mixed] == [_mix32_reference(v & 0xFFFFFFFF) for v in values]


def test_noise_is_standard_normal():
    x = example_noise(torch.arange(500), 0, 200, 20, seed=3).double().flatten()  # 2,000,000 numbers
    n = x.numel()
    assert abs(x.mean()) < 5 / math.sqrt(n)
    assert abs(x.var() - 1) < 5 * math.sqrt(2 / n)
    assert abs((x**4).mean() - 3) < 5 * math.sqrt(96 / n)  # kurtosis of a normal; var(x^4) = 96
    # the empirical CDF against Phi at a few points (Kolmogorov-Smirnov at ~1e-3 resolution)
    for t in (-2.5, -1.0, 0.0, 0.7, 2.0):
        phi = 0.5 * math.erfc(-t / math.sqrt(2))
        assert abs((x <= t).double().mean().item() - phi) < 5 * math.sqrt(phi * (1 - phi) / n)
    assert x.abs().max() <= 5.43


def test_neighbouring_numbers_are_uncorrelated():
    x = example_noise(torch.arange(400), 0, 256, 16, seed=1).double()  # [samples, examples, dims]
    n = x[:, :, 1:].numel()
    for a, b in [(x[..., :-1], x[..., 1:]), (x[:-1], x[1:]), (x[:, :-1], x[:, 1:])]:
        r = torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1]
        assert abs(r) < 5 / math.sqrt(n)


def test_noise_is_the_same_however_it_is_asked_for():
    whole = example_noise([3, 9, 4], 0, 700, 5, seed=2)
    assert torch.equal(example_noise([9], 250, 530, 5, seed=2)[:, 0], whole[250:530, 1])
    assert torch.equal(example_noise([4, 3], 0, 700, 5, seed=2), whole[:, [2, 0]])
    assert torch.equal(example_noise(torch.tensor([9]), 699, 700, 5, seed=2, dtype=torch.float64)[0, 0],
                       whole[699, 1].double())  # fmt: skip
    assert not torch.equal(example_noise([3], 0, 10, 5, seed=3)[:, 0], whole[:10, 0])  # the seed matters
    with pytest.raises(ValueError, match="2\\^31"):
        example_noise([-1], 0, 1, 2, seed=0)


def test_streams_are_distinct():
    seeds = {stream_seed(s, key, *extra) for s in range(3) for key in Stream for extra in [(), (0,), (1,)]}
    assert len(seeds) == 3 * len(Stream) * 3
    assert all(0 <= s < 2**63 for s in seeds)


def test_a_generator_state_is_restored_only_on_its_own_kind_of_device(caplog):
    g = torch.Generator().manual_seed(5)
    saved = generator_state(g)
    expected = torch.randn(3, generator=g)
    other = torch.Generator().manual_seed(99)
    assert restore_generator(other, saved, reseed=1, what="the test's generator")
    assert torch.equal(torch.randn(3, generator=other), expected)

    # a state saved on a GPU cannot continue on the CPU: re-seeded deterministically, and said
    cuda_state = {"device": "cuda", "state": torch.zeros(16, dtype=torch.uint8)}
    with caplog.at_level("INFO", logger="vaeflow"):
        assert not restore_generator(other, cuda_state, reseed=7, what="the test's generator")
    assert "was saved on cuda and cannot continue on cpu" in caplog.text
    assert torch.equal(
        torch.randn(3, generator=other), torch.randn(3, generator=torch.Generator().manual_seed(7))
    )
