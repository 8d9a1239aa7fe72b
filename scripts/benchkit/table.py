r"""The benchmark's results as tables on the terminal, and the vaeflow/pyro comparison."""

from __future__ import annotations

import math
from typing import Any

from vaeflow.stats import mean_se

__all__ = ["report", "compare", "print_table"]


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
    se = mean_se(diffs)[1]
    return None if math.isnan(se) else se


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
