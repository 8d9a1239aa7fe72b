r"""The machine a benchmark runs on: its float32 matmul limit, its load, the process's
peak memory, and the time of a call with the cores the other processes took meanwhile."""

from __future__ import annotations

import os
import resource
import time

import torch

from vaeflow.devices import synchronize

__all__ = ["cpu_seconds", "timed", "matmul_flops_per_s", "load_avg", "peak_rss_mb"]


def cpu_seconds() -> tuple[float, float] | None:
    r"""(busy CPU seconds of the whole machine, CPU seconds of this process), or None."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return None
    usage = resource.getrusage(resource.RUSAGE_SELF)
    busy = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait
    return busy, usage.ru_utime + usage.ru_stime


def timed(function, device: torch.device) -> tuple[float, float | None]:
    r"""``(seconds, cores the other processes kept busy meanwhile)`` of one call."""
    synchronize(device)
    before, start = cpu_seconds(), time.perf_counter()
    function()
    synchronize(device)
    seconds, after = time.perf_counter() - start, cpu_seconds()
    if before is None or after is None:
        return seconds, None
    others = (after[0] - before[0]) - (after[1] - before[1])
    return seconds, max(others, 0.0) / seconds


def matmul_flops_per_s(
    size: int, seconds: float, device: torch.device, clean: float = float("inf")
) -> tuple[float, float | None]:
    r"""Best float32 FLOP/s of ``[size, size] @ [size, size]`` over ``seconds`` (products
    during which the others used fewer than ``clean`` cores), and the others' load then."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    out = torch.empty(size, size, device=device)
    torch.mm(a, b, out=out)
    best, load, start = 0.0, None, time.perf_counter()
    while time.perf_counter() - start < seconds:
        t, others = timed(lambda: torch.mm(a, b, out=out), device)
        if (others is None or others < clean) and 2 * size**3 / t > best:
            best, load = 2 * size**3 / t, others
    return best, load


def load_avg() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
