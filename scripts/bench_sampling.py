r"""What it costs to draw from q(z|x), against the latent size D: the seed's trade-off made visible.

Families whose sampling direction is autoregressive in z need D sequential steps:
``autoregressive`` (one MADE) and ``maf`` (one MADE per step). :meth:`MADE.solve` makes the D
steps cost one MADE pass of FLOPs together, but they are still D small dependent steps, so
their time to draw a batch grows linearly with D. ``iaf`` (one MADE pass per step, the density is the
sequential direction), ``realnvp`` (one coupling pass per step) and ``planar`` (a few
vector operations per step) draw a batch in a time that hardly depends on D. The density
of a given z is the mirror image (``maf`` in one pass, ``iaf`` in D).

For each family and each D in ``--dims`` (default 8, 16, 32, 64, 128, 256), times
``posterior(h, n=1)`` on a batch of random encoder features ``h [B, 300]`` under
``torch.inference_mode`` (the median of ``--repeats`` timings after a warm-up), prints a
table, and writes JSON and a log-log PNG plot::

    python scripts/bench_sampling.py                                   # bench_sampling.{json,png}
    python scripts/bench_sampling.py --png docs/bench_sampling.png --threads 2
    python scripts/bench_sampling.py --families maf,iaf --dims 8,64 --batch-size 1000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from vaeflow.posteriors import POSTERIORS

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ("autoregressive", "maf", "iaf", "realnvp", "planar", "nsf_maf", "nsf_ar", "nsf_coupling")
#: the families that sample in D sequential passes.
SEQUENTIAL = ("autoregressive", "maf", "nsf_maf")


def posterior_config(family: str, depth: int) -> dict[str, Any]:
    r"""``conf/posterior/<family>.yaml`` with ``depth`` for the flows."""
    import yaml

    cfg = yaml.safe_load((ROOT / "conf" / "posterior" / f"{family}.yaml").read_text())
    if "depth" in cfg:
        cfg["depth"] = depth
    return cfg


def time_draw(q: torch.nn.Module, h: torch.Tensor, repeats: int, device: torch.device) -> list[float]:
    r"""Seconds of ``q(h, n=1)``, ``repeats`` times after one warm-up draw."""
    times = []
    with torch.inference_mode():
        q(h, 1)
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t = time.perf_counter()
            q(h, 1)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - t)
    return times


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.6), dpi=100)
    for family, row in result["ms"].items():
        dims = [int(d) for d in row]
        style = "-o" if family in SEQUENTIAL else "--s"
        ax.plot(dims, list(row.values()), style, label=family, markersize=4)
    sequential = [f for f in result["ms"] if f in SEQUENTIAL]
    if sequential:  # a line proportional to D through the first point of a sequential family
        first = result["ms"][sequential[0]]
        d0 = result["dims"][0]
        ref = [first[str(d0)] * d / d0 for d in result["dims"]]
        ax.plot(result["dims"], ref, ":", color="grey", linewidth=1, label="∝ D")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(result["dims"], [str(d) for d in result["dims"]])
    ax.set_xlabel("latent size D")
    ax.set_ylabel(f"ms per batch of {result['batch_size']}")
    depth = result["depth"]
    ax.set_title(f"drawing z ~ q(z|x): flows of depth {depth}, {result['threads']} threads", fontsize=9)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def markdown(result: dict[str, Any]) -> str:
    dims = result["dims"]
    lines = ["| family | " + " | ".join(f"D={d}" for d in dims) + " | D=" + f"{dims[-1]} / D={dims[0]} |"]
    lines.append("| --- |" + " ---: |" * (len(dims) + 1))
    for family, row in result["ms"].items():
        cells = [f"{row[str(d)]:.2f}" for d in dims]
        lines.append(
            f"| `{family}` | " + " | ".join(cells) + f" | {row[str(dims[-1])] / row[str(dims[0])]:.1f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--families", default=",".join(FAMILIES), help="comma list of posterior families")
    p.add_argument("--dims", default="8,16,32,64,128,256", help="comma list of latent sizes")
    p.add_argument("--depth", type=int, default=4, help="steps of the flows")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--feature-dim", type=int, default=300, help="size of the encoder features h")
    p.add_argument("--repeats", type=int, default=7, help="timed draws per point (the median is kept)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--hidden", type=int, nargs="*", default=None, help="override the MADE/conditioner widths")
    p.add_argument("--json", default="bench_sampling.json", help="results ('' for none)")
    p.add_argument("--png", default="bench_sampling.png", help="plot ('' for none)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = [f for f in families if f not in POSTERIORS.names()]
    if unknown:
        p.error(f"--families: unknown {', '.join(unknown)}")
    dims = [int(d) for d in args.dims.split(",")]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    ms: dict[str, dict[str, float]] = {}
    for family in families:
        ms[family] = {}
        for d in dims:
            torch.manual_seed(args.seed)
            cfg = posterior_config(family, args.depth)
            if args.hidden is not None and "hidden_dims" in cfg:
                cfg["hidden_dims"] = list(args.hidden)
            q = POSTERIORS.build(cfg, latent_dim=d, feature_dim=args.feature_dim).to(device).eval()
            h = torch.randn(args.batch_size, args.feature_dim, device=device)
            ms[family][str(d)] = 1e3 * statistics.median(time_draw(q, h, args.repeats, device))
    result = {
        "device": str(device),
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "torch": torch.__version__,
        "batch_size": args.batch_size,
        "feature_dim": args.feature_dim,
        "depth": args.depth,
        "dims": dims,
        "repeats": args.repeats,
        "load_before": None if load is None else round(load, 2),
        "load_after": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "ms": ms,
    }
    print(
        f"drawing a batch of {args.batch_size} from q(z|x) (ms, median of {args.repeats}); flows of depth "
        f"{args.depth}; {device}, {result['threads']} threads; load {result['load_before']} -> {result['load_after']}"
    )
    print(markdown(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.png:
        plot(result, Path(args.png))
        print(f"wrote {args.png}")
    return result


if __name__ == "__main__":
    main()
