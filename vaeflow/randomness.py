r"""Owned randomness: every random stream vaeflow draws from, and how each is seeded.

A run is fixed by its seed and the settings that define the model, data and optimization;
logging and evaluation never change it. So nothing draws from a shared generator except
the model's initialization (seeded by :func:`seed_everything`, before anything else runs):

- the training step's noise comes from the trainer's own ``torch.Generator``, whose state
  is part of a checkpoint (:func:`generator_state`, :func:`restore_generator`);
- the data order and the dynamic binarization of an epoch come from a generator seeded by
  ``(seed, epoch)``, so no state needs saving and a resumed epoch replays exactly;
- validation, IW-NLL estimates, image grids and ``vaeflow eval`` use *counter-based* noise
  (:func:`example_noise`): sample i of example j is a hash of ``(seed, j, i)``, the same
  numbers whatever the batch, the chunk or the device.

Independent streams are derived from one seed by :func:`stream_seed` with the keys of
:class:`Stream`, so that no two uses share numbers by accident.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Sequence
from enum import IntEnum
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "Stream",
    "stream_seed",
    "seed_everything",
    "example_noise",
    "generator_state",
    "restore_generator",
    "global_rng_state",
    "restore_global_rng",
]

log = logging.getLogger("vaeflow")


class Stream(IntEnum):
    r"""The keys of vaeflow's random streams (``stream_seed(seed, Stream.X, ...)``). The
    values are part of the results' definition: changing one changes which images a
    subset holds or which noise an estimate used."""

    GAPS_FLEXIBLE = 1  #: the flexible local posterior's initial planar directions
    GAPS_FIT = 2  #: the local posteriors' optimization noise (and the index of the posterior)
    SUBSET = 3  #: :func:`vaeflow.data.seeded_subset`, the one rule for "a random N of a split"
    GAPS_SUBSET = 4  #: which evaluated examples the inference gaps are computed on
    EPOCH = 5  #: an epoch's data order and dynamic binarization (and the epoch's index)
    TRAIN_NOISE = 6  #: the training step's posterior noise
    EXAMPLE_NOISE = 7  #: the counter-based noise of :func:`example_noise`
    DEQUANTIZE = 8  #: the fixed uniform dequantization of validation and test (and the split's index)
    PRIOR_INIT = 9  #: a learned prior's random initial parameters (the mixture's means)


_MASK64 = 0xFFFFFFFFFFFFFFFF


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def stream_seed(*keys: int) -> int:
    r"""A seed in ``[0, 2^63)`` for the stream named by ``keys`` (SplitMix64, Steele et al.
    2014, chained over the keys): nearby keys give unrelated seeds.

    Example:
        >>> stream_seed(0, Stream.SUBSET) != stream_seed(1, Stream.SUBSET)
        True
    """
    x = 0
    for key in keys:
        x = _splitmix64(x ^ (int(key) & _MASK64))
    return x >> 1  # torch seeds are < 2**63


def seed_everything(seed: int) -> None:
    r"""Seeds Python's, NumPy's and torch's global generators (the model's initialization)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ------------------------------------------------------------------- counter-based noise


def _int32(c: int) -> int:
    return c - 2**32 if c >= 2**31 else c


_M1, _M2 = _int32(0x7FEB352D), _int32(0x846CA68B)


def _mix32_(x: Tensor, t: Tensor) -> Tensor:
    r"""``lowbias32`` (C. Wellons' integer hash, bias 0.17) in place on int32 ``x``, with
    ``t`` as scratch. Multiplication wraps modulo 2^32 (two's complement, as torch's CPU
    and CUDA kernels compute it; tests check the bits against :func:`_mix32_reference`),
    and each right shift is made logical by a mask."""
    torch.bitwise_right_shift(x, 16, out=t)
    x.bitwise_xor_(t.bitwise_and_(0xFFFF)).mul_(_M1)
    torch.bitwise_right_shift(x, 15, out=t)
    x.bitwise_xor_(t.bitwise_and_(0x1FFFF)).mul_(_M2)
    torch.bitwise_right_shift(x, 16, out=t)
    return x.bitwise_xor_(t.bitwise_and_(0xFFFF))


def _mix32(x: Tensor) -> Tensor:
    return _mix32_(x.clone(), torch.empty_like(x))


def _mix32_reference(x: int) -> int:
    r""":func:`_mix32_` in exact integer arithmetic, on ``[0, 2^32)``."""
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)


