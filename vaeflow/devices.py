r"""Devices: from a setting (``auto | cpu | cuda | cuda:N``) to a device that exists here."""

from __future__ import annotations

from typing import Any

import torch

from vaeflow.errors import ConfigError

__all__ = ["resolve_device", "synchronize"]


def resolve_device(name: Any, key: str = "trainer.device") -> torch.device:
    r"""``auto | cpu | cuda | cuda:N`` (the value of config ``key``) -> a device that
    exists on this machine, or a one-line :class:`ConfigError` saying what to use.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(str(name))
    except RuntimeError:
        raise ConfigError(f"{key}={name}: use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"{key}={name}: use auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"{key}={name}: no CUDA device is visible here; use {key}=cpu")
        if device.index is not None and device.index >= count:
            have = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
            raise ConfigError(
                f"{key}={name}: this machine has {count} CUDA device{'s' * (count > 1)} ({have}); "
                f"use {key}=cuda or one of those"
            )
    return device


def synchronize(device: torch.device) -> None:
    r"""Waits for ``device``'s queued work (a no-op on the CPU), for timings."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
