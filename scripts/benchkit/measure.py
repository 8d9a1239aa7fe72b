r"""One measurement: a family trained as each implementation for a fixed number of steps
(timed windows in turn when there are several), its FLOPs, its importance-weighted
evaluation, and the runs of several seeds merged into one row."""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchkit.data import cycle, load_splits, val_subset
from benchkit.machine import peak_rss_mb
from benchkit.subjects import Subject, pyro_subject, vaeflow_subject
from vaeflow.devices import synchronize
from vaeflow.stats import mean_se

__all__ = ["merge", "Training", "measure_seed", "measure_iw"]


def merge(runs: list[dict[str, Any]]) -> dict[str, Any]:
    r"""One row from the runs of several seeds: images/s is the median of every timed
    window, the ELBOs are means over seeds (with their standard error), the peak RSS the
    largest; FLOPs and IW figures come from the first seed."""
    failed = [r for r in runs if "error" in r]
    if failed:
        return failed[0]
    result = dict(runs[0])
    windows = [w for r in runs for w in r["images_per_s_windows"]]
    result["images_per_s_windows"] = windows
    result["images_per_s"] = statistics.median(windows) if windows else None
    result["seeds"] = [
        {k: r[k] for k in ("seed", "images_per_s", "train_elbo", "val_elbo", "skipped_steps")} for r in runs
    ]
    for key in ("train_elbo", "train_rec", "train_kl", "val_elbo"):
        result[key], se = mean_se([r[key] for r in runs])
        if len(runs) > 1:
            result[f"{key}_se"] = se
    result["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    return result


class Training:
    r"""The training run of one subject: its batches, the ELBO of its last steps, and the
    images/s of its timed windows. The sums stay on the device until :meth:`tail_elbo`."""

    def __init__(self, args: argparse.Namespace, subject: Subject) -> None:
        self.args, self.subject = args, subject
        self.device = torch.device(args.device)
        self.batches = cycle(subject.loader)
        self.done = 0
        self.tail = max(1, min(args.steps // 5, 100))
        # [rec, kl] of the last steps, their images, and the skipped steps
        self.sums = torch.zeros(4, dtype=torch.float64, device=self.device)
        self.rates: list[float] = []
        self.seconds = 0.0

    def run(self, steps: int, timed: bool) -> None:
        synchronize(self.device)
        start = time.perf_counter()
        for _ in range(steps):
            x = next(self.batches)
            values, taken = self.subject.step(x)
            if self.done >= self.args.steps - self.tail:
                self.sums[:2] += torch.where(taken, values, 0.0)
                self.sums[2] += taken * x.shape[0]
            self.sums[3] += ~taken
            self.done += 1
        synchronize(self.device)
        seconds = time.perf_counter() - start
        self.seconds += seconds
        if timed and steps:
            self.rates.append(steps * self.args.batch_size / seconds)

    def tail_elbo(self) -> tuple[float, float, int]:
        r"""``(rec, kl)`` per image over the last steps, and the steps skipped."""
        rec, kl, seen, skipped = self.sums.tolist()
        return rec / max(seen, 1), kl / max(seen, 1), int(skipped)


def measure_seed(args: argparse.Namespace, impls: list[str], family: str, extras: bool = True) -> list[dict]:
    r"""Trains ``family`` as each implementation in ``impls`` for ``--steps`` steps from
    ``args.seed`` and measures it; several implementations take turns window by window, so
    that they see the same load. ``extras``: also the FLOPs and the importance-weighted
    evaluation."""
    device = torch.device(args.device)
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    data, data_desc = load_splits(args)
    real = data.name == "binarized_mnist"
    subjects = []
    try:
        for impl in impls:
            make = pyro_subject if impl == "pyro" else vaeflow_subject
            subjects.append(make(args, family, data) if impl == "pyro" else make(args, family, data, real))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        runs = [Training(args, s) for s in subjects]
        for run in runs:
            run.run(args.warmup, timed=False)
        windows = (args.steps - args.warmup) // args.window
        for _ in range(windows):
            for run in runs:
                run.run(args.window, timed=True)
        for run in runs:
            run.run(args.steps - run.done, timed=False)

        images = val_subset(data, args.val_images).to(device)
        results = []
        for impl, subject, run in zip(impls, subjects, runs):
            rec, kl, skipped = run.tail_elbo()
            result: dict[str, Any] = {
                "impl": impl,
                "family": family,
                "seed": args.seed,
                "parameters": sum(p.numel() for p in subject.model.parameters()),
                "images_per_s": statistics.median(run.rates) if run.rates else None,
                "images_per_s_windows": run.rates,
                "train_seconds": run.seconds,
                "steps": run.done,
                "skipped_steps": skipped,
                "train_elbo": rec - kl,
                "train_rec": rec,
                "train_kl": kl,
                "train_elbo_steps": run.tail,
                "data": data_desc,
                "val_elbo": subject.val_elbo(images),
                "val_images": images.shape[0],
            }
            if extras:
                x = next(run.batches)
                with FlopCounterMode(display=False) as counter:
                    subject.loss(x).backward()
                subject.model.zero_grad(set_to_none=True)
                result["flops_per_step"] = counter.get_total_flops()
                if args.iw_k > 0:
                    result |= measure_iw(args, subject, images[: args.iw_examples], device)
            results.append(result)
        for result in results:
            result["peak_rss_mb"] = peak_rss_mb()
            result["peak_rss_of"] = "+".join(impls)
            if device.type == "cuda":
                result["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        return results
    finally:
        for subject in subjects:
            subject.close()


def measure_iw(args: argparse.Namespace, subject: Subject, x: torch.Tensor, device: torch.device) -> dict:
    r"""Importance-weighted evaluation: samples/s (median of repeats) and FLOPs per sample."""
    k = args.iw_k
    model = subject.model
    model.eval()
    counts = []
    for kk in (64, 128):  # FLOPs per sample and per example, from two counts
        with FlopCounterMode(display=False) as counter:
            subject.iw(x[:2], kk)
        counts.append(counter.get_total_flops())
    per_sample = (counts[1] - counts[0]) / (2 * 64)
    per_example = max(counts[0] / 2 - 64 * per_sample, 0.0)
    subject.iw(x[:1], min(k, 256))  # warm-up
    rates = []
    started = time.perf_counter()
    for _ in range(args.iw_repeats):
        synchronize(device)
        t = time.perf_counter()
        subject.iw(x, k)
        synchronize(device)
        rates.append(x.shape[0] * k / (time.perf_counter() - t))
        if time.perf_counter() - started > args.iw_max_seconds:
            break
    model.train()
    rate = statistics.median(rates)
    return {
        "iw_k": k,
        "iw_examples": x.shape[0],
        "iw_samples_per_s": rate,
        "iw_samples_per_s_runs": rates,
        "iw_flops_per_sample": per_sample + per_example / k,
        "iw_path": subject.iw_path,
    }
