r"""Training and evaluation throughput of every posterior family, against pyro and the matmul limit.

The model of the IWAE, IAF and Householder-flow papers: an MLP VAE ``784-300-300``
(decoder ``D-300-300-784``), 40 latents, Bernoulli pixels, batch 100, flows of depth 4,
trained with the default optimizer of ``conf/optim`` on statically binarized MNIST from
``../shared/data/binarized_mnist`` (random binary images of the same shape when it is not
there; the output says which). For every family::

    images/s      training throughput of vaeflow's own ``Trainer.train_step``: the median
                  of timed windows of steps after a warm-up
    MFLOP/step    matrix-product FLOPs of one step's forward and backward
                  (``torch.utils.flop_counter``; elementwise work and the optimizer are not counted)
    % matmul      FLOP/s of training over the float32 matmul throughput of this machine,
                  measured in the same run (large square products, best of before and after)
    ELBO          the mean training ELBO over the last steps of a fixed number of steps,
                  and the ELBO of the validation images after them (``--seeds N``: the
                  mean over N training runs, with its standard error)
    IW samples/s  importance-weighted evaluation (``vaeflow eval``'s estimator, k=5000),
                  with its fraction of the matmul limit
    RSS           the peak resident memory of the process that ran the family

The same VAE built from pyro-ppl's conditional transforms (``scripts/pyro_models.py``;
``pip install 'vaeflow[bench]'``), trained on the same batches in a plain torch loop with
the same optimizer settings, is measured alongside for mean-field, planar, radial,
Householder and IAF, and the ratios are printed (pyro's flows with its default
hypernetworks; its IAF with the MADE widths of ``conf/posterior/iaf.yaml``,
``--pyro-iaf-hidden``). Each family runs in its own process (``--in-process`` to run them
here); ``--interleave`` trains vaeflow and pyro in one process, timed windows in turn, so
that both see the same load. A table on the terminal and a JSON file::

    python scripts/bench.py                                   # everything, 2 threads
    python scripts/bench.py --families mean_field,iaf --seeds 3 --interleave
    python scripts/bench.py --families planar --steps 300 --threads 1 --optim-impl loop
    python scripts/bench.py --device cuda --batch-size 1000   # on a GPU

On a machine shared with other processes the figures drop, and two threads drop most:
check the load (``uptime``) and repeat.

References:
    | Importance Weighted Autoencoders (Burda et al., 2016) https://arxiv.org/abs/1509.00519
    | Improved Variational Inference with Inverse Autoregressive Flow (Kingma et al., 2016)
    | https://arxiv.org/abs/1606.04934
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from vaeflow.data import BatchLoader, DataSplits, Split, load_dataset
from vaeflow.posteriors import POSTERIORS
from vaeflow.train import seed_everything

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "binarized_mnist"
INPUT_SHAPE = (1, 28, 28)
#: the order of the table: the families without flow steps, then the flows.
ORDER = ("mean_field", "full_cov", "autoregressive", "iaf", "maf", "realnvp", "planar", "radial",
         "householder", "sylvester")  # fmt: skip
PYRO_FAMILIES = ("mean_field", "planar", "radial", "householder", "iaf")


# ------------------------------------------------------------------------------ helpers


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_flops_per_s(size: int, seconds: float, device: torch.device) -> float:
    r"""Best float32 FLOP/s of ``[size, size] @ [size, size]`` over ``seconds``."""
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    out = torch.empty(size, size, device=device)
    torch.mm(a, b, out=out)
    best, start = 0.0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        sync(device)
        t = time.perf_counter()
        torch.mm(a, b, out=out)
        sync(device)
        best = max(best, 2 * size**3 / (time.perf_counter() - t))
    return best


def load_avg() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def families(spec: str | None) -> list[str]:
    names = [n for n in ORDER if n in POSTERIORS.names()] + [n for n in POSTERIORS.names() if n not in ORDER]
    if not spec or spec == "all":
        return names
    chosen = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in chosen if n not in names]
    if unknown:
        raise SystemExit(f"--families: unknown {', '.join(unknown)}; choose from {', '.join(names)}")
    return chosen


def load_splits(args: argparse.Namespace) -> tuple[DataSplits, str]:
    r"""Static binarized MNIST from ``--data-root``, or seeded random binary images."""
    root = Path(args.data_root).expanduser()
    if not args.random_data and (root / "binarized_mnist_train.amat").is_file():
        data = load_dataset({"name": "binarized_mnist", "root": str(root), "download": False})
        return data, f"binarized_mnist ({root})"
    g = torch.Generator().manual_seed(12345)
    sizes = {"train": args.random_train, "val": 1000, "test": 1000}
    splits = {
        k: Split(torch.bernoulli(torch.full((n, *INPUT_SHAPE), 0.13), generator=g)) for k, n in sizes.items()
    }
    why = "--random-data" if args.random_data else f"{root} not found"
    return DataSplits("random", **splits), f"RANDOM binary images, p=0.13 ({why}): ELBOs are not MNIST's"


def val_subset(data: DataSplits, n: int) -> torch.Tensor:
    images = data.val.images
    if n <= 0 or n >= images.shape[0]:
        return images
    return images[torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(0))[:n]]


def cycle(loader: BatchLoader) -> Iterator[torch.Tensor]:
    while True:
        yield from loader.epoch()


# ------------------------------------------------------------------------------ the two implementations


class Subject:
    r"""One model under test: ``step(x)`` trains on a batch and returns ``[rec, kl]`` sums
    (or ``None`` for a skipped step); ``loss(x)`` is the differentiable objective;
    ``val_elbo(images)`` and ``iw(images, k)`` evaluate."""

    model: torch.nn.Module
    loader: BatchLoader
    step: Callable[[torch.Tensor], torch.Tensor | None]
    loss: Callable[[torch.Tensor], torch.Tensor]
    val_elbo: Callable[[torch.Tensor], float]
    iw: Callable[[torch.Tensor, int], None]
    iw_path: str
    close: Callable[[], None] = staticmethod(lambda: None)


def vaeflow_config(args: argparse.Namespace, family: str, real_data: bool):
    from hydra import compose, initialize_config_module
    from omegaconf import open_dict

    hidden = ",".join(str(w) for w in args.hidden)
    overrides = [
        f"posterior={family}",
        f"model.latent_dim={args.latent_dim}",
        f"encoder.hidden_dims=[{hidden}]",
        f"decoder.hidden_dims=[{','.join(str(w) for w in args.hidden[::-1])}]",
        f"trainer.batch_size={args.batch_size}",
        f"trainer.threads={args.threads}" if args.device == "cpu" else "trainer.threads=null",
        f"trainer.device={args.device}",
        "trainer.images=0",
        "trainer.iw_every=0",
        "trainer.progress=plain",
        f"seed={args.seed}",
    ]
    if real_data:
        overrides += ["dataset=binarized_mnist", f"dataset.root={args.data_root}"]
    if args.optim:
        overrides.append(f"optim={args.optim}")
    with initialize_config_module(config_module="vaeflow.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    with open_dict(cfg):
        if "depth" in cfg.posterior:
            cfg.posterior.depth = args.depth
        if args.lr is not None:
            cfg.optim.lr = args.lr
        if args.optim_impl != "config":
            cfg.optim.foreach = args.optim_impl == "foreach"
            cfg.optim.fused = True if args.optim_impl == "fused" else None
        if args.compile is not None and "compile" in cfg.trainer:
            cfg.trainer.compile = args.compile
    return cfg


def vaeflow_subject(args: argparse.Namespace, family: str, data: DataSplits, real_data: bool) -> Subject:
    from vaeflow.objectives import elbo, training_loss
    from vaeflow.train import Trainer, evaluate_elbo

    cfg = vaeflow_config(args, family, real_data)
    tmp = tempfile.TemporaryDirectory(prefix="vaeflow-bench-")
    trainer = Trainer(cfg, tmp.name, data=data)
    trainer.beta = 1.0
    model = trainer.model
    s = Subject()
    s.model, s.loader = model, trainer.train_loader

    def step(x: torch.Tensor) -> torch.Tensor | None:
        values = trainer.train_step(x)
        return None if values is None else values[:2]

    def loss(x: torch.Tensor) -> torch.Tensor:
        return training_loss(elbo(model, x, trainer.kl), 1.0, 0.0, model.latent_dim)

    def val_elbo(images: torch.Tensor) -> float:
        torch.manual_seed(args.seed + 1)
        loader = BatchLoader(Split(images), 500, device=trainer.device)
        return evaluate_elbo(model, loader, trainer.kl)["elbo"]

    try:
        from vaeflow.evaluate import importance_weighted

        def iw(images: torch.Tensor, k: int) -> None:
            importance_weighted(model, images, k)

        s.iw_path = "vaeflow.evaluate.importance_weighted"
    except ImportError:  # an older tree without vaeflow eval
        from vaeflow.train import evaluate_iw_nll

        def iw(images: torch.Tensor, k: int) -> None:
            evaluate_iw_nll(model, images, k, batch_size=images.shape[0])

        s.iw_path = "vaeflow.train.evaluate_iw_nll"

    def close() -> None:
        trainer.writer.close()
        tmp.cleanup()

    s.step, s.loss, s.val_elbo, s.iw, s.close = step, loss, val_elbo, iw, close
    return s


def pyro_subject(args: argparse.Namespace, family: str, data: DataSplits) -> Subject:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from pyro_models import build_pyro_vae

    device = torch.device(args.device)
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    iaf_hidden = _iaf_hidden(args)
    model = build_pyro_vae(family, args.latent_dim, args.hidden, args.depth, 784, iaf_hidden).to(device)
    optim = _optim_settings(args)
    kwargs = {k: optim[k] for k in ("lr", "eps", "weight_decay") if k in optim}
    kwargs["betas"] = tuple(optim.get("betas", (0.9, 0.999)))
    if args.pyro_optim_impl != "default":
        kwargs["foreach"] = args.pyro_optim_impl == "foreach"
        if args.pyro_optim_impl == "fused":
            kwargs["fused"] = True
    optimizer = {"adam": torch.optim.Adam, "adamax": torch.optim.Adamax}[optim["name"]](
        model.parameters(), **kwargs
    )
    if args.pyro_no_validation:
        import pyro

        pyro.enable_validation(False)  # pyro (and torch.distributions) check arguments by default
    s = Subject()
    s.model = model
    s.loader = BatchLoader(data.train, args.batch_size, shuffle=True, seed=args.seed, device=device)

    def step(x: torch.Tensor) -> torch.Tensor | None:
        loss, rec, kl = model.loss(x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return torch.stack([rec.detach().sum(), kl.detach().sum()]).double().cpu()

    def val_elbo(images: torch.Tensor) -> float:
        torch.manual_seed(args.seed + 1)
        total = 0.0
        with torch.inference_mode():
            for start in range(0, images.shape[0], 500):
                rec, kl = model.elbo_terms(images[start : start + 500].to(device))
                total += (rec - kl).double().sum().item()
        return total / images.shape[0]

    def iw(images: torch.Tensor, k: int) -> None:
        chunk = max(1, min(k, args.pyro_iw_pairs // images.shape[0]))
        with torch.inference_mode():
            model.iwae_bound(images.to(device), k, chunk)

    s.step, s.loss, s.val_elbo, s.iw = step, lambda x: model.loss(x)[0], val_elbo, iw
    s.iw_path = f"pyro_models.PyroVAE.iwae_bound (chunks of {args.pyro_iw_pairs:,} pairs)"
    return s


def _optim_settings(args: argparse.Namespace) -> dict[str, Any]:
    import yaml

    name = args.optim or "adam"
    optim = yaml.safe_load((ROOT / "conf" / "optim" / f"{name}.yaml").read_text())
    if args.lr is not None:
        optim["lr"] = args.lr
    return optim


def _iaf_hidden(args: argparse.Namespace) -> list[int] | None:
    if args.pyro_iaf_hidden == "pyro":
        return None
    if args.pyro_iaf_hidden == "match":
        import yaml

        return list(yaml.safe_load((ROOT / "conf" / "posterior" / "iaf.yaml").read_text())["hidden_dims"])
    return [int(w) for w in args.pyro_iaf_hidden.split(",")]


# ------------------------------------------------------------------------------ one measurement


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
        values = [r[key] for r in runs]
        result[key] = statistics.fmean(values)
        if len(values) > 1:
            result[f"{key}_se"] = statistics.stdev(values) / math.sqrt(len(values))
    result["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    return result


class Training:
    r"""The training run of one subject: its batches, the ELBO of its last steps, and the
    images/s of its timed windows."""

    def __init__(self, args: argparse.Namespace, subject: Subject) -> None:
        self.args, self.subject = args, subject
        self.batches = cycle(subject.loader)
        self.done, self.skipped, self.tail_seen = 0, 0, 0
        self.tail = max(1, min(args.steps // 5, 100))
        self.sums = torch.zeros(2, dtype=torch.float64)
        self.rates: list[float] = []
        self.seconds = 0.0

    def run(self, steps: int, timed: bool) -> None:
        device = torch.device(self.args.device)
        sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            x = next(self.batches)
            values = self.subject.step(x)
            if values is None:
                self.skipped += 1
            elif self.done >= self.args.steps - self.tail:
                self.sums += values
                self.tail_seen += x.shape[0]
            self.done += 1
        sync(device)
        seconds = time.perf_counter() - start
        self.seconds += seconds
        if timed and steps:
            self.rates.append(steps * self.args.batch_size / seconds)


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
            rec, kl = (run.sums / max(run.tail_seen, 1)).tolist()
            result: dict[str, Any] = {
                "impl": impl,
                "family": family,
                "seed": args.seed,
                "parameters": sum(p.numel() for p in subject.model.parameters()),
                "images_per_s": statistics.median(run.rates) if run.rates else None,
                "images_per_s_windows": run.rates,
                "train_seconds": run.seconds,
                "steps": run.done,
                "skipped_steps": run.skipped,
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
        sync(device)
        t = time.perf_counter()
        subject.iw(x, k)
        sync(device)
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


# ------------------------------------------------------------------------------ the driver


def run_worker(argv: list[str], impls: list[str], family: str, seed: int, extras: bool) -> list[dict]:
    r""":func:`measure_seed` in a fresh process (its own peak RSS, allocator and thread pool)."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = Path(f.name)
    try:
        cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--seed", str(seed),
               "--worker", ",".join(impls), family, str(int(extras)), str(out)]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not out.stat().st_size:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            return [{"impl": impl, "family": family, "error": tail[0]} for impl in impls]
        return json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)


