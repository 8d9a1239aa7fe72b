r"""CIFAR-10, SVHN, image folders and array files, on tiny files written in each layout.

Nothing here reads shared data or the network: every file is written into ``tmp_path``.
Each loader is reached through :func:`vaeflow.data.load_dataset`, as a config reaches it.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import sys
import types
import zlib
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
import yaml
from omegaconf import OmegaConf
from PIL import Image
from torch import Tensor

from vaeflow.data import DataSplits, load_dataset
from vaeflow.errors import ConfigError, DataError

CONF = Path(__file__).resolve().parents[1] / "conf" / "dataset"
CIFAR_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
SPLITS = ("train", "val", "test")


# -- checks shared by every loader -------------------------------------------------------


def fails(error: type[Exception], match: str, cfg: dict) -> str:
    r"""The one-line message of the ``error`` that loading ``cfg`` raises; it names ``match``."""
    with pytest.raises(error) as info:
        load_dataset(cfg)
    message = str(info.value)
    assert match in message, message
    assert "\n" not in message
    return message


def as_bytes(images: Tensor) -> np.ndarray:
    r"""The ``k`` of images whose values are exactly ``k / 255``, as uint8."""
    k = (images * 255).round()
    assert torch.equal(images, k / 255)
    return k.to(torch.uint8).numpy()


def same_images(images: Tensor, expected: np.ndarray | Tensor) -> bool:
    r"""Whether ``images`` are ``expected`` in some order (``[N, C, H, W]`` each)."""
    expected = torch.as_tensor(expected)
    if images.shape != expected.shape:
        return False
    key = [x.numpy().tobytes() for x in images.contiguous()]
    return sorted(key) == sorted(x.numpy().tobytes() for x in expected.to(images.dtype).contiguous())


def everything(data: DataSplits) -> Tensor:
    return torch.cat([data.train.images, data.val.images, data.test.images])


def assert_deterministic(cfg: dict) -> None:
    first, again = load_dataset(cfg), load_dataset(cfg)
    for split in SPLITS:
        assert torch.equal(first[split].images, again[split].images)
    other = load_dataset({**cfg, "split_seed": cfg.get("split_seed", 0) + 1})
    assert not torch.equal(first.val.images, other.val.images) or not torch.equal(
        first.train.images, other.train.images
    )


def units(pixels: np.ndarray) -> Tensor:
    return torch.from_numpy(pixels).float() / 255


def fake_torchvision(monkeypatch: pytest.MonkeyPatch, **classes: type) -> None:
    r"""Makes ``import torchvision.datasets`` give ``classes`` (and spares the real import)."""
    datasets = types.ModuleType("torchvision.datasets")
    for name, cls in classes.items():
        setattr(datasets, name, cls)
    torchvision = types.ModuleType("torchvision")
    torchvision.datasets = datasets
    monkeypatch.setitem(sys.modules, "torchvision", torchvision)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", datasets)


# -- CIFAR-10 ----------------------------------------------------------------------------


def write_cifar(root: Path, n: int = 3, n_test: int = 4) -> dict[str, np.ndarray]:
    r"""Six batch pickles as the original distribution has them; the images ``[N, 3, 32, 32]``."""
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    pixels = {}
    for name in [*CIFAR_TRAIN, "test_batch"]:
        count = n_test if name == "test_batch" else n
        data = rng.integers(0, 256, (count, 3072), dtype=np.uint8)
        batch = {b"batch_label": name.encode(), b"labels": rng.integers(0, 10, count).tolist(), b"data": data}
        with open(base / name, "wb") as f:
            pickle.dump(batch, f)
        pixels[name] = data.reshape(count, 3, 32, 32)
    return pixels


class Python2Pickler(pickle._Pickler):
    r"""Pickles as Python 2's cPickle wrote the CIFAR-10 files: strings as byte strings,
    arrays rebuilt by ``numpy.core.multiarray._reconstruct``."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_bytes(self, obj: bytes) -> None:
        n = len(obj)
        self.write(
            pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)
        )
        self.write(obj)
        self.memoize(obj)

    def save_str(self, obj: str) -> None:
        self.save_bytes(obj.encode("latin1"))

    def save_global(self, obj, name=None) -> None:
        module = "numpy.core.multiarray" if obj.__name__ == "_reconstruct" else obj.__module__
        self.write(pickle.GLOBAL + f"{module}\n{obj.__name__}\n".encode())
        self.memoize(obj)

    dispatch[bytes] = save_bytes
    dispatch[str] = save_str


