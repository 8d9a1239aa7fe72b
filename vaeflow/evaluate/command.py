r"""``vaeflow eval``'s work: :func:`evaluate` checks the config, loads a trained run, computes
the IW-NLL (and optionally the inference gaps) of a split, and writes ``eval.json``,
``per_example.pt`` and ``tb/`` with a table of the results in the log.
"""

from __future__ import annotations

import logging
import math
import resource
import time
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from vaeflow.checkpoint import write_json_atomic
from vaeflow.checks import choice, integer, number, text
from vaeflow.data import binarize_fixed, seeded_subset
from vaeflow.data.base import dequantize
from vaeflow.devices import resolve_device
from vaeflow.errors import ConfigError, DataError
from vaeflow.evaluate.estimator import (
    IWEstimate,
    chunk_budget_mb,
    importance_weighted,
    keep_freed_memory,
    pairs_per_chunk,
    plan_chunks,
)
from vaeflow.evaluate.gaps import inference_gaps
from vaeflow.evaluate.quadrature import MAX_QUADRATURE_DIM, Quadrature, quadrature
from vaeflow.evaluate.runs import CHECKPOINTS, load_trained, resolve_run
from vaeflow.progress import TaskProgress, progress_mode
from vaeflow.randomness import Stream, stream_seed
from vaeflow.stats import bits_per_dim, mean_se

__all__ = ["SPLITS", "evaluate"]

log = logging.getLogger("vaeflow")

SPLITS = ("test", "val", "train")
#: the variance of a latent's posterior mean across the data above which it is active (Burda et al. 2016)
ACTIVE_UNIT = 0.01


def _check(cfg: DictConfig) -> None:
    r"""Every option of ``conf/eval.yaml``, checked (never coerced): one line for the first
    that cannot work."""
    integer("k", cfg.k, 1, advice="the importance-weighted estimate needs an integer k >= 1 samples")
    choice("split", cfg.split, SPLITS)
    choice("checkpoint", cfg.checkpoint, CHECKPOINTS)
    integer("limit", cfg.get("limit"), 0, none=True)
    integer("seed", cfg.seed)
    number("memory_mb", cfg.memory_mb, 0, above=True, none=True, advice="use null or a budget > 0 (MiB)")
    integer("batch_size", cfg.get("batch_size"), 1, none=True)
    integer("threads", cfg.get("threads"), 1, none=True)
    choice("progress", cfg.progress, ("auto", "rich", "plain"))
    text("dataset_root", cfg.get("dataset_root"), none=True)
    gaps = _gaps_config(cfg)
    if gaps["enabled"]:
        integer("gaps.n", gaps["n"], 1)
        integer("gaps.k", gaps["k"], 1, none=True)
        integer("gaps.steps", gaps["steps"], 0)
        number("gaps.lr", gaps["lr"], 0, above=True)
        integer("gaps.samples", gaps["samples"], 1)
        integer("gaps.flow_depth", gaps["flow_depth"], 0)
    integer("quadrature.points", _quadrature_config(cfg)["points"], 2, none=True)


def _section(cfg: DictConfig, name: str, switches: Sequence[Any] = (True, False)) -> dict[str, Any]:
    r"""``cfg.<name>`` over the defaults of the packaged ``conf/eval.yaml``; a bare value
    (``gaps=true`` given straight to Hydra replaces the group) sets its ``enabled``."""
    defaults = OmegaConf.load(resources.files("vaeflow.conf").joinpath("eval.yaml"))[name]
    value = cfg.get(name)
    if isinstance(value, DictConfig):
        merged = {**OmegaConf.to_container(defaults), **OmegaConf.to_container(value, resolve=True)}
    else:
        merged = {**OmegaConf.to_container(defaults), "enabled": value}
    enabled = merged["enabled"]
    if not any(enabled is s if isinstance(s, bool) else enabled == s for s in switches):
        listed = " or ".join(f"{name}={str(s).lower()}" for s in switches)
        raise ConfigError(f"{name}={enabled}: use {listed}")
    return merged


