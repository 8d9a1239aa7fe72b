r"""``vaeflow report <sweep dir | run dirs...> [--out DIR]``: one table and one picture of
a sweep (:mod:`vaeflow.report`).

Prints a table of every run found (failed and unfinished ones included) and writes
``results.csv``, ``results.md``, ``depth.png`` (test NLL, -ELBO, their gap and the cost
against flow depth), ``curves.png`` (validation ELBO over epochs) and ``samples.png``
(samples and reconstructions of each finished run's best checkpoint) to ``--out``
(default: ``<dir>/report`` for one directory, else ``outputs/report/<date>_<time>``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from vaeflow.errors import VaeflowError
from vaeflow.report import collect, gaps_table, notes, rich_table, summarize, summary_table, write_report

__all__ = ["main", "parser", "report"]

EXAMPLES = """examples:
  vaeflow report outputs/train/multirun/2026-01-01_12-00-00
  vaeflow report outputs/train/multirun/A outputs/train/multirun/B --out reports/flows
  vaeflow report outputs/train/2026-01-01_12-00-00          (a single run)
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vaeflow report",
        description="Tables and plots of training runs: a sweep directory, or run directories "
        "(searched recursively for the runs vaeflow train wrote).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "dirs", nargs="+", metavar="DIR", help="a sweep directory, run directories, or any parent of them"
    )
    p.add_argument(
        "--out", metavar="DIR", help="where to write the files (default: <DIR>/report for one DIR)"
    )
    p.add_argument("--no-plots", action="store_true", help="write the CSV and Markdown only")
    p.add_argument(
        "--baseline",
        metavar="RUN",
        help="the run (name or label) that Δ NLL is against (default: the first mean_field run "
        "with a vaeflow eval of the test split)",
    )
    p.add_argument(
        "--no-samples",
        action="store_true",
        help="skip samples.png and posterior.png (they load every finished run's best checkpoint and dataset)",
    )
    return p


def report(
    dirs: list[str],
    out: str | None = None,
    plots: bool = True,
    samples: bool = True,
    baseline: str | None = None,
) -> int:
    r"""Runs the command; returns its exit status."""
    from rich.console import Console

    missing = [d for d in dirs if not Path(d).is_dir()]
    if missing:
        print(f"error: {missing[0]}: no such directory; give a sweep or run directory", file=sys.stderr)
        return 2
    try:
        runs, sweeps = collect(dirs, baseline=baseline)
    except VaeflowError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not runs:
        print(
            f"error: no vaeflow train runs under {', '.join(dirs)} (a run directory holds .hydra/config.yaml)",
            file=sys.stderr,
        )
        return 2
    if out is None:
        out = (
            Path(dirs[0]) / "report"
            if len(dirs) == 1
            else Path("outputs/report") / time.strftime("%Y-%m-%d_%H-%M-%S")
        )
    console = Console() if sys.stdout.isatty() else Console(width=220)
    title = f"{len(runs)} run{'s' * (len(runs) != 1)} under {', '.join(dirs)}"
    console.print(rich_table(runs, title=title))
    groups = summarize(runs)
    if any(g.n > 1 for g in groups):
        console.print(summary_table(groups, title="mean over seeds (± standard error)"))
    if any(r.gaps for r in runs):
        console.print(
            gaps_table(runs, title="inference gaps (nats, ± standard error over the evaluated images)")
        )
    files = write_report(runs, out, sweeps, sources=dirs, plots=plots, samples=samples)
    for line in notes(runs, sweeps):  # after the files: samples.png notes the runs it left out
        console.print(
            line, style="yellow" if not line.startswith("failed") else "red", highlight=False, markup=False
        )
    console.print("wrote " + ", ".join(str(p) for p in files.values()), highlight=False, markup=False)
    return 0


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    code = report(
        args.dirs, args.out, plots=not args.no_plots, samples=not args.no_samples, baseline=args.baseline
    )
    if code:
        sys.exit(code)
