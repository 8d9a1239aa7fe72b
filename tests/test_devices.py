"""Devices: a setting names a device this machine has, or is a one-line error."""

from __future__ import annotations

import pytest
import torch

from vaeflow.devices import resolve_device
from vaeflow.errors import ConfigError


def test_cpu_and_auto():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("name", ["tpu", "cuda:x", "mps", 3])
def test_unknown_devices(name):
    with pytest.raises(ConfigError, match=f"trainer.device={name}: use auto, cpu, cuda or cuda:N"):
        resolve_device(name)


def test_a_gpu_index_beyond_the_count_is_an_error_before_any_work(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ConfigError) as info:
        resolve_device("cuda:7")
    assert str(info.value) == (
        "trainer.device=cuda:7: this machine has 1 CUDA device (cuda:0); use trainer.device=cuda or one of those"
    )
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    with pytest.raises(
        ConfigError, match=r"device=cuda:4: this machine has 4 CUDA devices \(cuda:0 to cuda:3\)"
    ):
        resolve_device("cuda:4", key="device")


def test_no_gpu_at_all(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no CUDA device is visible here; use trainer.device=cpu"):
        resolve_device("cuda")