def _gaps_config(cfg: DictConfig) -> dict[str, Any]:
    return _section(cfg, "gaps")


def _quadrature_config(cfg: DictConfig) -> dict[str, Any]:
    return _section(cfg, "quadrature", ("auto", True, False))


def _table(rows: Sequence[tuple[str, str, str]], header: tuple[str, str, str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    lines = [f"{header[0]:<{widths[0]}}  {header[1]:>{widths[1]}}  {header[2]:>{widths[2]}}"]
    lines.append("-" * len(lines[0]))
    lines += [f"{a:<{widths[0]}}  {b:>{widths[1]}}  {c:>{widths[2]}}" for a, b, c in rows]
    return "\n".join(lines)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def likelihood_record(model: torch.nn.Module) -> dict[str, Any]:
    r"""What ``eval.json`` says of the likelihood and of the data it scores."""
    lik = model.likelihood
    dequantization = (
        f"uniform: y = (k + u) / {lik.levels}; log p includes -D log {lik.levels} (the bin width); "
        "validation and test dequantized once, seeded; training afresh at each draw"
        if lik.dequantizes
        else "none"
    )
    return {"name": lik.name, "levels": lik.levels, "dequantization": dequantization}


def _quadrature_figures(quad: Quadrature, est: IWEstimate, dims: int, levels: int | None) -> dict[str, Any]:
    r"""``eval.json``'s quadrature figures: the exact NLL, its grid error, and how far the
    importance-weighted estimate falls below it on the same examples."""
    nll, nll_se = mean_se(-quad.log_px)
    deficit, deficit_se = mean_se(quad.log_px - est.log_px)
    return {
        "eval/quad_nll": nll,
        "eval/quad_nll_se": nll_se,
        "eval/quad_bits_per_dim": bits_per_dim(nll, dims, levels),
        "eval/quad_error_mean": float(quad.error.mean()),
        "eval/quad_error_max": float(quad.error.max()),
        "eval/iw_deficit": deficit,
        "eval/iw_deficit_se": deficit_se,
    }


def _peak_memory_mb(device: torch.device) -> dict[str, float]:
    peak = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        peak["peak_cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return peak


def evaluate(cfg: DictConfig, out_dir: str | Path, *, multirun: bool = False) -> dict[str, Any]:
    r"""Evaluates a trained run (``conf/eval.yaml``) and writes ``eval.json``,
    ``per_example.pt`` and ``tb/`` under ``out_dir``.

    Loads the checkpoint with ``weights_only=True`` and the config saved in it, rebuilds
    the model, and computes the k-sample importance-weighted NLL of every example of the
    split (or of a seeded random subset of ``limit`` examples), the ELBO and KL on the
    same samples and bits/dim; with ``gaps.enabled`` also the inference gaps on a seeded
    subset of ``gaps.n`` of those examples.

    Arguments:
        cfg: the composed config (``conf/eval.yaml``).
        out_dir: this evaluation's directory (``<run>/eval/<time>_<split>_k<k>``).
        multirun: whether this is one job of a sweep (plain progress lines).

    Returns:
        What ``eval.json`` holds.
    """
    wall_start = time.perf_counter()
    out_dir = Path(out_dir)
    _check(cfg)
    ckpt_path, run_dir = resolve_run(cfg.run, str(cfg.checkpoint))
    if out_dir.resolve() == run_dir or (out_dir / "checkpoints").exists():
        raise ConfigError(f"eval output dir {out_dir} is a training run; write evaluations under <run>/eval/")
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    device = resolve_device(cfg.device, key="device")
    if device.type == "cpu":
        keep_freed_memory()
    mode = progress_mode(str(cfg.progress), multirun, key="progress")
    k, seed = int(cfg.k), int(cfg.seed)

    try:
        trained = load_trained(ckpt_path, dataset_root=cfg.get("dataset_root"), device=device)
    except DataError as e:
        raise DataError(f"{e} (vaeflow eval: point dataset_root=<dir> at the data)") from None
    model, data, train_cfg, dataset_cfg = trained.model, trained.data, trained.config, trained.dataset

    split = data[str(cfg.split)]
    ids = seeded_subset(len(split), cfg.get("limit"), seed)
    images = split.images[ids]
    if split.dynamic:  # evaluation needs fixed bits: binarize a dynamic split once, seeded
        images = binarize_fixed(images, seed)
    if split.dequantize:  # and fixed values: dequantize a training split once, seeded
        images = dequantize(images, split.dequantize, torch.Generator().manual_seed(seed))
    n = images.shape[0]
    dims = math.prod(data.shape)
    memory_mb = chunk_budget_mb(cfg.memory_mb, device)
    max_pairs, per_pair = pairs_per_chunk(model, images[:1], memory_mb)
    examples, samples = plan_chunks(k, n, max_pairs, cfg.get("batch_size"))
    log.info(
        "vaeflow eval: %s (epoch %s), %s %s split: %d examples, k=%d, seed %d; device %s, %d threads; "
        "chunks of %d examples x %d samples (%.0f KiB per pair, budget %g MiB); output %s",
        ckpt_path,
        trained.epoch,
        dataset_cfg.name,
        cfg.split,
        n,
        k,
        seed,
        device,
        torch.get_num_threads(),
        examples,
        samples,
        per_pair / 1024,
        memory_mb,
        out_dir,
    )

    iw_start = time.perf_counter()
    with TaskProgress(mode, n * k, f"IW-NLL k={k}") as bar:

        def progress(done: int, examples_done: int) -> None:
            rate = done / max(time.perf_counter() - iw_start, 1e-9)
            bar.update(done, f"{examples_done:,}/{n:,} examples  {rate:,.0f} samples/s")

        est = importance_weighted(
            model,
            images,
            k,
            seed=seed,
            ids=ids,
            max_pairs=max_pairs,
            batch_size=cfg.get("batch_size"),
            progress=progress,
        )
    iw_time = time.perf_counter() - iw_start

    nll = -est.log_px
    finite = torch.isfinite(nll)
    if not finite.all():
        log.warning(
            "%d of %d examples have a non-finite estimate; they are left out of the means",
            int((~finite).sum()),
            n,
        )
    nll_mean, nll_se = mean_se(nll)
    elbo_mean, elbo_se = mean_se(est.elbo)
    rec_mean, _ = mean_se(est.rec)
    kl_mean, kl_se = mean_se(est.kl)
    gap_mean, gap_se = mean_se(est.log_px - est.elbo)
    levels = model.likelihood.levels
    bpd = bits_per_dim(nll_mean, dims, levels)
    result: dict[str, Any] = {
        "eval/iw_nll": nll_mean,
        "eval/iw_nll_se": nll_se,
        "eval/elbo": elbo_mean,
        "eval/elbo_se": elbo_se,
        "eval/rec": rec_mean,
        "eval/kl": kl_mean,
        "eval/kl_se": kl_se,
        "eval/iw_gain": gap_mean,
        "eval/iw_gain_se": gap_se,
        "eval/bits_per_dim": bpd,
        "eval/mc_se_mean": float(est.mc_se[finite].mean()) if finite.any() else math.nan,
        "eval/mc_se_max": float(est.mc_se[finite].max()) if finite.any() else math.nan,
        "eval/ess_median": float(est.ess.median()),
        "eval/examples_per_s": n / iw_time,
        "eval/samples_per_s": n * k / iw_time,
        "eval/time_s": iw_time,
        "run": str(run_dir),
        "checkpoint": str(ckpt_path),
        "checkpoint_epoch": trained.epoch,
        "checkpoint_step": trained.step,
        "dataset": str(dataset_cfg.name),
        "posterior": str(train_cfg.posterior.name),
        "latent_dim": int(train_cfg.model.latent_dim),
        "split": str(cfg.split),
        "examples": n,
        "split_size": len(split),
        "nonfinite": int((~finite).sum()),
        "limit": cfg.get("limit"),
        "k": k,
        "seed": seed,
        "dims": dims,
        "likelihood": likelihood_record(model),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "chunk": {
            "examples": examples,
            "samples": samples,
            "bytes_per_pair": per_pair,
            "max_pairs": max_pairs,
            "memory_mb": memory_mb,
        },
    }
    rows = [
        (f"IW-NLL, k={k} (nats)", _fmt(nll_mean), _fmt(nll_se)),
        ("-ELBO (nats)", _fmt(-elbo_mean), _fmt(elbo_se)),
        ("  reconstruction -E[log p(x|z)]", _fmt(-rec_mean), ""),
        ("  KL(q(z|x) || p(z))", _fmt(kl_mean), _fmt(kl_se)),
        ("IW gain  log p(x) - ELBO", _fmt(gap_mean), _fmt(gap_se)),
        ("bits/dim (IW-NLL)", _fmt(bpd, 4), _fmt(bits_per_dim(nll_se, dims, levels), 4)),
        ("Monte Carlo se per example (mean)", _fmt(result["eval/mc_se_mean"], 4), ""),
        ("effective samples (median of k)", _fmt(result["eval/ess_median"], 1), ""),
    ]
    variances = est.unit_variances()
    result["eval/active_units"] = int((variances > ACTIVE_UNIT).sum())
    result["unit_variances"] = variances.tolist()
    rows.append(
        (
            f"active units (Var E[z] > {ACTIVE_UNIT})",
            f"{result['eval/active_units']} of {variances.numel()}",
            "",
        )
    )

    quad = None
    quad_cfg = _quadrature_config(cfg)
    small = model.latent_dim <= MAX_QUADRATURE_DIM
    if quad_cfg["enabled"] is True and not small:
        raise ConfigError(
            f"quadrature=true: the run has {model.latent_dim} latents and quadrature needs 1 or 2; "
            "leave quadrature=auto"
        )
    if small and quad_cfg["enabled"] in ("auto", True):
        quad_start = time.perf_counter()
        with TaskProgress(mode, n, "log p(x) by quadrature") as bar:
            quad = quadrature(
                model, images, points=quad_cfg["points"], progress=lambda done: bar.update(done)
            )
        result |= _quadrature_figures(quad, est, dims, levels)
        result["quadrature"] = {
            "points": quad.points,
            "half_width": quad.half_width,
            "multimodal": int((quad.regions > 1).sum()),  # examples whose posterior has separate regions
            "time_s": time.perf_counter() - quad_start,
        }
        rows += [
            ("NLL by quadrature (exact up to its error)", _fmt(result["eval/quad_nll"]), _fmt(result["eval/quad_nll_se"])),
            ("  grid error estimate (mean / max)", f"{result['eval/quad_error_mean']:.1e} / {result['eval/quad_error_max']:.1e}", ""),
            ("IW-NLL minus quadrature NLL (IW's deficit)", _fmt(result["eval/iw_deficit"]), _fmt(result["eval/iw_deficit_se"])),
        ]  # fmt: skip

    gaps_cfg = _gaps_config(cfg)
    if gaps_cfg["enabled"]:
        gaps_start = time.perf_counter()
        gn = min(int(gaps_cfg["n"]), n)
        pick = seeded_subset(n, gn, stream_seed(seed, Stream.GAPS_SUBSET))  # of the evaluated examples
        gk = int(gaps_cfg["k"] or k)
        rule = "quadrature" if quad is not None else f"the largest of three IW estimates with k={gk}"
        log.info(
            "inference gaps: %d examples, local posteriors (same family; + affine and %d planar steps) "
            "by %d Adam steps (lr %g, %d samples), log p(x) by %s",
            gn,
            gaps_cfg["flow_depth"],
            gaps_cfg["steps"],
            gaps_cfg["lr"],
            gaps_cfg["samples"],
            rule,
        )
        with TaskProgress(mode, 3 + 2 * int(gaps_cfg["steps"]), "inference gaps") as bar:
            gaps = inference_gaps(
                model,
                images[pick],
                k=gk,
                seed=seed,
                ids=ids[pick].tolist(),
                steps=int(gaps_cfg["steps"]),
                lr=float(gaps_cfg["lr"]),
                samples=int(gaps_cfg["samples"]),
                flow_depth=int(gaps_cfg["flow_depth"]),
                memory_mb=memory_mb,
                amortized=est.select(pick) if gk == k else None,
                log_px=None if quad is None else quad.log_px[pick],
                progress=lambda phase, done, total: bar.update(done, phase),
            )
        gaps["time_s"] = time.perf_counter() - gaps_start
        per_example_gaps = gaps.pop("per_example")
        result["gaps"] = gaps
        names = {
            "log_px": f"log p(x) ({rule})",
            "elbo_amortized": "ELBO, amortized q",
            "elbo_local_same": "ELBO, local q* (same family)",
            "elbo_local_flexible": "ELBO, local q* (flexible)",
            "inference": "inference gap  log p(x) - L[q]",
            "approximation": "approximation gap  log p(x) - L[q*]",
            "amortization": "amortization gap  L[q*] - L[q]",
            "approximation_same": "  same family: approximation",
            "amortization_same": "  same family: amortization",
        }
        gap_rows = [(names[key], _fmt(v["mean"]), _fmt(v["se"])) for key, v in gaps["rows"].items()]
        for key in ("approximation", "amortization", "inference"):
            result[f"eval/gaps/{key}"] = gaps["rows"][key]["mean"]
            result[f"eval/gaps/{key}_se"] = gaps["rows"][key]["se"]
    result.update(_peak_memory_mb(device))
    result["total_time_s"] = time.perf_counter() - wall_start

    torch.save(
        {
            "ids": ids,
            "log_px": est.log_px,
            "elbo": est.elbo,
            "rec": est.rec,
            "kl": est.kl,
            "ess": est.ess,
            "k": k,
            "seed": seed,
            "split": str(cfg.split),
            "z_mean": est.z_mean,
            **({"log_px_quad": quad.log_px, "quad_error": quad.error} if quad is not None else {}),
            **(
                {"gaps": {key: torch.tensor(v) for key, v in per_example_gaps.items()}}
                if gaps_cfg["enabled"]
                else {}
            ),
        },
        out_dir / "per_example.pt",
    )
    _write_tensorboard(out_dir, result, int(trained.epoch or 0))
    write_json_atomic(result, out_dir / "eval.json")

    header = f"{dataset_cfg.name} {cfg.split}, {n:,} examples, {ckpt_path.name} (epoch {trained.epoch})"
    log.info("%s\n%s", header, _table(rows, ("", "mean", "se")))
    if gaps_cfg["enabled"]:
        log.info(
            "inference gaps (Cremer et al. 2018), %d examples, nats\n%s",
            result["gaps"]["n"],
            _table(gap_rows, ("", "mean", "se")),
        )
    log.info(
        "%.1f examples/s, %s samples/s; IW %.1fs, total %.1fs; peak memory %.0f MiB; wrote %s",
        result["eval/examples_per_s"],
        f"{result['eval/samples_per_s']:,.0f}",
        iw_time,
        result["total_time_s"],
        result["peak_rss_mb"],
        out_dir / "eval.json",
    )
    return result


def _write_tensorboard(out_dir: Path, result: Mapping[str, Any], step: int) -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(out_dir / "tb"))
    try:
        for key, value in result.items():
            if key.startswith("eval/") and isinstance(value, (int, float)) and math.isfinite(value):
                writer.add_scalar(key, value, step)
    finally:
        writer.close()
