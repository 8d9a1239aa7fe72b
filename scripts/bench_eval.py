r"""Throughput of ``vaeflow eval``'s importance-weighted estimator against the machine's matmul limit.

Builds the benchmark model of Burda et al. (2016) and Cremer et al. (2018), an MLP VAE
784-300-300 with 40 latents (random weights: throughput does not depend on them), times
:func:`vaeflow.evaluate.importance_weighted` on a few examples, counts the FLOPs of that
work with ``torch.utils.flop_counter`` (matrix products; elementwise work is not counted),
measures the float32 matmul throughput of this machine in the same run with large square
products (before and after, the best of each), and projects the time of the full
10,000-image test set at k=5000::

    python scripts/bench_eval.py                       # mean-field, k=5000, 16 examples
    python scripts/bench_eval.py --posterior iaf --depth 4 --threads 2 --max-pairs 4096,16384,65536

Prints a table and writes JSON (``--json``, default ``bench_eval.json``). On a shared
machine other processes take cycles from both the estimator and the matmul measurement:
each timed run records how many cores the other processes kept busy meanwhile (from
``/proc/stat``, Linux), the best run of each setting is reported with that load, and
``--clean 0.05`` keeps only runs during which the others used less than 0.05 cores.

References:
    | Importance Weighted Autoencoders (Burda et al., 2016) https://arxiv.org/abs/1509.00519
"""

from __future__ import annotations

import argparse
import inspect
import json
import platform
import statistics
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchkit, however this is run

from benchkit.machine import matmul_flops_per_s, peak_rss_mb, timed  # noqa: E402

from vaeflow.evaluate import importance_weighted, keep_freed_memory, pairs_per_chunk, plan_chunks  # noqa: E402
from vaeflow.model import build_model  # noqa: E402
from vaeflow.posteriors import POSTERIORS  # noqa: E402

INPUT_SHAPE = (1, 28, 28)


def model_config(args: argparse.Namespace) -> dict:
    posterior = {"name": args.posterior}
    if "depth" in inspect.signature(POSTERIORS.entries[args.posterior]).parameters:  # a flow
        posterior["depth"] = args.depth
    hidden = list(args.hidden)
    return {
        "model": {"latent_dim": args.latent_dim},
        "likelihood": {"name": "bernoulli"},
        "encoder": {"name": "mlp", "hidden_dims": hidden},
        "decoder": {"name": "mlp", "hidden_dims": hidden[::-1]},
        "posterior": posterior,
        "prior": {"name": "standard_normal"},
    }