def example_noise(
    ids: Sequence[int] | Tensor,
    start: int,
    stop: int,
    latent_dim: int,
    seed: int,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    r"""Standard normal noise for samples ``start:stop`` of the examples ``ids``, the same
    numbers whichever batch, chunk or device asks for them.

    Counter-based (Salmon et al., 2011): number ``d`` of sample ``i`` of example ``j`` is
    ``sqrt(2) erfinv(v)`` with ``v`` the top 24 bits of two rounds of an integer hash of the
    counter ``i D + d`` keyed by ``(seed, j)``, as an odd multiple of ``2^-24`` in
    ``(-1, 1)``, so ``|eps| <= 5.42``. Vectorized over examples, samples and dimensions
    (no Python loop per example), so an estimate of an example depends neither on the
    chunking nor on which other examples are evaluated with it.

    Arguments:
        ids: example identifiers in ``[0, 2^31)`` (indices in the dataset split).
        start, stop: the range of sample indices.
        latent_dim: D.
        seed: the evaluation seed.
        device, dtype: of the result.

    Returns:
        ``eps [stop - start, len(ids), D]``.

    References:
        | Parallel Random Numbers: As Easy as 1, 2, 3 (Salmon et al., 2011)
        | https://doi.org/10.1145/2063384.2063405

    Example:
        >>> a = example_noise([4, 7], 10, 20, 3, seed=0)
        >>> b = example_noise([7], 0, 30, 3, seed=0)
        >>> a.shape, torch.equal(a[:, 1], b[10:20, 0])
        (torch.Size([10, 2, 3]), True)
    """
    ids = torch.as_tensor(ids)
    if ids.device.type == "cpu" and ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= 2**31):
        raise ValueError("example ids must be in [0, 2^31)")  # checked where it costs no device sync
    ids = ids.to(device)
    if stop * latent_dim > 2**31:
        raise ValueError(f"{stop} samples of {latent_dim} dimensions exceed the noise counter (2^31 numbers)")
    key = stream_seed(seed, Stream.EXAMPLE_NOISE)
    k1 = _mix32(ids.to(torch.int32) ^ _int32(key & 0xFFFFFFFF))
    k2 = _mix32(k1 ^ _int32((key >> 32) & 0xFFFFFFFF))
    counter = torch.arange(start * latent_dim, stop * latent_dim, device=device, dtype=torch.int32)
    h = counter.view(-1, 1, latent_dim) ^ k1[:, None]
    scratch = torch.empty_like(h)
    _mix32_(h, scratch)
    _mix32_(h.bitwise_xor_(k2[:, None]), scratch)
    # the top 25 bits with the lowest set: odd numbers in [-2^24 + 1, 2^24 - 1], exact in float32
    torch.bitwise_right_shift(h, 7, out=scratch).bitwise_or_(1)
    v = scratch.to(torch.float32).mul_(2.0**-24)
    return v.erfinv_().mul_(math.sqrt(2)).to(dtype)


# ------------------------------------------------------------- generator states in checkpoints


def generator_state(generator: torch.Generator) -> dict[str, Any]:
    r"""A generator's state and the device type it belongs to, as plain containers."""
    return {"device": generator.device.type, "state": generator.get_state()}


def restore_generator(generator: torch.Generator, saved: Any, reseed: int, what: str) -> bool:
    r"""Sets ``generator`` to ``saved`` (:func:`generator_state`) when it was saved on the
    same kind of device; otherwise (a run moved between the CPU and a GPU, or an older
    checkpoint) seeds it with ``reseed`` and logs why. Returns whether it was restored."""
    device = generator.device.type
    if isinstance(saved, dict) and saved.get("device") == device and isinstance(saved.get("state"), Tensor):
        generator.set_state(saved["state"].cpu())
        return True
    was = saved.get("device") if isinstance(saved, dict) else "an older checkpoint format"
    log.info("resume: %s was saved on %s and cannot continue on %s; it is re-seeded", what, was, device)
    generator.manual_seed(reseed)
    return False


def global_rng_state() -> dict[str, Any]:
    r"""The states of Python's, NumPy's and torch's global generators (every visible CUDA
    device's too), as plain containers."""
    np_state = np.random.get_state()
    state = {
        "python": _to_plain(random.getstate()),
        "numpy": {
            "key": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_global_rng(state: dict[str, Any]) -> list[str]:
    r"""Restores what :func:`global_rng_state` returned, each state on its own device and
    only where that device exists here; returns what could not be restored."""
    random.setstate(_to_tuple(state["python"]))
    np_state = state["numpy"]
    key = np_state["key"].cpu().numpy().astype(np.uint32)
    np.random.set_state(("MT19937", key, np_state["pos"], np_state["has_gauss"], np_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    saved = list(state.get("cuda") or [])
    here = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for index, cuda_state in enumerate(saved[:here]):
        torch.cuda.set_rng_state(cuda_state.cpu(), index)
    return [f"the CUDA generator of cuda:{i} (no such device here)" for i in range(here, len(saved))]


def _to_plain(value: Any) -> Any:
    return [_to_plain(v) for v in value] if isinstance(value, tuple) else value


def _to_tuple(value: Any) -> Any:
    return tuple(_to_tuple(v) for v in value) if isinstance(value, list) else value
