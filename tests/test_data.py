r"""Dataset loaders, splits and the batch loader, on tiny files written in each real format.

Nothing here reads shared data or the network: every file is written into ``tmp_path``.
"""

from __future__ import annotations

import gzip
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from vaeflow.data import BatchLoader, DataSplits, Split, load_dataset
from vaeflow.errors import ConfigError, DataError

CONF = Path(__file__).resolve().parents[1] / "conf" / "dataset"
AMAT = {"train": "binarized_mnist_train.amat", "val": "binarized_mnist_valid.amat",
        "test": "binarized_mnist_test.amat"}  # fmt: skip
SIZES = {"train": 6, "val": 3, "test": 4}


# -- writers of tiny files in the real formats -------------------------------------------


def write_amat(path: Path, bits: np.ndarray) -> None:
    path.write_text("".join(" ".join(map(str, row)) + "\n" for row in bits.reshape(len(bits), -1)))


def write_binarized_mnist(root: Path, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    bits = {split: rng.integers(0, 2, (n, 784)) for split, n in SIZES.items()}
    for split, name in AMAT.items():
        write_amat(root / name, bits[split])
    return bits


def idx_bytes(pixels: np.ndarray) -> bytes:
    return struct.pack(">I3I", 0x00000803, *pixels.shape) + pixels.astype(np.uint8).tobytes()


def write_mnist(root: Path, folder: str, n_train: int = 12, n_test: int = 5, gz: bool = True):
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(1)
    pixels = {}
    for stem, n in (
        ("train-images-idx3-ubyte", n_train),
        ("t10k-images-idx3-ubyte", n_test),
    ):
        pixels[stem] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        data = idx_bytes(pixels[stem])
        if gz:
            (raw / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (raw / stem).write_bytes(data)
    return raw, pixels


def write_omniglot(root: Path, n_background: int = 12, n_evaluation: int = 4) -> Path:
    base = root / "omniglot-py"
    for folder, n in (
        ("images_background", n_background),
        ("images_evaluation", n_evaluation),
    ):
        for i in range(n):
            directory = base / folder / f"Alphabet_{i % 2}" / f"character{i // 4:02d}"
            directory.mkdir(parents=True, exist_ok=True)
            ink = np.zeros((105, 105), dtype=bool)
            ink[20 + i : 60 + i, 30:45] = True  # one black stroke on white
            Image.fromarray(~ink).save(directory / f"{i:04d}_{i:02d}.png")  # mode "1"
    return base


def load_quietly(cfg: dict) -> DataSplits:
    r"""Loads tiny binarized MNIST files, which are not of the canonical sizes."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="binarized_mnist: .* canonical")
        return load_dataset(cfg)


def assert_data_error(match: str, cfg: dict) -> str:
    with pytest.raises(DataError) as info:
        load_quietly(cfg)
    message = str(info.value)
    assert match in message
    assert "\n" not in message
    return message


def assert_binary(x: torch.Tensor) -> None:
    assert ((x == 0) | (x == 1)).all()


# -- digits and the batch loader ---------------------------------------------------------


def test_digits_default_splits():
    data = load_dataset({"name": "digits"})
    assert len(data.train) + len(data.val) + len(data.test) == 1797
    assert (len(data.val), len(data.test)) == (200, 300)
    assert data.shape == (1, 8, 8)
    assert data.train.dynamic and not data.val.dynamic and not data.test.dynamic
    assert 0 <= data.train.images.min() and data.train.images.max() <= 1
    assert_binary(data.val.images)
    assert_binary(data.test.images)


def test_batch_loader_counts_and_binarization():
    split = Split(torch.full((10, 1, 2, 2), 0.5), dynamic=True)
    assert len(BatchLoader(split, 4)) == 3
    assert len(BatchLoader(split, 4, drop_last=True)) == 2
    batches = list(BatchLoader(split, 4))
    assert [len(b) for b in batches] == [4, 4, 2]
    assert_binary(torch.cat(batches))
    with pytest.raises(ValueError):
        BatchLoader(split, 0)


def test_batch_loader_shuffle_is_seeded():
    split = Split(torch.arange(10.0).view(10, 1, 1, 1) / 10)

    def order(seed: int) -> list[float]:
        return torch.cat(list(BatchLoader(split, 3, shuffle=True, seed=seed))).flatten().tolist()

    assert order(0) == order(0)
    assert order(0) != order(1)
    assert sorted(order(0)) == split.images.flatten().tolist()
    plain = torch.cat(list(BatchLoader(split, 3))).flatten()
    assert torch.equal(plain, split.images.flatten())


def test_an_epoch_is_a_function_of_the_seed_and_its_index():
    # nothing to save for a resumed run: epoch e's order and bits come from (seed, e), and an
    # epoch replayed after `skip` batches gives the rest of the same batches
    split = Split(torch.full((8, 1, 2, 2), 0.5), dynamic=True)
    loader = BatchLoader(split, 3, shuffle=True, seed=3)
    first, second = list(loader.epoch(0)), list(loader.epoch(1))
    assert all(torch.equal(a, b) for a, b in zip(first, BatchLoader(split, 3, shuffle=True, seed=3).epoch(0)))
    assert not all(torch.equal(a, b) for a, b in zip(first, second))
    rest = list(loader.epoch(0, skip=2))
    assert len(rest) == 1 and torch.equal(rest[0], first[2])


# -- the configs match their loaders -----------------------------------------------------


@pytest.mark.parametrize("name", ["binarized_mnist", "mnist", "fashion_mnist", "omniglot"])
def test_configs(name: str, tmp_path: Path):
    text = (CONF / f"{name}.yaml").read_text()
    assert text.startswith("# ")
    cfg = yaml.safe_load(text)
    assert cfg["name"] == name and cfg["download"] is False
    if name == "binarized_mnist":
        assert cfg["root"] == "data/binarized_mnist"
        write_binarized_mnist(tmp_path)
    elif name == "omniglot":
        assert cfg["root"] == "data" and cfg["val_size"] == 1345
        write_omniglot(tmp_path)
        cfg["val_size"] = 3
    else:
        assert cfg["root"] == "data" and cfg["val_size"] == 10000
        write_mnist(tmp_path, {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}[name])
        cfg["val_size"] = 3
    load_quietly({**cfg, "root": str(tmp_path)})  # every key is a loader argument


# -- binarized MNIST ---------------------------------------------------------------------


def test_binarized_mnist(tmp_path: Path):
    bits = write_binarized_mnist(tmp_path)
    with pytest.warns(UserWarning, match="canonical file has"):
        data = load_dataset({"name": "binarized_mnist", "root": str(tmp_path)})
    assert data.shape == (1, 28, 28)
    for split, n in SIZES.items():
        assert data[split].images.shape == (n, 1, 28, 28)
        assert not data[split].dynamic
        assert data[split].images.dtype == torch.float32
        assert np.array_equal(data[split].images.flatten(1).numpy(), bits[split])


def test_binarized_mnist_tolerates_crlf(tmp_path: Path):
    bits = write_binarized_mnist(tmp_path)
    path = tmp_path / AMAT["test"]
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    data = load_quietly({"name": "binarized_mnist", "root": str(tmp_path)})
    assert np.array_equal(data.test.images.flatten(1).numpy(), bits["test"])


def test_binarized_mnist_missing_file(tmp_path: Path):
    write_binarized_mnist(tmp_path)
    (tmp_path / AMAT["val"]).unlink()
    message = assert_data_error(AMAT["val"], {"name": "binarized_mnist", "root": str(tmp_path)})
    assert "dataset.download=true" in message


def test_binarized_mnist_truncated(tmp_path: Path):
    write_binarized_mnist(tmp_path)
    path = tmp_path / AMAT["train"]
    path.write_bytes(path.read_bytes()[:-101])
    message = assert_data_error(AMAT["train"], {"name": "binarized_mnist", "root": str(tmp_path)})
    assert "truncated" in message and f"({SIZES['train']})" in message


def test_binarized_mnist_wrong_line_length(tmp_path: Path):
    write_binarized_mnist(tmp_path)
    path = tmp_path / AMAT["test"]
    lines = path.read_text().splitlines(keepends=True)
    lines[2] = lines[2][2:]  # drop the first value
    path.write_text("".join(lines))
    message = assert_data_error(AMAT["test"], {"name": "binarized_mnist", "root": str(tmp_path)})
    assert "line 3 has 783 values, expected 784" in message


def test_binarized_mnist_bad_value(tmp_path: Path):
    write_binarized_mnist(tmp_path)
    path = tmp_path / AMAT["test"]
    lines = path.read_text().splitlines(keepends=True)
    lines[1] = lines[1][:10] + "2" + lines[1][11:]  # the sixth value
    path.write_text("".join(lines))
    message = assert_data_error(AMAT["test"], {"name": "binarized_mnist", "root": str(tmp_path)})
    assert "line 2 value 6 is '2', expected 0 or 1" in message


def test_binarized_mnist_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import torchvision.datasets.utils

    source = tmp_path / "source"
    write_binarized_mnist(source)
    root = tmp_path / "root"
    calls = []

    def fake_download_url(url: str, root: str, filename: str, md5: str) -> None:
        calls.append(url)
        Path(root).mkdir(parents=True, exist_ok=True)
        (Path(root) / filename).write_bytes((source / url.rsplit("/", 1)[1]).read_bytes())

    monkeypatch.setattr(torchvision.datasets.utils, "download_url", fake_download_url)
    cfg = {"name": "binarized_mnist", "root": str(root), "download": True}
    data = load_quietly(cfg)
    assert len(calls) == 3 and len(data.test) == SIZES["test"]
    assert sorted(p.name for p in root.iterdir()) == sorted(AMAT.values())
    load_quietly(cfg)
    assert len(calls) == 3  # nothing fetched once the files are there


def test_binarized_mnist_failed_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import torchvision.datasets.utils

    def broken_download_url(url: str, root: str, filename: str, md5: str) -> None:
        Path(root).mkdir(parents=True, exist_ok=True)
        # half a file, then the network fails
        (Path(root) / filename).write_text("0 1 0")
        raise OSError("connection reset")

    monkeypatch.setattr(torchvision.datasets.utils, "download_url", broken_download_url)
    cfg = {"name": "binarized_mnist", "root": str(tmp_path), "download": True}
    message = assert_data_error("connection reset", cfg)
    assert "by hand" in message and str(tmp_path) in message
    assert list(tmp_path.iterdir()) == []  # no half-written file left behind


# -- MNIST and Fashion-MNIST -------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize(("name", "folder"), [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist(name: str, folder: str, gz: bool, tmp_path: Path):
    _, pixels = write_mnist(tmp_path, folder, gz=gz)
    cfg = {"name": name, "root": str(tmp_path), "val_size": 4}
    data = load_dataset(cfg)
    assert (len(data.train), len(data.val), len(data.test)) == (8, 4, 5)
    assert data.shape == (1, 28, 28)
    assert data.train.dynamic and not data.val.dynamic and not data.test.dynamic
    train = data.train.images
    assert 0 <= train.min() and train.max() <= 1
    expected = torch.from_numpy(pixels["train-images-idx3-ubyte"]).float().div(255).unsqueeze(1)
    # every training image is one of the written ones, as pixel / 255
    assert all((expected == image).all(dim=(1, 2, 3)).any() for image in train)
    assert_binary(data.val.images)
    assert_binary(data.test.images)
    again = load_dataset(cfg)
    assert torch.equal(data.val.images, again.val.images)
    assert torch.equal(data.test.images, again.test.images)
    assert torch.equal(data.train.images, again.train.images)


def test_mnist_val_size_too_large(tmp_path: Path):
    write_mnist(tmp_path, "MNIST")
    with pytest.raises(ConfigError, match="val_size=12"):
        load_dataset({"name": "mnist", "root": str(tmp_path), "val_size": 12})


def test_mnist_missing_file(tmp_path: Path):
    raw, _ = write_mnist(tmp_path, "MNIST")
    (raw / "t10k-images-idx3-ubyte.gz").unlink()
    message = assert_data_error("t10k-images-idx3-ubyte", {"name": "mnist", "root": str(tmp_path)})
    assert "dataset.download=true" in message


def test_mnist_corrupt_gz(tmp_path: Path):
    raw, _ = write_mnist(tmp_path, "MNIST")
    path = raw / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:200])
    message = assert_data_error(str(path), {"name": "mnist", "root": str(tmp_path)})
    assert "gzip" in message


def test_mnist_not_gzip_at_all(tmp_path: Path):
    raw, _ = write_mnist(tmp_path, "FashionMNIST")
    path = raw / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(b"<html>not found</html>")
    assert_data_error(str(path), {"name": "fashion_mnist", "root": str(tmp_path)})


def test_idx_wrong_magic(tmp_path: Path):
    raw, _ = write_mnist(tmp_path, "MNIST", gz=False)
    path = raw / "train-images-idx3-ubyte"
    data = bytearray(path.read_bytes())
    data[2:4] = b"\x08\x01"  # a labels file, not images
    path.write_bytes(bytes(data))
    message = assert_data_error(str(path), {"name": "mnist", "root": str(tmp_path)})
    assert "magic number 0x00000801, expected 0x00000803" in message


def test_idx_wrong_dims(tmp_path: Path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "train-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((12, 32, 32))))
    (raw / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((5, 28, 28))))
    message = assert_data_error("train-images-idx3-ubyte", {"name": "mnist", "root": str(tmp_path)})
    assert "[12, 32, 32], expected [N, 28, 28]" in message


def test_idx_size_mismatch(tmp_path: Path):
    raw, _ = write_mnist(tmp_path, "MNIST")
    path = raw / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-28]))
    message = assert_data_error(str(path), {"name": "mnist", "root": str(tmp_path)})
    assert "truncated or corrupt" in message


# -- Omniglot ----------------------------------------------------------------------------


def test_omniglot(tmp_path: Path):
    write_omniglot(tmp_path)
    cfg = {"name": "omniglot", "root": str(tmp_path), "val_size": 3}
    data = load_dataset(cfg)
    assert (len(data.train), len(data.val), len(data.test)) == (9, 3, 4)
    assert data.shape == (1, 28, 28)
    assert data.train.dynamic and not data.val.dynamic and not data.test.dynamic
    train = data.train.images
    assert 0 <= train.min() and train.max() == 1  # strokes are 1
    assert 0.05 < train.mean() < 0.1  # a 40x15 stroke covers 5.4% of the image
    assert (train[:, :, 0] == 0).all()  # the white border is 0
    assert 0 < ((train > 0) & (train < 1)).sum()  # antialiased edges
    assert_binary(data.val.images)
    assert_binary(data.test.images)
    again = load_dataset(cfg)
    assert torch.equal(data.val.images, again.val.images)
    assert torch.equal(data.test.images, again.test.images)


def test_omniglot_missing_directory(tmp_path: Path):
    base = write_omniglot(tmp_path)
    for path in sorted((base / "images_evaluation").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (base / "images_evaluation").rmdir()
    message = assert_data_error("images_evaluation", {"name": "omniglot", "root": str(tmp_path)})
    assert "dataset.download=true" in message


def test_omniglot_unreadable_image(tmp_path: Path):
    base = write_omniglot(tmp_path)
    path = next((base / "images_background").rglob("*.png"))
    path.write_bytes(b"not a png")
    assert_data_error(str(path), {"name": "omniglot", "root": str(tmp_path)})
