r"""A reader for ``.amat`` text files of binary images.

The format of the static binarization of MNIST (Larochelle & Murray 2011, "The Neural
Autoregressive Distribution Estimator", AISTATS): one image per line, its values ``0`` or
``1`` separated by single spaces, row-major. A canonical file is read in one vectorized
pass; only when that pass finds something unexpected is the file read again line by line,
to say exactly which line is wrong (or to accept it if the difference is only whitespace,
such as Windows line endings).

The reader says what is wrong with the file; the loader that calls it adds what to do.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vaeflow.errors import DataError

__all__ = ["read_amat"]

_SPACE, _NEWLINE, _ZERO = ord(" "), ord("\n"), ord("0")


def read_amat(path: str | Path, width: int) -> np.ndarray:
    r"""Reads a binary ``.amat`` file.

    Arguments:
        path: the file.
        width: values per line (784 for 28x28 images).

    Returns:
        A ``uint8`` array ``[N, width]`` of zeros and ones.

    Raises:
        DataError: the file is missing, empty, truncated, has a line with the wrong number
            of values or a value other than 0 or 1. The message names the file and line.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path} not found") from None
    except OSError as e:
        raise DataError(f"{path} cannot be read ({e.strerror})") from None
    bits = _read_canonical(data, width)
    return bits if bits is not None else _read_lines(data, width, path)


def _read_canonical(data: bytes, width: int) -> np.ndarray | None:
    r"""The fast path: a file of exactly ``"v v ... v\n"`` lines, or ``None``."""
    stride = 2 * width
    if not data or len(data) % stride:
        return None
    rows = np.frombuffer(data, dtype=np.uint8).reshape(-1, stride)
    separators = rows[:, 1::2]
    if not (separators[:, :-1] == _SPACE).all() or not (separators[:, -1] == _NEWLINE).all():
        return None
    # uint8 wraps around below '0', so one comparison checks both bounds
    bits = rows[:, 0::2] - np.uint8(_ZERO)
    if not (bits <= 1).all():
        return None
    return bits


def _read_lines(data: bytes, width: int, path: Path) -> np.ndarray:
    r"""The slow path: finds the first bad line, or parses a file that differs only in
    whitespace."""
    if not data.strip():
        raise DataError(f"{path} is empty")
    lines = data.split(b"\n")
    complete = data.endswith(b"\n")
    if complete:
        lines.pop()  # the empty string after the final newline
    rows = []
    for number, line in enumerate(lines, start=1):
        values = line.split()
        if len(values) != width:
            if number == len(lines) and not complete and len(values) < width:
                raise DataError(
                    f"{path} is truncated: its last line ({number}) has {len(values)} of {width} values"
                )
            raise DataError(f"{path} line {number} has {len(values)} values, expected {width}")
        row = np.frombuffer(b"".join(values), dtype=np.uint8) - np.uint8(_ZERO)
        if len(row) != width or not (row <= 1).all():
            column, value = next((i, v) for i, v in enumerate(values, 1) if v not in (b"0", b"1"))
            shown = value[:20].decode("ascii", errors="replace")
            raise DataError(f"{path} line {number} value {column} is {shown!r}, expected 0 or 1")
        rows.append(row)
    return np.stack(rows)
