r"""A reader for IDX files, the format of MNIST and Fashion-MNIST.

An IDX file (LeCun et al. 1998, http://yann.lecun.com/exdb/mnist/) is a big-endian header
``0x00 0x00 <type> <ndim>``, then ``ndim`` 32-bit dimensions, then the values. Files may be
gzip-compressed (``.gz``), as they are distributed. Every part is checked: a bad gzip
stream, a magic number of another type or rank, unexpected dimensions and a byte count
that disagrees with the header all raise :class:`~vaeflow.errors.DataError` naming the
file. Nothing is written next to the file, so its directory may be read-only.

The reader says what is wrong with the file; the loader that calls it adds what to do.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vaeflow.errors import DataError

__all__ = ["IDX_TYPES", "read_idx"]

IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(
    path: str | Path,
    *,
    type_code: int = 0x08,
    shape: Sequence[int | None] | None = None,
) -> np.ndarray:
    r"""Reads an IDX file, gzip-compressed if its name ends with ``.gz``.

    Arguments:
        path: the file.
        type_code: the value type the file must hold (``0x08``: unsigned bytes).
        shape: the dimensions it must have, ``None`` for any size along a dimension
            (``(None, 28, 28)`` for MNIST images); if not given, any.

    Returns:
        A read-only array of the file's dimensions.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataError(f"{path} is too short ({len(data)} bytes) to be an IDX file")
    zeros, code, ndim = data[:2], data[2], data[3]
    want_ndim = len(shape) if shape is not None else ndim
    if zeros != b"\0\0" or code != type_code or ndim != want_ndim or ndim == 0:
        got = int.from_bytes(data[:4], "big")
        want = (type_code << 8) | want_ndim
        raise DataError(
            f"{path} has magic number 0x{got:08x}, expected 0x{want:08x} "
            f"(an IDX file of type 0x{type_code:02x} with {want_ndim} dimensions)"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path} is truncated inside its header ({len(data)} bytes)")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    if shape is not None and any(w is not None and w != d for w, d in zip(shape, dims, strict=True)):
        expected = ", ".join("N" if w is None else str(w) for w in shape)
        raise DataError(f"{path} has dimensions {list(dims)}, expected [{expected}]")
    dtype = IDX_TYPES[code]
    size = math.prod(dims) * dtype.itemsize
    if len(data) - header != size:
        raise DataError(
            f"{path} holds {len(data) - header} bytes of values, its header "
            f"{list(dims)} says {size}: the file is truncated or corrupt"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)


def _read_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path} not found") from None
    except OSError as e:
        raise DataError(f"{path} cannot be read ({e.strerror})") from None
    if path.suffix != ".gz":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path} is not a valid gzip file ({e})") from None