def run_one(
    args: argparse.Namespace, argv: list[str], impls: list[str], family: str, seed: int, extras: bool
) -> list[dict]:
    if not args.in_process:
        return run_worker(argv, impls, family, seed, extras)
    try:
        return measure_seed(argparse.Namespace(**{**vars(args), "seed": seed}), impls, family, extras)
    except Exception as e:  # noqa: BLE001  (a failing family is a row, not the end of the run)
        traceback.print_exc()
        return [{"impl": impl, "family": family, "error": f"{type(e).__name__}: {e}"} for impl in impls]


def pyro_available() -> str | None:
    r"""``None`` if pyro-ppl can be imported, else the reason it cannot."""
    try:
        import pyro  # noqa: F401
    except ImportError as e:
        return f"pyro-ppl is not installed ({e.msg}); pip install 'vaeflow[bench]'"
    return None


def _fmt(value: Any, spec: str, missing: str = "-") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return missing
    return format(value, spec)


def _elbo(r: dict[str, Any], key: str) -> str:
    se = r.get(f"{key}_se")
    return f"{r[key]:.2f}" + (f" ±{se:.2f}" if se is not None else "")


def print_table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        print("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths))))
        if i == 0:
            print("-" * (sum(widths) + 2 * (len(widths) - 1)))


def report(result: dict[str, Any]) -> None:
    print(
        f"\nvaeflow bench: MLP VAE 784-{'-'.join(map(str, result['hidden']))}, latent {result['latent_dim']}, "
        f"batch {result['batch_size']}, depth {result['depth']}; {result['device']}, {result['threads']} threads; "
        f"{result['steps']} steps"
    )
    print(f"data: {result['data']}")
    mm = result["matmul_flops_per_s"]
    print(
        f"float32 matmul limit ({mm['size']}^3): {mm['before'] / 1e9:.1f} / {mm['after'] / 1e9:.1f} GFLOP/s "
        f"(before / after; {mm['used'] / 1e9:.1f} used); load average {result['load_before']} -> {result['load_after']}"
    )
    header = ["family", "impl", "params", "img/s", "MFLOP/step", "% matmul", "train ELBO", "val ELBO",
              "IW smp/s", "IW %", "RSS MiB"]  # fmt: skip
    rows = [header]
    for r in result["runs"]:
        if "error" in r:
            rows.append([r["family"], r["impl"], "error: " + r["error"][:60]] + [""] * (len(header) - 3))
            continue
        rows.append(
            [
                r["family"],
                r["impl"],
                f"{r['parameters'] / 1e6:.2f}M",
                _fmt(r["images_per_s"], ",.0f"),
                f"{r['flops_per_step'] / 1e6:.0f}",
                _fmt(r.get("train_fraction") and 100 * r["train_fraction"], ".0f"),
                _elbo(r, "train_elbo"),
                _elbo(r, "val_elbo"),
                _fmt(r.get("iw_samples_per_s"), ",.0f"),
                _fmt(r.get("iw_fraction") and 100 * r["iw_fraction"], ".0f"),
                f"{r['peak_rss_mb']:.0f}",
            ]
        )
    print()
    print_table(rows)
    if result["comparison"]:
        seeds = f", mean ± standard error over {result['seeds']} seeds" if result["seeds"] > 1 else ""
        print(
            f"\nvaeflow against pyro-ppl ({result['steps']} steps each on the same batches, same optimizer "
            f"settings; ELBO of {result['val_images']} validation images{seeds}):"
        )
        rows = [["family", "vaeflow img/s", "pyro img/s", "ratio", "vaeflow ELBO", "pyro ELBO", "ELBO diff",
                 "IW ratio"]]  # fmt: skip
        for c in result["comparison"]:
            rows.append(
                [
                    c["family"],
                    _fmt(c["vaeflow_images_per_s"], ",.0f"),
                    _fmt(c["pyro_images_per_s"], ",.0f"),
                    _fmt(c["speedup"], ".2f") + "x",
                    _fmt(c["vaeflow_val_elbo"], ".2f"),
                    _fmt(c["pyro_val_elbo"], ".2f"),
                    _fmt(c["val_elbo_diff"], "+.2f")
                    + (f" ±{c['val_elbo_diff_se']:.2f}" if c["val_elbo_diff_se"] else ""),
                    _fmt(c["iw_speedup"], ".2f") + ("x" if c["iw_speedup"] else ""),
                ]
            )
        print_table(rows)
    elif result.get("pyro_skipped"):
        print(f"\npyro comparison skipped: {result['pyro_skipped']}")


def _paired_se(v: dict[str, Any], p: dict[str, Any]) -> float | None:
    r"""Standard error of the mean ELBO difference over seeds (the same seed gives both the
    same batches), or ``None`` with one seed."""
    diffs = [a["val_elbo"] - b["val_elbo"] for a, b in zip(v.get("seeds", []), p.get("seeds", []))]
    return statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else None


def compare(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by = {(r["impl"], r["family"]): r for r in runs if "error" not in r}
    out = []
    for (impl, family), p in by.items():
        v = by.get(("vaeflow", family))
        if impl != "pyro" or v is None:
            continue
        iw = (v.get("iw_samples_per_s") or 0) / p["iw_samples_per_s"] if p.get("iw_samples_per_s") else None
        out.append(
            {
                "family": family,
                "vaeflow_images_per_s": v["images_per_s"],
                "pyro_images_per_s": p["images_per_s"],
                "speedup": v["images_per_s"] / p["images_per_s"],
                "vaeflow_train_elbo": v["train_elbo"],
                "pyro_train_elbo": p["train_elbo"],
                "vaeflow_val_elbo": v["val_elbo"],
                "pyro_val_elbo": p["val_elbo"],
                "val_elbo_diff": v["val_elbo"] - p["val_elbo"],
                "val_elbo_diff_se": _paired_se(v, p),
                "seeds": len(v.get("seeds", [])),
                "vaeflow_flops_per_step": v["flops_per_step"],
                "pyro_flops_per_step": p["flops_per_step"],
                "iw_speedup": iw,
            }
        )
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--families", default="all", help="comma list of posterior families (default: all)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--depth", type=int, default=4, help="steps of every flow family")
    p.add_argument("--latent-dim", type=int, default=40)
    p.add_argument(
        "--hidden", type=int, nargs="+", default=[300, 300], help="encoder widths (decoder: reversed)"
    )
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument(
        "--steps", type=int, default=500, help="training steps per family (the ELBO is after these)"
    )
    p.add_argument("--warmup", type=int, default=20, help="steps before the first timed window")
    p.add_argument(
        "--window", type=int, default=40, help="steps per timed window (images/s: median over windows)"
    )
    p.add_argument("--optim", default=None, help="conf/optim option (default: the config's default, adam)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the optim config's)")
    p.add_argument(
        "--optim-impl",
        choices=["config", "loop", "foreach", "fused"],
        default="config",
        help="vaeflow's optimizer implementation (config: as conf/optim says)",
    )
    p.add_argument(
        "--pyro-optim-impl",
        choices=["default", "loop", "foreach", "fused"],
        default="default",
        help="the pyro loop's optimizer implementation (default: torch.optim's default)",
    )
    p.add_argument(
        "--compile",
        type=lambda s: s.lower() in ("1", "true", "yes"),
        default=None,
        help="set trainer.compile (true/false; default: the config's)",
    )
    p.add_argument(
        "--pyro-iaf-hidden",
        default="match",
        help="widths of pyro's IAF MADE: match (conf/posterior/iaf.yaml), pyro ([10 D]) or a list 320,320",
    )
    p.add_argument("--no-pyro", action="store_true", help="skip the pyro-ppl reference")
    p.add_argument(
        "--pyro-no-validation", action="store_true", help="turn off pyro's argument checks (on by default)"
    )
    p.add_argument(
        "--seeds", type=int, default=1, help="training runs per family (ELBO: mean and standard error)"
    )
    p.add_argument(
        "--val-images", type=int, default=10_000, help="validation images of the ELBO after training"
    )
    p.add_argument("--iw-k", type=int, default=5000, help="importance samples per example (0: skip IW)")
    p.add_argument("--iw-examples", type=int, default=8, help="examples of the IW timing")
    p.add_argument("--iw-repeats", type=int, default=3)
    p.add_argument("--iw-max-seconds", type=float, default=20.0, help="stop repeating IW timings after this")
    p.add_argument(
        "--pyro-iw-pairs",
        type=int,
        default=50_000,
        help="(example, sample) pairs per chunk of pyro's IW loop",
    )
    p.add_argument("--matmul-size", type=int, default=2048)
    p.add_argument("--matmul-seconds", type=float, default=2.0)
    p.add_argument(
        "--data-root", default=str(DEFAULT_DATA), help="directory of the binarized MNIST .amat files"
    )
    p.add_argument("--random-data", action="store_true", help="random binary images even if MNIST is there")
    p.add_argument("--random-train", type=int, default=10_000, help="training images of the random data")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--in-process", action="store_true", help="run every family in this process (RSS: the process's)"
    )
    p.add_argument("--interleave", action="store_true",
                   help="train vaeflow and pyro in one process, timed windows in turn (robust ratios on a\n"
                        "shared machine; the RSS is then the pair's)")  # fmt: skip
    p.add_argument("--json", default="bench.json", help="where to write the results ('' for nowhere)")
    p.add_argument("--worker", nargs=4, metavar=("IMPLS", "FAMILY", "EXTRAS", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.window < 1 or args.steps < args.warmup + args.window:
        p.error(
            f"--steps={args.steps} leaves no timed window after --warmup={args.warmup} (--window={args.window})"
        )
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.worker:
        impls, family, extras, out = args.worker
        results = measure_seed(args, impls.split(","), family, extras == "1")
        Path(out).write_text(json.dumps(results) + "\n")
        return {}

    device = torch.device(args.device)
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    names = families(args.families)
    pyro_skipped = "--no-pyro" if args.no_pyro else pyro_available()
    _, data_desc = load_splits(args)
    load_before = load_avg()
    before = matmul_flops_per_s(args.matmul_size, args.matmul_seconds, device)
    runs = []
    for family in names:
        impls = ["vaeflow"] + (["pyro"] if family in PYRO_FAMILIES and not pyro_skipped else [])
        by_impl: dict[str, list[dict[str, Any]]] = {impl: [] for impl in impls}
        # implementations in turn (window by window with --interleave), so that both see the same load
        groups = [impls] if args.interleave else [[impl] for impl in impls]
        for i in range(args.seeds):
            for group in groups:
                print(f"{'+'.join(group)} {family} seed {args.seed + i} ...", file=sys.stderr, flush=True)
                for r in run_one(args, argv, group, family, args.seed + i, extras=i == 0):
                    by_impl[r["impl"]].append(r)
        runs += [merge(by_impl[impl]) for impl in impls]
    after = matmul_flops_per_s(args.matmul_size, args.matmul_seconds, device)
    limit = max(before, after)
    for r in runs:
        if "error" in r:
            continue
        if r["images_per_s"]:
            r["train_flops_per_s"] = r["flops_per_step"] * r["images_per_s"] / args.batch_size
            r["train_fraction"] = r["train_flops_per_s"] / limit
        if r.get("iw_samples_per_s"):
            r["iw_flops_per_s"] = r["iw_flops_per_sample"] * r["iw_samples_per_s"]
            r["iw_fraction"] = r["iw_flops_per_s"] / limit
            r["projected_test_minutes"] = 10_000 * 5000 / r["iw_samples_per_s"] / 60
    load_after = load_avg()
    result = {
        "device": str(device),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "torch": torch.__version__,
        "batch_size": args.batch_size,
        "latent_dim": args.latent_dim,
        "hidden": args.hidden,
        "depth": args.depth,
        "steps": args.steps,
        "seeds": args.seeds,
        "val_images": next((r["val_images"] for r in runs if "val_images" in r), None),
        "warmup": args.warmup,
        "window": args.window,
        "interleave": args.interleave,
        "optim_impl": args.optim_impl,
        "pyro_optim_impl": args.pyro_optim_impl,
        "pyro_validation": not args.pyro_no_validation,
        "pyro_iaf_hidden": args.pyro_iaf_hidden,
        "data": data_desc,
        "matmul_flops_per_s": {"before": before, "after": after, "used": limit, "size": args.matmul_size},
        "load_before": None if load_before is None else round(load_before, 2),
        "load_after": None if load_after is None else round(load_after, 2),
        "pyro_skipped": pyro_skipped,
        "runs": runs,
        "comparison": compare(runs),
    }
    report(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return result


if __name__ == "__main__":
    main()
