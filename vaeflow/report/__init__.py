r"""Sweep reports: which posterior family, at which depth, tightens the bound and improves
the likelihood, and at what cost.

Pure functions over run directories (the ones ``vaeflow train`` writes):

* :func:`collect` finds the runs under sweep or run directories (``find``) and reads each
  one's config choices (``.hydra/``), ``metrics.json``, its latest test-split ``eval.json``
  (``vaeflow eval`` or ``+eval=true``), ``failed.txt`` or, while it trains,
  ``history.jsonl`` (``run``); what sets runs apart is their setting (``settings``), and
  :func:`paired_deltas` compares them on the same test images (``compare``);
* :func:`summarize` averages runs that differ only in their seed;
* :func:`rich_table`, :func:`write_csv`, :func:`write_markdown`, :func:`plot_depth`,
  :func:`plot_curves` and :func:`plot_samples` (what each finished run's best checkpoint
  generates and reconstructs) present them; :func:`write_report` writes them all.

Every run found is shown, whatever its state: ``completed``, ``failed`` (with the first
line of its ``failed.txt``), ``running`` (with its last finished epoch) or ``incomplete``
(stopped without metrics or an error, e.g. killed); jobs of a sweep that have not started
yet are counted from its ``multirun.yaml``.

Families without flow steps (``mean_field``, ``full_cov``, ``autoregressive``: no
``posterior.depth`` key) are reported at depth 0 and drawn as reference lines.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from vaeflow.report.compare import Group, paired_deltas, summarize
from vaeflow.report.find import Sweep, collect, expected_jobs
from vaeflow.report.plots import plot_curves, plot_depth, plot_gaps
from vaeflow.report.posterior import plot_posteriors
from vaeflow.report.run import Run, load_run
from vaeflow.report.samples import plot_samples, sample_images
from vaeflow.report.tables import (
    gap_rows,
    gaps_table,
    notes,
    rich_table,
    summary_table,
    table_rows,
    write_csv,
    write_markdown,
)

__all__ = [
    "Group",
    "Run",
    "Sweep",
    "collect",
    "expected_jobs",
    "gap_rows",
    "gaps_table",
    "load_run",
    "notes",
    "paired_deltas",
    "plot_gaps",
    "plot_posteriors",
    "plot_samples",
    "rich_table",
    "sample_images",
    "summarize",
    "summary_table",
    "table_rows",
    "write_report",
]


def write_report(
    runs: Sequence[Run],
    out_dir: str | Path,
    sweeps: Sequence[Sweep] = (),
    sources: Sequence[str | Path] = (),
    plots: bool = True,
    samples: bool = True,
) -> dict[str, Path]:
    r"""Writes ``results.csv``, ``results.md``, ``depth.png``, ``curves.png``,
    ``samples.png``, and where the runs allow ``posterior.png`` (1 or 2 latents) and
    ``gaps.png`` (a ``vaeflow eval gaps=true``), under ``out_dir``; returns their paths by name.

    Arguments:
        runs: the runs, in the report's order (:func:`collect`).
        out_dir: where to write.
        sweeps: the sweeps among the report's directories (for the jobs not started).
        sources: the directories given, named in ``results.md``.
        plots: whether to draw the figures (else only the CSV and Markdown files).
        samples: whether to draw ``samples.png`` and ``posterior.png`` (they load every
            finished run's best checkpoint and dataset; runs left out are noted in ``results.md``).
    """
    import matplotlib

    matplotlib.use("Agg")  # no display: the figures are files
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"csv": write_csv(runs, out_dir / "results.csv")}
    images = []
    if plots:
        files["depth"] = plot_depth(runs, out_dir / "depth.png", sweeps)
        files["curves"] = plot_curves(runs, out_dir / "curves.png")
        if samples:
            files["samples"] = plot_samples(runs, out_dir / "samples.png", sweeps)
            posterior = plot_posteriors(runs, out_dir / "posterior.png", sweeps)
            if posterior is not None:
                files["posterior"] = posterior
        gaps = plot_gaps(runs, out_dir / "gaps.png")
        if gaps is not None:
            files["gaps"] = gaps
        images = [files[n].name for n in ("depth", "curves", "samples", "posterior", "gaps") if n in files]
    files["markdown"] = write_markdown(runs, out_dir / "results.md", sweeps, images, sources)
    return files
