"""Any pixels, end to end: the user's own colour images trained with a discrete likelihood and
the residual conv nets, evaluated in bits/dim, reported; a Gaussian on dequantized 8-bit data
and on continuous data; a dequantized run resumed bit for bit; older checkpoints' configs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import vaeflow
from omegaconf import OmegaConf
from PIL import Image
from training_helpers import SigtermAt

from vaeflow.checkpoint import upgrade_config
from vaeflow.report.run import load_run
from vaeflow.report.tables import table_rows
from vaeflow.training import Interrupted, train

FAST = [
    "trainer.progress=plain",
    "trainer.iw_k=4",
    "trainer.images=8",
    "trainer.threads=1",
    "model.latent_dim=4",
]


def colour_folder(root: Path, n: int = 48) -> Path:
    """``n`` 8x8 RGB PNGs in two class folders: smooth gradients with a random hue."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 1, 8)
    for i in range(n):
        folder = root / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        colour = rng.uniform(0.2, 1.0, 3)
        pixels = (np.outer(ramp, ramp)[..., None] * colour * 255).round().astype(np.uint8)
        Image.fromarray(pixels, "RGB").save(folder / f"{i:03d}.png")
    return root


def only_eval(run: Path) -> dict:
    (path,) = run.glob("eval/*/eval.json")
    return json.loads(path.read_text())


def test_own_colour_images_train_evaluate_and_report_in_bits_per_dim(compose_train, tmp_path):
    data = colour_folder(tmp_path / "pictures")
    cfg = compose_train(
        "dataset=image_folder", f"dataset.root={data}", "dataset.val_size=8", "dataset.test_size=8",
        "likelihood=discretized_logistic_mixture", "likelihood.components=2",
        "encoder=resnet", "encoder.width=8", "decoder=resnet", "decoder.width=8",
        "trainer.max_epochs=2", "trainer.batch_size=16", *FAST,
    )  # fmt: skip
    metrics = train(cfg, tmp_path / "run")
    assert np.isfinite(metrics["test/iw_nll"]) and metrics["test/iw_nll"] > 0
    vaeflow("eval", str(tmp_path / "run"), "k=16", "threads=1", "progress=plain", cwd=tmp_path)
    result = only_eval(tmp_path / "run")
    assert result["likelihood"] == {
        "name": "discretized_logistic_mixture",
        "levels": 256,
        "dequantization": "none",
    }
    assert result["dims"] == 3 * 8 * 8
    assert 0 < result["eval/bits_per_dim"] < 8  # better than the uniform distribution over 256 levels
    (tmp_path / "run" / ".hydra").mkdir()
    OmegaConf.save(cfg, tmp_path / "run" / ".hydra" / "config.yaml")  # what the CLI writes beside a run
    run = load_run(tmp_path / "run")
    header, rows = table_rows([run])
    assert rows[0][header.index("bits/dim ± se")].startswith(f"{result['eval/bits_per_dim']:.4f}")


@pytest.mark.parametrize("dtype, levels", [("uint8", 256), ("float32", None)])
def test_a_gaussian_on_8_bit_data_is_dequantized_and_on_continuous_data_is_a_density(
    compose_train, tmp_path, dtype, levels
):
    rng = np.random.default_rng(1)
    images = rng.beta(2, 5, size=(120, 6, 6))
    images = (images * 255).round().astype(np.uint8) if dtype == "uint8" else images.astype(np.float32)
    np.save(tmp_path / "x.npy", images)
    cfg = compose_train(
        "dataset=arrays", f"dataset.root={tmp_path / 'x.npy'}", "dataset.val_size=20", "dataset.test_size=20",
        "likelihood=gaussian", "trainer.max_epochs=2", "trainer.batch_size=20", *FAST,
    )  # fmt: skip
    train(cfg, tmp_path / "run")
    vaeflow("eval", str(tmp_path / "run"), "k=8", "threads=1", "progress=plain", cwd=tmp_path)
    result = only_eval(tmp_path / "run")
    assert result["likelihood"]["levels"] == levels
    if levels is None:
        assert result["likelihood"]["dequantization"] == "none" and result["eval/bits_per_dim"] is None
    else:
        assert result["likelihood"]["dequantization"].startswith("uniform")
        assert 0 < result["eval/bits_per_dim"] < 12  # a density on [0, 1] with the bin width added


def test_a_dequantized_run_resumes_bit_for_bit(compose_train, tmp_path):
    run = ["dataset.binarize=none", "likelihood=gaussian", "trainer.max_epochs=2", *FAST]
    train(compose_train(*run), tmp_path / "a")
    with pytest.raises(Interrupted):
        train(compose_train(*run), tmp_path / "b", hooks=[SigtermAt(20)])
    train(compose_train(*run, f"trainer.resume={tmp_path / 'b'}"), tmp_path / "b")
    a, b = (torch.load(tmp_path / r / "checkpoints" / "last.pt", weights_only=True)["model"] for r in "ab")
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_a_config_from_before_the_likelihood_group_is_upgraded():
    old = {
        "model": {"latent_dim": 2, "likelihood": "bernoulli"},
        "dataset": {"name": "mnist", "root": "data"},
    }
    new = upgrade_config(old)
    assert new["likelihood"] == {"name": "bernoulli"} and "likelihood" not in new["model"]
    assert new["dataset"]["binarize"] == "dynamic" and old["model"]["likelihood"] == "bernoulli"
    static = upgrade_config({"model": {"latent_dim": 2}, "dataset": {"name": "binarized_mnist"}})
    assert "binarize" not in static["dataset"]
