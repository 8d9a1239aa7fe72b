r"""The report as text: per-run and per-group tables (:func:`table_rows`,
:func:`summary_rows`), the notes on runs not finished and the captions, the same tables
for the terminal (:func:`rich_table`, :func:`summary_table`), and the files
``results.csv`` (:func:`write_csv`) and ``results.md`` (:func:`write_markdown`, with each
run's :func:`train_command`).
"""

from __future__ import annotations

import csv
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vaeflow.report.compare import Group, summarize
from vaeflow.report.find import Sweep
from vaeflow.report.run import Run, _finite
from vaeflow.stats import bits_per_dim

__all__ = [
    "table_rows",
    "gap_rows",
    "gaps_table",
    "summary_rows",
    "notes",
    "rich_table",
    "summary_table",
    "csv_row",
    "write_csv",
    "write_markdown",
    "train_command",
    "CSV_COLUMNS",
]


# --------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------


def _f(value: float | None, digits: int = 2) -> str:
    return f"{value:.{digits}f}" if _finite(value) else ("nan" if isinstance(value, float) else "—")


def _pm(value: float | None, se: float | None, digits: int = 2) -> str:
    if not _finite(value):
        return _f(value, digits)
    return f"{value:.{digits}f} ± {se:.{digits}f}" if _finite(se) else f"{value:.{digits}f}"


