r"""The one summary statistic of vaeflow: a mean and its standard error.

Every figure with a ``± se`` (the trainer's test figures, ``vaeflow eval``, the inference
gaps, the report's means over seeds and its paired differences, the benchmarks) comes from
:func:`mean_se`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

__all__ = ["mean_se"]


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
