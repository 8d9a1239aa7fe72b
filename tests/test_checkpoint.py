"""Checkpoints: atomic writes, safe loads, hostile and corrupt files refused."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from vaeflow.checkpoint import load_checkpoint, save_atomic
from vaeflow.errors import CheckpointError
from vaeflow.randomness import global_rng_state, restore_global_rng


class Payload:
    """Unpickling this runs code: it creates the file named in ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_runs_code_is_refused_and_never_runs(tmp_path: Path):
    marker = tmp_path / "pwned"
    path = tmp_path / "hostile.pt"
    torch.save({"model": {}, "config": {}, "payload": Payload(marker)}, path)
    with pytest.raises(CheckpointError, match="refused: it holds objects other than tensors"):
        load_checkpoint(path)
    assert not marker.exists()
    # a raw pickle (not a torch zip file) is refused as well, before anything reads it
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps({"model": Payload(marker)}, protocol=2))
    with pytest.raises(CheckpointError, match="not a complete torch zip archive"):
        load_checkpoint(raw)
    assert not marker.exists()


def test_random_bytes_are_called_corrupt(tmp_path: Path):
    noise = tmp_path / "noise.pt"
    noise.write_bytes(bytes(range(256)) * 40)
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(noise)


def test_truncated_missing_and_foreign_checkpoints(tmp_path: Path):
    good = tmp_path / "good.pt"
    save_atomic({"model": {"w": torch.ones(1000)}, "config": {"a": 1}}, good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(truncated)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "absent.pt")
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.ones(2)}, foreign)
    with pytest.raises(CheckpointError, match="not a vaeflow checkpoint"):
        load_checkpoint(foreign)
    assert torch.equal(load_checkpoint(good)["model"]["w"], torch.ones(1000))


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path: Path):
    path = tmp_path / "last.pt"
    save_atomic({"model": {"step": torch.tensor(1)}, "config": {}}, path)
    with pytest.raises((AttributeError, TypeError, pickle.PicklingError)):
        save_atomic({"model": lambda: None, "config": {}}, path)  # lambdas cannot be saved
    assert load_checkpoint(path)["model"]["step"].item() == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_rng_state_round_trip_through_a_safe_load(tmp_path: Path):
    import random

    import numpy as np

    state = global_rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    save_atomic({"model": {}, "config": {}, "rng": state}, tmp_path / "c.pt")
    assert restore_global_rng(load_checkpoint(tmp_path / "c.pt")["rng"]) == []
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
