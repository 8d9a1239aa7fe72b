r"""Training and evaluation throughput of every posterior family, against pyro and the matmul limit.

The model of the IWAE, IAF and Householder-flow papers: an MLP VAE ``784-300-300``
(decoder ``D-300-300-784``), 40 latents, Bernoulli pixels, batch 100, flows of depth 4,
trained with the default optimizer of ``conf/optim`` on statically binarized MNIST from
``../shared/data/binarized_mnist`` (random binary images of the same shape when it is not
there; the output says which). For every family::

    images/s      training throughput of vaeflow's own ``Trainer.train_batch`` (the loop's
                  step with its statistics and non-finite guard): the median of timed
                  windows of steps after a warm-up
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
check the load (``uptime``) and repeat. The parts live in ``scripts/benchkit/``: the
machine's limits (``machine``), the data (``data``), the two implementations
(``subjects``), one measurement (``measure``) and the tables (``table``); this file is the
command line and the driver.

References:
    | Importance Weighted Autoencoders (Burda et al., 2016) https://arxiv.org/abs/1509.00519
    | Improved Variational Inference with Inverse Autoregressive Flow (Kingma et al., 2016)
    | https://arxiv.org/abs/1606.04934
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchkit and pyro_models, however this is run

from benchkit.data import DEFAULT_DATA, load_splits  # noqa: E402
from benchkit.machine import load_avg, matmul_flops_per_s  # noqa: E402
from benchkit.measure import measure_seed, merge  # noqa: E402
from benchkit.table import compare, report  # noqa: E402

from vaeflow.posteriors import POSTERIORS  # noqa: E402

#: the order of the table: the families without flow steps, then the flows.
ORDER = ("mean_field", "full_cov", "autoregressive", "iaf", "maf", "realnvp", "nsf_ar", "nsf_maf",
         "nsf_coupling", "planar", "radial", "householder", "sylvester")  # fmt: skip
PYRO_FAMILIES = ("mean_field", "planar", "radial", "householder", "iaf")


def families(spec: str | None) -> list[str]:
    names = [n for n in ORDER if n in POSTERIORS.names()] + [n for n in POSTERIORS.names() if n not in ORDER]
    if not spec or spec == "all":
        return names
    chosen = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in chosen if n not in names]
    if unknown:
        raise SystemExit(f"--families: unknown {', '.join(unknown)}; choose from {', '.join(names)}")
    return chosen


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
    before = matmul_flops_per_s(args.matmul_size, args.matmul_seconds, device)[0]
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
    after = matmul_flops_per_s(args.matmul_size, args.matmul_seconds, device)[0]
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