def _duration(seconds: float | None) -> str:
    if not _finite(seconds):
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, s = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {s:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def _count(value: float | None) -> str:
    return f"{value:,.0f}" if _finite(value) else "—"


def _status(run: Run) -> str:
    if run.status == "completed":
        return "early stop" if run.stopped_by == "early_stopping" else "completed"
    if run.status == "running":
        return f"running ({run.epochs or 0}/{run.max_epochs or '?'})"
    return run.status


def _depth(run_or_group: Run | Group) -> str:
    return str(run_or_group.depth) if run_or_group.depth else "—"


def _delta(run: Run) -> str:
    if run.delta is None:
        return "—"
    if run.baseline == (run.label or run.name):
        return "baseline"
    mean, se = run.delta
    return f"{mean:+.2f} ± {se:.2f}"


def _k(run: Run) -> str:
    if run.exact:
        k = "quadrature"
    elif not run.k:
        return "—"
    else:
        k = str(run.k)
    if run.examples and run.split_size and run.examples < run.split_size:
        return f"{k} ({run.examples:,} images)"  # evaluated on a seeded subset
    return k


def table_rows(runs: Sequence[Run]) -> tuple[list[str], list[list[str]]]:
    r"""The report's table as text: ``(header, rows)``, one row per run."""
    show_setting = any(r.setting for r in runs)
    show_dataset = len({r.dataset for r in runs}) > 1
    show_objective = any(r.objective != "elbo" for r in runs)
    header = [*(["dataset"] if show_dataset else []), "family", "depth", "seed"]
    header += [*(["objective"] if show_objective else []), *(["setting"] if show_setting else [])]
    header += ["status", "epochs", "parameters"]
    show_delta = any(r.delta for r in runs)
    header += ["test ELBO", "test NLL ± se", *(["Δ NLL ± paired se"] if show_delta else [])]
    show_bits = any(r.bits_per_dim is not None for r in runs)
    header += ["bits/dim ± se", *(["Δ bits/dim"] if show_delta else [])] if show_bits else []
    show_units = any(r.active_units is not None for r in runs)
    header += ["k", "KL", *(["active units"] if show_units else []), "train time", "images/s", "run"]
    rows = []
    for r in runs:
        row = [*([r.dataset] if show_dataset else []), r.family, _depth(r), str(r.seed)]
        row += [
            *([r.objective] if show_objective else []),
            *([r.setting] if show_setting else []),
            _status(r),
        ]
        row += [str(r.epochs) if r.epochs is not None else "—", _count(r.parameters)]
        row += [_f(r.elbo), _pm(r.nll, r.nll_se)]
        if show_delta:
            row.append(_delta(r))
        if show_bits:
            row += _bits(r, show_delta)
        row += [_k(r), _f(r.kl), *([_units(r)] if show_units else [])]
        row += [_duration(r.train_time_s), _count(r.images_per_s), r.label or r.name]
        rows.append(row)
    return header, rows


def _bits(run: Run, delta: bool) -> list[str]:
    r"""bits/dim ± se, and the paired difference in bits/dim (:func:`~vaeflow.stats.bits_per_dim`)."""
    if run.bits_per_dim is None:
        return ["—", *(["—"] if delta else [])]

    def bits(nats: float | None) -> float | None:
        return bits_per_dim(nats, run.dims, run.levels)

    cells = [_pm(run.bits_per_dim, bits(run.nll_se), 4)]
    if delta:
        cells.append(f"{bits(run.delta[0]):+.4f} ± {bits(run.delta[1]):.4f}" if run.delta else "—")
    return cells


def _units(run: Run) -> str:
    latent = run.config.get("model.latent_dim")
    return "—" if run.active_units is None else f"{run.active_units}/{latent}"


#: the gaps of :func:`gap_rows`, in the order of Cremer et al.'s Table 2
GAPS = (
    ("approximation_same", "approximation gap"),
    ("amortization_same", "amortization gap"),
    ("inference", "inference gap"),
    ("approximation", "gap of a flexible local q"),
)


def gap_rows(runs: Sequence[Run]) -> tuple[list[str], list[list[str]]]:
    r"""The inference gaps of the runs that have a ``vaeflow eval gaps=true`` (Cremer et al.
    2018): ``(header, rows)``, nats, mean ± standard error over the evaluated images."""
    with_gaps = [r for r in runs if r.gaps]
    show_setting = any(r.setting for r in with_gaps)
    header = ["family", "depth", *(["setting"] if show_setting else []), "images"]
    header += [name for _, name in GAPS] + ["log p(x) by", "run"]
    rows = []
    for r in with_gaps:
        cells = r.gaps.get("rows", {})
        row = [r.family, _depth(r), *([r.setting] if show_setting else []), str(r.gaps.get("n", "—"))]
        row += [_pm(cells.get(key, {}).get("mean"), cells.get(key, {}).get("se"), 3) for key, _ in GAPS]
        row += [_rule(r.gaps), r.label or r.name]
        rows.append(row)
    return header, rows


def _rule(gaps: dict[str, Any]) -> str:
    rule = gaps.get("log_px_rule")
    if rule == "quadrature":
        return "quadrature"
    if rule:
        return f"largest IW, k={gaps.get('k')}"
    return f"least-se IW, k={gaps.get('k')} (older eval)"  # before vaeflow chose the largest estimate


def summary_rows(groups: Sequence[Group]) -> tuple[list[str], list[list[str]]]:
    r"""The table of :func:`summarize`'s groups: ``(header, rows)``."""
    show_setting = any(g.setting for g in groups)
    show_dataset = len({g.dataset for g in groups}) > 1
    header = [
        *(["dataset"] if show_dataset else []),
        "family",
        "depth",
        *(["setting"] if show_setting else []),
    ]
    header += ["runs", "test NLL", "test -ELBO", "-ELBO - NLL", "s/epoch"]
    rows = [
        [*([g.dataset] if show_dataset else []), g.family, _depth(g), *([g.setting] if show_setting else []),
         str(g.n), _pm(g.nll, g.nll_se), _pm(g.neg_elbo, g.neg_elbo_se), _pm(g.gap, g.gap_se),
         _f(g.seconds_per_epoch)]
        for g in groups
    ]  # fmt: skip
    return header, rows


def notes(runs: Sequence[Run], sweeps: Sequence[Sweep] = ()) -> list[str]:
    r"""One line per run that is not finished (failed, running, incomplete, or completed
    without test figures), per failed evaluation, per run left out of ``samples.png``
    (:func:`plot_samples`) and per sweep with jobs not started."""
    lines = []
    for r in runs:
        if r.status in ("failed", "incomplete"):
            lines.append(f"{r.status}: {r.label or r.name}: {r.message}")
        elif r.status == "running":
            lines.append(f"running: {r.label or r.name}: {r.message}")
        elif not r.finished:
            lines.append(f"{r.status} without finite test figures: {r.label or r.name}")
        if r.eval_failed:
            lines.append(f"eval failed: {r.label or r.name}: {r.eval_failed}")
        if r.samples_skipped:
            lines.append(f"samples skipped: {r.label or r.name}: {r.samples_skipped}")
        if r.posterior_skipped:
            lines.append(f"posterior skipped: {r.label or r.name}: {r.posterior_skipped}")
    for s in sweeps:
        if s.pending:
            lines.append(f"pending: {s.pending} of {s.expected} jobs of {s.path} have not started")
    return lines


def _unfinished_note(runs: Sequence[Run], sweeps: Sequence[Sweep]) -> str:
    counts: dict[str, int] = {}
    for r in runs:
        if not r.finished:
            key = r.status if r.status != "completed" else "without test figures"
            counts[key] = counts.get(key, 0) + 1
    pending = sum(s.pending for s in sweeps)
    if pending:
        counts["not started"] = pending
    if not counts:
        return ""
    return "not shown: " + ", ".join(f"{n} {what}" for what, n in counts.items()) + " (see the table)"


def _caption(runs: Sequence[Run]) -> str:
    sources = {r.source for r in runs if r.finished}
    parts = ["ELBO, NLL and KL in nats per image on the test split, from the best validation checkpoint"]
    if "eval" in sources:
        parts.append("NLL ± s.e. over test images from `vaeflow eval` where a run has one")
    if any(r.exact for r in runs):
        parts.append(
            "k = quadrature: the exact NLL of a run with 1 or 2 latents (up to its grid error, "
            "`eval/quad_error_max`), not an estimate; its Δ NLL pairs only with other such runs"
        )
    if "train" in sources:
        parts.append(
            "elsewhere the training's final figures: the same estimator with k = trainer.iw_k on a seeded "
            "subset of trainer.iw_limit test images (k column: how many)"
        )
    if any(r.finished and not r.same_images for r in runs):
        parts.append("older runs' training figures: the ELBO of the whole test split, the NLL of a subset")
    base = next((r.baseline for r in runs if r.delta is not None), None)
    if base:
        parts.append(
            f"Δ NLL: NLL minus that of {base} on the same test images, with the standard error of "
            "the per-image differences"
            + (
                "; a run evaluated on a subset of the test images is paired on those"
                if any(r.paired and r.examples and r.split_size and r.examples < r.split_size for r in runs)
                else ""
            )
        )
    return "; ".join(parts) + "."


def rich_table(runs: Sequence[Run], title: str | None = None):
    r"""A :class:`rich.table.Table` of the runs, one row per run."""
    from rich.table import Table

    header, rows = table_rows(runs)
    styles = {"completed": "", "early stop": "", "failed": "red", "incomplete": "yellow"}
    numeric = {
        "depth",
        "seed",
        "epochs",
        "parameters",
        "test ELBO",
        "test NLL ± se",
        "Δ NLL ± paired se",
        "bits/dim ± se",
        "Δ bits/dim",
        "k",
        "KL",
        "train time",
        "images/s",
    }
    table = Table(title=title, caption=_caption(runs), caption_justify="left")
    for name in header:
        table.add_column(
            name, justify="right" if name in numeric else "left", no_wrap=name not in ("setting", "run")
        )
    for run, row in zip(runs, rows):
        status = _status(run)
        style = styles.get(status, "cyan" if status.startswith("running") else "")
        table.add_row(*row, style=style or None)
    return table


def gaps_table(runs: Sequence[Run], title: str | None = None):
    r"""A :class:`rich.table.Table` of :func:`gap_rows`."""
    from rich.table import Table

    header, rows = gap_rows(runs)
    table = Table(title=title, caption=GAPS_CAPTION, caption_justify="left")
    for name in header:
        table.add_column(
            name, justify="left" if name in ("family", "setting", "log p(x) by", "run") else "right"
        )
    for row in rows:
        table.add_row(*row)
    return table


def summary_table(groups: Sequence[Group], title: str | None = None):
    r"""A :class:`rich.table.Table` of :func:`summarize`'s groups."""
    from rich.table import Table

    header, rows = summary_rows(groups)
    table = Table(title=title)
    for name in header:
        table.add_column(name, justify="left" if name in ("dataset", "family", "setting") else "right")
    for row in rows:
        table.add_row(*row)
    return table


# --------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------

CSV_COLUMNS = [
    "run", "status", "message", "dataset", "family", "depth", "seed", "objective", "setting", "epochs",
    "max_epochs", "stopped_by", "best_epoch", "parameters", "train_time_s", "images_per_s",
    "test_elbo", "test_nll", "test_nll_se", "test_kl", "test_elbo_se", "k", "source",
    "metrics_test_elbo", "metrics_test_rec", "metrics_test_kl", "metrics_test_iw_nll",
    "metrics_iw_k", "metrics_val_elbo", "metrics_val_iw_nll", "eval_iw_nll", "eval_iw_nll_se",
    "eval_elbo", "eval_elbo_se", "eval_kl", "eval_k", "delta_nll", "delta_nll_se", "baseline",
    "eval_json", "overrides", "path", "active_units", "bits_per_dim", "gap_images", "approximation_gap", "approximation_gap_se",
    "amortization_gap", "amortization_gap_se", "inference_gap", "inference_gap_se", "gap_log_px_rule",
    "approximation_same_gap", "approximation_same_gap_se", "amortization_same_gap", "amortization_same_gap_se",
]  # fmt: skip


def csv_row(run: Run) -> dict[str, Any]:
    r"""One run as a CSV row (full precision; empty where there is no value)."""
    m, e = run.metrics or {}, run.eval or {}
    row = {
        "run": run.name, "status": run.status, "message": run.message, "dataset": run.dataset,
        "family": run.family, "depth": run.depth, "seed": run.seed, "objective": run.objective,
        "setting": run.setting,
        "epochs": run.epochs, "max_epochs": run.max_epochs, "stopped_by": run.stopped_by,
        "best_epoch": run.best_epoch, "parameters": run.parameters, "train_time_s": run.train_time_s,
        "images_per_s": run.images_per_s, "test_elbo": run.elbo, "test_nll": run.nll,
        "test_nll_se": run.nll_se, "test_kl": run.kl, "test_elbo_se": run.elbo_se, "k": run.k,
        "source": run.source, "metrics_test_elbo": m.get("test/elbo"), "metrics_test_rec": m.get("test/rec"),
        "metrics_test_kl": m.get("test/kl"), "metrics_test_iw_nll": m.get("test/iw_nll"),
        "metrics_iw_k": m.get("iw_k"), "metrics_val_elbo": m.get("val/elbo"),
        "metrics_val_iw_nll": m.get("val/iw_nll"), "eval_iw_nll": e.get("eval/iw_nll"),
        "eval_iw_nll_se": e.get("eval/iw_nll_se"), "eval_elbo": e.get("eval/elbo"),
        "eval_elbo_se": e.get("eval/elbo_se"), "eval_kl": e.get("eval/kl"), "eval_k": e.get("k"),
        "delta_nll": run.delta[0] if run.delta else None, "delta_nll_se": run.delta[1] if run.delta else None,
        "baseline": run.baseline, "eval_json": str(run.eval_path or ""), "overrides": " ".join(run.overrides),
        "path": str(run.path), "active_units": run.active_units, "bits_per_dim": run.bits_per_dim,
    }  # fmt: skip
    gaps = run.gaps or {}
    row["gap_images"], row["gap_log_px_rule"] = gaps.get("n"), gaps.get("log_px_rule")
    for key in ("approximation", "amortization", "inference", "approximation_same", "amortization_same"):
        cell = gaps.get("rows", {}).get(key, {})
        row[f"{key}_gap"], row[f"{key}_gap_se"] = cell.get("mean"), cell.get("se")
    return {k: ("" if v is None else v) for k, v in row.items()}


def write_csv(runs: Sequence[Run], path: str | Path) -> Path:
    r"""Writes one row per run (:data:`CSV_COLUMNS`, floats at full precision)."""
    path = Path(path)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for run in runs:
            writer.writerow(csv_row(run))
    return path


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|")

    right = {"depth", "seed", "epochs", "parameters", "test ELBO", "test NLL ± se", "Δ NLL ± paired se", "bits/dim ± se", "Δ bits/dim", "k", "KL",
             "train time", "images/s", "runs", "test NLL", "test -ELBO", "-ELBO - NLL", "s/epoch", "active units",
             "images", *(name for _, name in GAPS)}  # fmt: skip
    lines = ["| " + " | ".join(cell(h) for h in header) + " |"]
    lines.append("| " + " | ".join("---:" if h in right else "---" for h in header) + " |")
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


#: what the gaps table shows
GAPS_CAPTION = (
    "Nats per image, mean ± standard error over the evaluated test images (Cremer et al. 2018): "
    "approximation = log p(x) - ELBO of the run's family fitted to each image (the best q the family has), "
    "amortization = that ELBO - the encoder's ELBO; they add up to the inference gap log p(x) - ELBO. The "
    "last column: log p(x) - ELBO of a more flexible local posterior (the family, then an affine step and "
    "planar steps), how far the decoder's posteriors are from a simple one. log p(x) by quadrature for 1 or "
    "2 latents, else the largest of three importance-weighted estimates."
)


def train_command(run: Run) -> str:
    r"""The ``vaeflow train`` command line that repeats ``run``: its overrides, shell-quoted."""
    return " ".join(["vaeflow train", *(shlex.quote(o) for o in run.overrides)])


def write_markdown(
    runs: Sequence[Run],
    path: str | Path,
    sweeps: Sequence[Sweep] = (),
    images: Sequence[str] = (),
    sources: Sequence[str | Path] = (),
) -> Path:
    r"""Writes the report as Markdown: the per-run table, the per-(family, depth) means
    when some runs differ only in their seed, the notes, and links to the plots."""
    path = Path(path)
    out = ["# vaeflow report", ""]
    if sources:
        out += ["Runs under " + ", ".join(f"`{s}`" for s in sources) + ".", ""]
    out += [_markdown(*table_rows(runs)), "", _caption(runs), ""]
    groups = summarize(runs)
    if any(g.n > 1 for g in groups):
        out += ["## Mean over seeds (± standard error)", "", _markdown(*summary_rows(groups)), ""]
    if any(r.gaps for r in runs):
        out += ["## Inference gaps", "", _markdown(*gap_rows(runs)), "", GAPS_CAPTION, ""]
    lines = notes(runs, sweeps)
    if lines:
        out += ["## Not finished", ""] + [f"- {line}" for line in lines] + [""]
    commands = [(r.label or r.name, train_command(r)) for r in runs if r.overrides]
    if commands:
        out += ["## Commands", "", "Each run again (its `.hydra/overrides.yaml`):", ""]
        out += [f"- {name}: `{command}`" for name, command in commands] + [""]
    for image in images:
        out += [f"![{Path(image).stem}]({Path(image).name})", ""]
    path.write_text("\n".join(out))
    return path