class Hostile:
    r"""An object whose unpickling calls ``call(*args)``."""

    def __init__(self, call, *args) -> None:
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


def test_cifar10(tmp_path: Path):
    pixels = write_cifar(tmp_path)
    cfg = {"name": "cifar10", "root": str(tmp_path), "val_size": 4}
    data = load_dataset(cfg)
    assert (len(data.train), len(data.val), len(data.test)) == (11, 4, 4)
    assert data.shape == (3, 32, 32) and data.levels == 256
    assert not (data.train.dynamic or data.val.dynamic or data.test.dynamic)
    assert data.train.images.dtype == torch.float32
    # the test batch in file order, red, green then blue planes, each row by row, as k / 255
    assert torch.equal(data.test.images, units(pixels["test_batch"]))
    assert data.test.images[1, 2, 3, 4] == pixels["test_batch"][1].reshape(-1)[2 * 1024 + 3 * 32 + 4] / 255
    train = np.concatenate([pixels[name] for name in CIFAR_TRAIN])
    assert same_images(torch.cat([data.train.images, data.val.images]), units(train))
    assert_deterministic(cfg)


def test_cifar10_reads_python2_batches(tmp_path: Path):
    # the real files were pickled by Python 2: byte strings, numpy.core's _reconstruct
    pixels = write_cifar(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    buffer = io.BytesIO()
    Python2Pickler(buffer, protocol=2).dump(
        {"data": pixels["test_batch"].reshape(4, -1), "labels": [1, 2, 3, 4]}
    )
    path.write_bytes(buffer.getvalue())
    data = load_dataset({"name": "cifar10", "root": str(tmp_path), "val_size": 2})
    assert torch.equal(data.test.images, units(pixels["test_batch"]))


@pytest.mark.parametrize("call", ["system", "eval"])
def test_cifar10_refuses_a_hostile_pickle_without_running_it(call: str, tmp_path: Path):
    write_cifar(tmp_path)
    marker = tmp_path / "pwned"
    if call == "system":
        payload, asks = Hostile(os.system, f"touch {marker}"), f"{os.system.__module__}.system"
    else:
        payload, asks = Hostile(eval, f"__import__('pathlib').Path({str(marker)!r}).touch()"), "builtins.eval"
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    with open(path, "wb") as f:
        pickle.dump({b"data": payload, b"labels": []}, f)
    message = fails(DataError, f"{path} is not a CIFAR-10 batch (it asks to load {asks})", {
        "name": "cifar10", "root": str(tmp_path), "val_size": 2})  # fmt: skip
    assert "fresh copy" in message
    assert not marker.exists()


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"<html>404 not found</html>", "is not a readable CIFAR-10 batch"),
        (b"", "is not a readable CIFAR-10 batch"),
        (pickle.dumps({b"labels": [1]}), "it has no b'data' entry"),
        (pickle.dumps([1, 2]), "it holds a list, not a dictionary"),
        (pickle.dumps({b"data": np.zeros((2, 3072))}), "its b'data' is float64 [2, 3072]"),
        (pickle.dumps({b"data": np.zeros((2, 1024), np.uint8)}), "its b'data' is uint8 [2, 1024]"),
    ],
    ids=["html", "empty", "no-data", "list", "float", "shape"],
)
def test_cifar10_malformed_batch(content: bytes, match: str, tmp_path: Path):
    write_cifar(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(content)
    message = fails(DataError, match, {"name": "cifar10", "root": str(tmp_path), "val_size": 2})
    assert str(path) in message and "fresh copy" in message


def test_cifar10_truncated_batch(tmp_path: Path):
    write_cifar(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    path.write_bytes(path.read_bytes()[:-500])
    fails(DataError, f"{path} is not a readable CIFAR-10 batch", {"name": "cifar10", "root": str(tmp_path)})


def test_cifar10_missing_file(tmp_path: Path):
    write_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    message = fails(DataError, "data_batch_4 not found", {"name": "cifar10", "root": str(tmp_path)})
    assert "dataset.download=true" in message


def test_cifar10_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    calls = []

    class FakeCIFAR10:
        def __init__(self, root: str, download: bool = False) -> None:
            calls.append((root, download))
            write_cifar(Path(root))

    fake_torchvision(monkeypatch, CIFAR10=FakeCIFAR10)
    cfg = {"name": "cifar10", "root": str(tmp_path), "download": True, "val_size": 2}
    assert len(load_dataset(cfg).test) == 4 and calls == [(str(tmp_path), True)]
    load_dataset(cfg)
    assert len(calls) == 1  # nothing fetched once the files are there


def test_cifar10_takes_no_binarize(tmp_path: Path):
    write_cifar(tmp_path)
    fails(ConfigError, "binarize", {"name": "cifar10", "root": str(tmp_path), "binarize": "dynamic"})


# -- SVHN --------------------------------------------------------------------------------


def write_svhn(root: Path, n_train: int = 8, n_test: int = 3) -> dict[str, np.ndarray]:
    r"""The two ``.mat`` files; the images as stored, ``[32, 32, 3, N]``."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    images = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images[split] = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        labels = rng.integers(1, 11, (n, 1), dtype=np.uint8)
        scipy.io.savemat(root / f"{split}_32x32.mat", {"X": images[split], "y": labels})
    return images


def test_svhn(tmp_path: Path):
    images = write_svhn(tmp_path)
    cfg = {"name": "svhn", "root": str(tmp_path), "val_size": 3}
    data = load_dataset(cfg)
    assert (len(data.train), len(data.val), len(data.test)) == (5, 3, 3)
    assert data.shape == (3, 32, 32) and data.levels == 256
    # X[h, w, c, n] is image n's channel c at row h, column w
    assert torch.equal(data.test.images, units(images["test"].transpose(3, 2, 0, 1)))
    assert data.test.images[2, 1, 5, 7] == images["test"][5, 7, 1, 2] / 255
    train = units(images["train"].transpose(3, 2, 0, 1))
    assert same_images(torch.cat([data.train.images, data.val.images]), train)
    assert_deterministic(cfg)


@pytest.mark.parametrize(
    ("variables", "match"),
    [
        (None, "is not a readable .mat file"),
        ({"images": np.zeros((32, 32, 3, 2), np.uint8)}, "has no variable X (it holds images)"),
        (
            {"X": np.zeros((28, 28, 1, 2), np.uint8)},
            "holds X as uint8 [28, 28, 1, 2], expected uint8 [32, 32, 3, N]",
        ),
        ({"X": np.zeros((32, 32, 3, 2))}, "holds X as float64 [32, 32, 3, 2], expected uint8 [32, 32, 3, N]"),
    ],
    ids=["not-mat", "no-X", "shape", "dtype"],
)
def test_svhn_malformed_file(variables: dict | None, match: str, tmp_path: Path):
    write_svhn(tmp_path)
    path = tmp_path / "test_32x32.mat"
    if variables is None:
        path.write_bytes(b"<html>404 not found</html>")
    else:
        scipy.io.savemat(path, variables)
    message = fails(DataError, match, {"name": "svhn", "root": str(tmp_path), "val_size": 2})
    assert str(path) in message and "fresh copy" in message


def test_svhn_missing_file(tmp_path: Path):
    write_svhn(tmp_path)
    (tmp_path / "test_32x32.mat").unlink()
    message = fails(DataError, "test_32x32.mat not found", {"name": "svhn", "root": str(tmp_path)})
    assert "dataset.download=true" in message


def test_svhn_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    source = tmp_path / "source"
    write_svhn(source)
    calls = []

    class FakeSVHN:
        def __init__(self, root: str, split: str = "train", download: bool = False) -> None:
            calls.append((split, download))
            name = f"{split}_32x32.mat"
            (Path(root) / name).write_bytes((source / name).read_bytes())

    fake_torchvision(monkeypatch, SVHN=FakeSVHN)
    root = tmp_path / "root"
    root.mkdir()
    cfg = {"name": "svhn", "root": str(root), "download": True, "val_size": 2}
    assert len(load_dataset(cfg).test) == 3 and calls == [("train", True), ("test", True)]
    (root / "test_32x32.mat").unlink()
    load_dataset(cfg)
    assert calls[2:] == [("test", True)]  # only the missing file is fetched


# -- image folders -----------------------------------------------------------------------


def write_image(path: Path, pixels: np.ndarray) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return pixels


def png_bytes(samples: np.ndarray, colour_type: int) -> bytes:
    r"""A 16-bit PNG (PIL writes 16 bits for grayscale only): ``samples`` ``[H, W, channels]``."""
    h, w = samples.shape[:2]
    rows = b"".join(b"\x00" + samples[i].astype(">u2").tobytes() for i in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def write_gray_folder(root: Path, shape: tuple[int, int] = (6, 5)) -> np.ndarray:
    r"""Nine grayscale images in two class folders and at the top; ``[9, 1, H, W]``."""
    rng = np.random.default_rng(0)
    paths = [root / "a" / f"{i}.png" for i in range(4)] + [root / "b" / f"{i}.png" for i in range(4)]
    images = [
        write_image(path, rng.integers(0, 256, shape, dtype=np.uint8)) for path in [*paths, root / "top.png"]
    ]
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden.png").write_bytes(b"skipped: hidden")
    (root / ".cache").mkdir()
    (root / ".cache" / "x.png").write_bytes(b"skipped: in a hidden folder")
    return np.stack(images)[:, None]


def test_image_folder_grayscale(tmp_path: Path):
    expected = write_gray_folder(tmp_path)
    cfg = {"name": "image_folder", "root": str(tmp_path), "val_size": 2, "test_size": 0.25}
    data = load_dataset(cfg)
    assert (len(data.train), len(data.val), len(data.test)) == (5, 2, 2)  # 0.25 of 9: 2
    assert data.shape == (1, 6, 5) and data.levels == 256
    assert not data.train.dynamic
    assert same_images(everything(data), units(expected))
    as_bytes(everything(data))
    assert_deterministic(cfg)


def test_image_folder_default_fractions(tmp_path: Path):
    rng = np.random.default_rng(1)
    for i in range(25):
        write_image(tmp_path / "c" / f"{i:02d}.png", rng.integers(0, 256, (3, 3), dtype=np.uint8))
    data = load_dataset(OmegaConf.create({"name": "image_folder", "root": str(tmp_path)}))
    assert (len(data.train), len(data.val), len(data.test)) == (19, 3, 3)  # 0.1 of 25: 2.5, rounded up


def test_image_folder_colour(tmp_path: Path):
    rng = np.random.default_rng(2)
    rgb = write_image(tmp_path / "x" / "0_rgb.png", rng.integers(0, 256, (4, 6, 3), dtype=np.uint8))
    gray = write_image(tmp_path / "x" / "1_gray.PNG", rng.integers(0, 256, (4, 6), dtype=np.uint8))
    bmp = write_image(tmp_path / "y" / "2.bmp", rng.integers(0, 256, (4, 6, 3), dtype=np.uint8))
    write_image(tmp_path / "y" / "3.jpg", rng.integers(0, 256, (4, 6, 3), dtype=np.uint8))
    cfg = {"name": "image_folder", "root": str(tmp_path), "val_size": 1, "test_size": 1}
    data = load_dataset(cfg)
    assert data.shape == (3, 4, 6) and data.levels == 256
    k = as_bytes(everything(data))  # the JPEG too: 8-bit values
    lossless = [rgb.transpose(2, 0, 1), np.stack([gray] * 3), bmp.transpose(2, 0, 1)]
    for image in lossless:  # gray is replicated into three channels
        assert any(np.array_equal(image, x) for x in k)
    one = load_dataset({**cfg, "channels": 1})
    assert one.shape == (1, 4, 6)
    luma = np.asarray(Image.fromarray(rgb).convert("L"))
    assert any(np.array_equal(luma, x[0]) for x in as_bytes(everything(one)))
    assert any(np.array_equal(gray, x[0]) for x in as_bytes(everything(one)))


def test_image_folder_channels_3_on_grayscale(tmp_path: Path):
    expected = write_gray_folder(tmp_path)
    data = load_dataset(
        {"name": "image_folder", "root": str(tmp_path), "channels": 3, "val_size": 1, "test_size": 1}
    )
    assert data.shape == (3, 6, 5)
    assert same_images(everything(data), units(expected).expand(-1, 3, -1, -1))


def test_image_folder_given_splits(tmp_path: Path):
    rng = np.random.default_rng(3)
    train = [write_image(tmp_path / "train" / "c" / f"{i}.png", rng.integers(0, 256, (5, 5), dtype=np.uint8))
             for i in range(6)]  # fmt: skip
    val = [write_image(tmp_path / "val" / name, rng.integers(0, 256, (5, 5), dtype=np.uint8))
           for name in ("b.png", "a.png")]  # fmt: skip
    cfg = {"name": "image_folder", "root": str(tmp_path), "val_size": 0.5, "test_size": 2}
    data = load_dataset(cfg)
    assert (len(data.train), len(data.val), len(data.test)) == (4, 2, 2)
    assert torch.equal(data.val.images, units(np.stack([val[1], val[0]])[:, None]))  # in sorted order
    assert same_images(torch.cat([data.train.images, data.test.images]), units(np.stack(train)[:, None]))
    assert_deterministic(cfg)
    write_image(tmp_path / "test" / "t.png", rng.integers(0, 256, (5, 5), dtype=np.uint8))
    data = load_dataset(cfg)
    assert (len(data.train), len(data.val), len(data.test)) == (6, 2, 1)


def test_image_folder_binarize(tmp_path: Path):
    write_gray_folder(tmp_path)
    data = load_dataset(
        {"name": "image_folder", "root": str(tmp_path), "binarize": "dynamic", "test_size": 1}
    )
    assert data.levels == 2 and data.train.dynamic and not data.val.dynamic
    assert ((data.val.images == 0) | (data.val.images == 1)).all()


def test_image_folder_sizes(tmp_path: Path):
    write_gray_folder(tmp_path)
    odd = tmp_path / "b" / "2.png"
    write_image(odd, np.zeros((7, 5), np.uint8))
    cfg = {"name": "image_folder", "root": str(tmp_path)}
    message = fails(
        DataError, f"{odd} is 7x5 pixels (height x width) but {tmp_path / 'a' / '0.png'} is 6x5", cfg
    )
    assert "dataset.size=[H,W]" in message
    data = load_dataset(OmegaConf.create({**cfg, "size": [4, 3], "val_size": 1, "test_size": 1}))
    assert data.shape == (1, 4, 3)
    as_bytes(everything(data))


@pytest.mark.parametrize("layout", ["gray", "rgb"])
def test_image_folder_refuses_16_bit_images(layout: str, tmp_path: Path):
    write_gray_folder(tmp_path)
    path = tmp_path / "b" / "deep.png"
    if layout == "gray":  # PIL reads it as mode I;16
        Image.fromarray(np.full((6, 5), 40000, np.uint16)).save(path)
    else:  # PIL would read it as 8-bit RGB, dropping the low bytes
        path.write_bytes(png_bytes(np.full((6, 5, 3), 40000, np.uint16), colour_type=2))
    message = fails(DataError, f"{path} has 16-bit pixels; vaeflow reads 8-bit images", {
        "name": "image_folder", "root": str(tmp_path)})  # fmt: skip
    assert "convert it" in message


def test_image_folder_unreadable_image(tmp_path: Path):
    write_gray_folder(tmp_path)
    path = tmp_path / "a" / "1.png"
    path.write_bytes(b"not a png")
    fails(DataError, f"{path} is not a readable image", {"name": "image_folder", "root": str(tmp_path)})


def test_image_folder_layout_errors(tmp_path: Path):
    fails(DataError, "is not a directory", {"name": "image_folder", "root": str(tmp_path / "nowhere")})
    (tmp_path / "c").mkdir()
    fails(DataError, f"no images in {tmp_path}", {"name": "image_folder", "root": str(tmp_path)})
    write_image(tmp_path / "val" / "0.png", np.zeros((2, 2), np.uint8))
    fails(DataError, "has a val/ folder but no train/", {"name": "image_folder", "root": str(tmp_path)})
    (tmp_path / "train").mkdir()
    fails(DataError, f"no images in {tmp_path / 'train'}", {"name": "image_folder", "root": str(tmp_path)})


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"root": None}, "dataset.root is not set"),
        ({"channels": 2}, "dataset.channels=2: use auto, 1 (grayscale) or 3 (RGB)"),
        ({"channels": "rgb"}, "dataset.channels=rgb"),
        ({"size": [32]}, "dataset.size=[32]: use null"),
        ({"size": 32}, "dataset.size=32"),
        ({"val_size": 1.5}, "dataset.val_size=1.5: use a number of images"),
        ({"test_size": 0}, "dataset.test_size=0"),
        ({"val_size": "10%"}, "dataset.val_size=10%"),
        ({"val_size": True}, "dataset.val_size=True"),
        ({"binarize": "yes"}, "dataset.binarize=yes"),
        ({"val_size": 9, "test_size": 1}, "leave no training images"),
    ],
)
def test_image_folder_config_errors(options: dict, match: str, tmp_path: Path):
    write_gray_folder(tmp_path)
    fails(ConfigError, match, {"name": "image_folder", "root": str(tmp_path), **options})


# -- array files -------------------------------------------------------------------------


def random_images(shape: tuple[int, ...], dtype: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype == "uint8":
        return rng.integers(0, 256, shape, dtype=np.uint8)
    if dtype == "bool":
        return rng.random(shape) < 0.5
    return rng.random(shape).astype(dtype)


def channels_first(a: np.ndarray) -> Tensor:
    r"""What a loader should make of ``a``: ``[N, C, H, W]`` values in ``[0, 1]``."""
    batch = a[:, None] if a.ndim == 3 else a.transpose(0, 3, 1, 2)
    values = torch.from_numpy(np.ascontiguousarray(batch))
    return values.float() / 255 if a.dtype == np.uint8 else values.float()


@pytest.mark.parametrize(
    ("shape", "dtype", "levels"),
    [
        ((10, 4, 5), "uint8", 256),
        ((10, 4, 5, 3), "uint8", 256),
        ((10, 4, 5, 1), "uint8", 256),
        ((10, 4, 5), "bool", 2),
        ((10, 4, 5, 3), "float16", None),
        ((10, 4, 5), "float32", None),
        ((10, 4, 5, 1), "float64", None),
    ],
)
def test_arrays_npy(shape: tuple[int, ...], dtype: str, levels: int | None, tmp_path: Path):
    a = random_images(shape, dtype)
    path = tmp_path / "images.npy"
    np.save(path, a)
    cfg = {"name": "arrays", "root": str(path), "val_size": 2, "test_size": 0.3}
    data = load_dataset(cfg)
    channels = shape[3] if len(shape) == 4 else 1
    assert (len(data.train), len(data.val), len(data.test)) == (5, 2, 3)
    assert data.shape == (channels, 4, 5) and data.levels == levels
    assert all(data[split].images.dtype == torch.float32 for split in SPLITS)
    assert same_images(everything(data), channels_first(a))
    if dtype == "uint8":
        as_bytes(everything(data))
    assert_deterministic(cfg)


def test_arrays_channels_last(tmp_path: Path):
    a = np.zeros((3, 2, 4, 3), np.uint8)
    a[:, 1, 3, 2] = 255  # row 1, column 3, blue
    np.save(tmp_path / "x.npy", a)
    data = load_dataset({"name": "arrays", "root": str(tmp_path / "x.npy"), "val_size": 1, "test_size": 1})
    image = data.train.images[0]
    assert image[2, 1, 3] == 1 and image.sum() == 1


def test_arrays_npz(tmp_path: Path):
    splits = {"train": random_images((8, 3, 3), "uint8", 0), "val": random_images((2, 3, 3), "uint8", 1),
              "test": random_images((3, 3, 3), "uint8", 2)}  # fmt: skip
    path = tmp_path / "splits.npz"
    np.savez(path, **splits)
    data = load_dataset({"name": "arrays", "root": str(path)})
    for split, a in splits.items():  # the given splits as they are
        assert torch.equal(data[split].images, channels_first(a))
    np.savez(path, train=splits["train"], test=splits["test"])
    cfg = {"name": "arrays", "root": str(path), "val_size": 0.25}
    data = load_dataset(cfg)
    assert (len(data.train), len(data.val), len(data.test)) == (6, 2, 3)
    assert torch.equal(data.test.images, channels_first(splits["test"]))
    assert same_images(torch.cat([data.train.images, data.val.images]), channels_first(splits["train"]))
    assert_deterministic(cfg)
    np.savez_compressed(path, train=splits["train"])
    data = load_dataset({"name": "arrays", "root": str(path), "val_size": 1, "test_size": 2})
    assert (len(data.train), len(data.val), len(data.test)) == (5, 1, 2)


def test_arrays_binarize(tmp_path: Path):
    np.save(tmp_path / "x.npy", random_images((10, 3, 3), "uint8"))
    cfg = {"name": "arrays", "root": str(tmp_path / "x.npy"), "binarize": "static"}
    data = load_dataset(cfg)
    assert data.levels == 2 and not data.train.dynamic
    assert all(((data[s].images == 0) | (data[s].images == 1)).all() for s in SPLITS)


LAYOUT = "vaeflow reads images [N, H, W] or [N, H, W, C] with C 1 or 3 (channels last)"


@pytest.mark.parametrize(
    ("a", "match"),
    [
        (np.full((4, 3, 3), 1.5, np.float32), "has values in [1.5, 1.5], outside [0, 1]"),
        (np.full((4, 3, 3), -0.25), "has values in [-0.25, -0.25], outside [0, 1]"),
        (np.full((4, 3, 3), np.nan, np.float32), "has NaN values"),
        (np.full((4, 3, 3), np.inf, np.float32), "outside [0, 1]"),
        (np.zeros((4, 9), np.uint8), "has shape [4, 9]"),
        (np.zeros((4, 1, 3, 3, 1), np.uint8), "has shape [4, 1, 3, 3, 1]"),
        (np.zeros((4, 3, 3, 2), np.uint8), "whose last axis is not 1 or 3 channels"),
        (np.zeros((4, 3, 8, 8), np.uint8), "if it is [N, C, H, W], save np.moveaxis(x, 1, -1)"),
        (np.zeros((4, 3, 3), np.int32), "holds int32 values; vaeflow reads"),
        (np.zeros((4, 3, 3), np.complex64), "holds complex64 values"),
        (np.zeros((0, 3, 3), np.uint8), "holds no images"),
    ],
    ids=[
        "above-1",
        "below-0",
        "nan",
        "inf",
        "ndim-2",
        "ndim-5",
        "two-channels",
        "channels-first",
        "int32",
        "complex",
        "empty",
    ],  # fmt: skip
)
def test_arrays_refuses_malformed_arrays(a: np.ndarray, match: str, tmp_path: Path):
    path = tmp_path / "x.npy"
    np.save(path, a)
    message = fails(DataError, match, {"name": "arrays", "root": str(path)})
    assert f"arrays: {path} " in message and LAYOUT in message


def test_arrays_refuses_object_arrays_without_unpickling(tmp_path: Path):
    marker = tmp_path / "pwned"
    a = np.empty(2, dtype=object)
    a[0] = Hostile(os.system, f"touch {marker}")
    path = tmp_path / "x.npy"
    np.save(path, a, allow_pickle=True)
    message = fails(
        DataError, f"{path} is not a .npy or .npz file of images", {"name": "arrays", "root": str(path)}
    )
    assert "[N, H, W]" in message and not marker.exists()
    np.savez(tmp_path / "x.npz", train=a)
    fails(
        DataError, "is not a .npy or .npz file of images", {"name": "arrays", "root": str(tmp_path / "x.npz")}
    )
    assert not marker.exists()


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"train": np.zeros((4, 3, 3), np.uint8), "test": np.zeros((2, 3, 4), np.uint8)},
         "has test images of shape [1, 3, 4] (C, H, W) but train images of shape [1, 3, 3]"),
        ({"train": np.zeros((4, 3, 3), np.uint8), "val": np.zeros((2, 3, 3, 3), np.uint8)},
         "has val images of shape [3, 3, 3]"),
        ({"train": np.zeros((4, 3, 3), np.uint8), "test": np.zeros((2, 3, 3), np.float32)},
         "has test of float32 but train of uint8; save every split with one kind of values"),
        ({"images": np.zeros((4, 3, 3), np.uint8)}, "holds the arrays images; a .npz must hold train"),
        ({"train": np.zeros((4, 3, 3), np.uint8), "labels": np.zeros(4)}, "rename or remove the others"),
        ({"train": np.zeros((4, 3, 3), np.uint8), "test": np.full((2, 3, 3), 2.0)},
         "['test'] has values in [2, 2], outside [0, 1]"),
    ],
    ids=["test-shape", "val-channels", "kinds", "no-train", "extra", "bad-test"],
)  # fmt: skip
def test_arrays_refuses_malformed_npz(arrays: dict, match: str, tmp_path: Path):
    path = tmp_path / "x.npz"
    np.savez(path, **arrays)
    fails(DataError, match, {"name": "arrays", "root": str(path)})


def test_arrays_file_errors(tmp_path: Path):
    fails(ConfigError, "dataset.root is not set", {"name": "arrays"})
    fails(DataError, "nowhere.npy not found", {"name": "arrays", "root": str(tmp_path / "nowhere.npy")})
    path = tmp_path / "x.npy"
    path.write_bytes(b"<html>404 not found</html>")
    fails(DataError, f"{path} is not a .npy or .npz file of images", {"name": "arrays", "root": str(path)})
    np.save(path, np.zeros((10, 3, 3), np.uint8))
    fails(ConfigError, "dataset.test_size=2.0", {"name": "arrays", "root": str(path), "test_size": 2.0})
    fails(ConfigError, "dataset.val_size=0.0", {"name": "arrays", "root": str(path), "val_size": 0.0})


# -- the configs match their loaders -----------------------------------------------------


@pytest.mark.parametrize("name", ["cifar10", "svhn", "image_folder", "arrays"])
def test_configs(name: str, tmp_path: Path):
    text = (CONF / f"{name}.yaml").read_text()
    assert text.startswith("# ")
    cfg = yaml.safe_load(text)
    assert cfg["name"] == name
    if name == "cifar10":
        assert (cfg["root"], cfg["download"], cfg["val_size"]) == ("data", False, 5000)
        write_cifar(tmp_path)
        cfg.update(root=str(tmp_path), val_size=3)
    elif name == "svhn":
        assert (cfg["root"], cfg["download"], cfg["val_size"]) == ("data", False, 5000)
        write_svhn(tmp_path)
        cfg.update(root=str(tmp_path), val_size=3)
    elif name == "image_folder":
        assert cfg["root"] is None and (cfg["channels"], cfg["size"], cfg["binarize"]) == (
            "auto",
            None,
            "none",
        )
        fails(ConfigError, "dataset.root is not set", cfg)
        write_gray_folder(tmp_path)
        cfg.update(root=str(tmp_path))
    else:
        assert cfg["root"] is None and cfg["binarize"] == "none"
        fails(ConfigError, "dataset.root is not set", cfg)
        np.save(tmp_path / "x.npy", random_images((20, 3, 3), "uint8"))
        cfg.update(root=str(tmp_path / "x.npy"))
    assert isinstance(load_dataset(cfg), DataSplits)  # every key is a loader argument