def count_flops(model, x: torch.Tensor, k: int, max_pairs: int) -> int:
    with FlopCounterMode(display=False) as counter:
        importance_weighted(model, x, k, max_pairs=max_pairs)
    return counter.get_total_flops()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--posterior", default="mean_field", help="posterior family (mean_field, iaf, ...)")
    parser.add_argument("--depth", type=int, default=4, help="flow depth (flow posteriors)")
    parser.add_argument("--latent-dim", type=int, default=40)
    parser.add_argument(
        "--hidden", type=int, nargs="+", default=[300, 300], help="encoder widths (decoder: reversed)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--k", type=int, default=5000, help="importance samples per example")
    parser.add_argument("--examples", type=int, default=16, help="examples to time")
    parser.add_argument(
        "--memory-mb",
        type=float,
        default=None,
        help="chunk memory budget in MiB (as vaeflow eval: default 64 on the CPU, 512 on a GPU)",
    )
    parser.add_argument("--max-pairs", default=None, help="comma list of chunk sizes (pairs) to compare")
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed runs per setting (best and median kept)"
    )
    parser.add_argument(
        "--test-size", type=int, default=10_000, help="examples of the projected full test set"
    )
    parser.add_argument("--test-k", type=int, default=5000, help="k of the projected full test set")
    parser.add_argument("--matmul-size", type=int, default=2048)
    parser.add_argument("--matmul-seconds", type=float, default=2.0)
    parser.add_argument(
        "--clean",
        type=float,
        default=float("inf"),
        help="keep only runs during which other processes used fewer cores than this (e.g. 0.05)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default="bench_eval.json", help="where to write the results")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cpu":
        keep_freed_memory()  # as vaeflow eval does
    torch.manual_seed(args.seed)
    model = build_model(model_config(args), INPUT_SHAPE).to(device).eval()
    x = torch.bernoulli(
        torch.full((args.examples, *INPUT_SHAPE), 0.15), generator=torch.Generator().manual_seed(1)
    )
    x = x.to(device)

    # FLOPs: per sample (posterior + decoder + likelihood) and per example (encoder), from two counts.
    k1, k2 = 256, 512
    f1, f2 = (count_flops(model, x[:2], kk, max_pairs=2 * kk) for kk in (k1, k2))
    per_sample = (f2 - f1) / (2 * (k2 - k1))
    per_example = max(f1 / 2 - k1 * per_sample, 0.0)

    default_pairs, per_pair = pairs_per_chunk(model, x[:1], args.memory_mb)
    settings = [int(v) for v in args.max_pairs.split(",")] if args.max_pairs else [default_pairs]

    peak_before, load_before = matmul_flops_per_s(args.matmul_size, args.matmul_seconds, device, args.clean)
    importance_weighted(model, x[:1], min(args.k, 1024), max_pairs=settings[0])  # warm-up
    rows = []
    for max_pairs in settings:
        examples, samples = plan_chunks(args.k, args.examples, max_pairs)
        runs = []
        for _ in range(args.repeats):
            seconds, others = timed(
                lambda pairs=max_pairs: importance_weighted(model, x, args.k, max_pairs=pairs), device
            )
            runs.append((args.examples * args.k / seconds, others))
        kept = [r for r in runs if r[1] is None or r[1] < args.clean]
        rate, others = max(kept, key=lambda r: r[0]) if kept else (float("nan"), None)
        rows.append(
            {
                "max_pairs": max_pairs,
                "chunk_examples": examples,
                "chunk_samples": samples,
                "chunk_mb": examples * samples * per_pair / 2**20,
                "samples_per_s_best": rate,
                "samples_per_s_median": statistics.median(r[0] for r in runs),
                "runs_kept": len(kept),
                "other_load_cores": others,
            }
        )
    peak_after, load_after = matmul_flops_per_s(args.matmul_size, args.matmul_seconds, device, args.clean)
    peak = max(peak_before, peak_after)

    test_flops = args.test_size * (per_example + args.test_k * per_sample)
    limit_s = test_flops / peak
    for row in rows:
        rate = row["samples_per_s_best"]
        row["flops_per_s"] = rate * (per_sample + per_example / args.k)
        row["fraction_of_matmul"] = row["flops_per_s"] / peak
        row["projected_test_s"] = args.test_size * args.test_k / rate
        row["projected_over_limit"] = row["projected_test_s"] / limit_s
    best = max(rows, key=lambda r: r["samples_per_s_best"] if r["runs_kept"] else -1.0)
    result = {
        "model": model_config(args),
        "parameters": sum(p.numel() for p in model.parameters()),
        "device": str(device),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "k": args.k,
        "examples": args.examples,
        "bytes_per_pair": per_pair,
        "flops_per_sample": per_sample,
        "flops_per_example_encoder": per_example,
        "matmul_flops_per_s": {
            "before": peak_before,
            "after": peak_after,
            "used": peak,
            "size": args.matmul_size,
            "other_load_cores": {"before": load_before, "after": load_after},
        },
        "test_set": {
            "examples": args.test_size,
            "k": args.test_k,
            "flops": test_flops,
            "matmul_limit_s": limit_s,
        },
        "settings": rows,
        "best": best,
        "peak_rss_mb": peak_rss_mb(),
    }

    print(
        f"vaeflow eval throughput: MLP VAE 784-{'-'.join(map(str, args.hidden))}, latent {args.latent_dim}, "
        f"posterior {args.posterior}{'' if args.posterior == 'mean_field' else f' (depth {args.depth})'}, "
        f"{result['parameters']:,} parameters; {device}, {result['threads']} threads"
    )
    print(
        f"work: {per_sample / 1e6:.3f} MFLOP per sample, {per_example / 1e6:.3f} MFLOP per example (encoder); "
        f"matmul {args.matmul_size}^3 float32: {peak_before / 1e9:.1f} / {peak_after / 1e9:.1f} GFLOP/s (before / after); "
        "'others': cores the other processes kept busy during the best run"
    )
    header = (
        "chunk (ex x smp)",
        "MiB",
        "samples/s best",
        "others",
        "median",
        "GFLOP/s",
        "of matmul",
        "full test",
        "x limit",
    )
    table = [header] + [
        (
            f"{r['chunk_examples']} x {r['chunk_samples']}",
            f"{r['chunk_mb']:.0f}",
            f"{r['samples_per_s_best']:,.0f}",
            "-" if r["other_load_cores"] is None else f"{r['other_load_cores']:.2f}",
            f"{r['samples_per_s_median']:,.0f}",
            f"{r['flops_per_s'] / 1e9:.1f}",
            f"{100 * r['fraction_of_matmul']:.0f}%",
            f"{r['projected_test_s'] / 60:.1f} min",
            f"{r['projected_over_limit']:.2f}",
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for i, line in enumerate(table):
        print(
            "  ".join(cell.rjust(w) if j else cell.ljust(w) for j, (cell, w) in enumerate(zip(line, widths)))
        )
        if i == 0:
            print("-" * (sum(widths) + 2 * (len(widths) - 1)))
    print(
        f"full test set ({args.test_size:,} x k={args.test_k:,}): {test_flops / 1e12:.1f} TFLOP, matmul limit "
        f"{limit_s / 60:.1f} min; best projection {best['projected_test_s'] / 60:.1f} min "
        f"({best['projected_over_limit']:.2f}x the limit, {100 * best['fraction_of_matmul']:.0f}% of matmul throughput); "
        f"peak memory {result['peak_rss_mb']:.0f} MiB"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
