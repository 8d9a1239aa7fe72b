r"""The one summary statistic of vaeflow: a mean and its standard error.

Every figure with a ``± se`` (the trainer's test figures, ``vaeflow eval``, the inference
gaps, the report's means over seeds and its paired differences, the benchmarks) comes from
:func:`mean_se`; every bits/dim from :func:`bits_per_dim`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

__all__ = ["mean_se", "bits_per_dim"]


def mean_se(values: Iterable[Any] | Any) -> tuple[float, float]:
    r"""Mean and standard error of the mean, :math:`s / \sqrt{n}` with the unbiased
    sample standard deviation :math:`s`, over the finite values (``None`` and NaN are left
    out). ``(nan, nan)`` without any; the standard error is NaN for a single value.

    Arguments:
        values: numbers, or a tensor (any shape, any device; read once).

    Example:
        >>> mean, se = mean_se([1.0, 2.0, 3.0, None, float("nan")])
        >>> mean, round(se, 6)  # s = 1 over 3 values
        (2.0, 0.57735)
    """
    if hasattr(values, "detach"):  # a tensor: one copy to the host, in float64
        values = values.detach().double().flatten().cpu().tolist()
    finite = [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]
    n = len(finite)
    if n == 0:
        return math.nan, math.nan
    mean = math.fsum(finite) / n
    if n == 1:
        return mean, math.nan
    variance = math.fsum((v - mean) ** 2 for v in finite) / (n - 1)
    return mean, math.sqrt(variance / n)


def bits_per_dim(nats: float | None, dims: int, levels: int | None) -> float | None:
    r"""``nats / (D ln 2)``: an NLL of discrete data (or its standard error, or a difference
    of two) in bits per dimension; ``None`` for continuous data (``levels=None``), whose NLL
    is a density's and has no bit count. Every likelihood's NLL is of the discrete data: a
    density on dequantized data includes the log of the bin width (:mod:`vaeflow.likelihoods.base`)."""
    return None if levels is None or nats is None else nats / (dims * math.log(2))
