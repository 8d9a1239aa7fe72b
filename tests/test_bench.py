"""Smoke tests of the benchmark scripts on tiny settings: they run, and say what they measured.

Neither needs the shared MNIST files (random binary images stand in) nor pyro-ppl (the
comparison is skipped, with the reason in the output); the comparison itself is tested
where pyro is installed.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
NO_PYRO = "pyro-ppl is not installed: pip install 'vaeflow[bench]'"
TINY = ["--in-process", "--steps", "4", "--warmup", "1", "--window", "1", "--hidden", "8", "--latent-dim", "3",
        "--depth", "2", "--batch-size", "16", "--val-images", "20", "--iw-k", "8", "--iw-examples", "2",
        "--iw-repeats", "1", "--matmul-size", "32", "--matmul-seconds", "0.01", "--random-train", "64",
        "--threads", "1"]  # fmt: skip


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_bench_measures_every_asked_family_without_mnist_or_pyro(tmp_path, monkeypatch, capsys):
    bench = load("bench")
    monkeypatch.setattr(bench, "pyro_available", lambda: "pyro-ppl is not installed (test)")
    out = tmp_path / "bench.json"
    result = bench.main(
        [
            *TINY,
            "--families",
            "mean_field,maf,planar",
            "--data-root",
            str(tmp_path / "none"),
            "--json",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    assert (
        "RANDOM binary images" in printed and "pyro comparison skipped: pyro-ppl is not installed" in printed
    )
    assert json.loads(out.read_text())["runs"] == json.loads(json.dumps(result["runs"]))
    assert [r["family"] for r in result["runs"]] == ["mean_field", "maf", "planar"]
    for run in result["runs"]:
        assert "error" not in run, run
        assert run["impl"] == "vaeflow" and run["images_per_s"] > 0 and run["flops_per_step"] > 0
        assert 0 < run["train_fraction"] and run["iw_samples_per_s"] > 0 and run["peak_rss_mb"] > 0
        assert run["train_elbo"] < 0 and run["val_elbo"] < 0
    assert result["comparison"] == [] and result["matmul_flops_per_s"]["used"] > 0


def test_bench_runs_each_family_in_its_own_process(tmp_path):
    bench = load("bench")
    argv = [a for a in TINY if a != "--in-process"]
    result = bench.main([*argv, "--families", "householder", "--no-pyro", "--random-data", "--json", ""])
    (run,) = result["runs"]
    assert "error" not in run, run
    assert run["family"] == "householder" and run["images_per_s"] > 0 and run["peak_rss_of"] == "vaeflow"
    assert result["pyro_skipped"] == "--no-pyro"


def test_bench_compares_with_pyro(tmp_path, capsys):
    pytest.importorskip("pyro", reason=NO_PYRO, exc_type=ImportError)
    bench = load("bench")
    argv = [
        *TINY,
        "--families",
        "mean_field,iaf",
        "--random-data",
        "--interleave",
        "--seeds",
        "2",
        "--json",
        "",
    ]
    result = bench.main(argv)
    assert [(r["impl"], r["family"]) for r in result["runs"]] == [
        ("vaeflow", "mean_field"),
        ("pyro", "mean_field"),
        ("vaeflow", "iaf"),
        ("pyro", "iaf"),
    ]
    assert all("error" not in r for r in result["runs"]), result["runs"]
    assert {c["family"] for c in result["comparison"]} == {"mean_field", "iaf"}
    assert all(c["speedup"] > 0 and c["val_elbo_diff_se"] is not None for c in result["comparison"])
    assert all(len(r["seeds"]) == 2 and r["peak_rss_of"] == "vaeflow+pyro" for r in result["runs"])
    assert "vaeflow against pyro-ppl" in capsys.readouterr().out


def test_pyro_reference_model_trains_every_family():
    pytest.importorskip("pyro", reason=NO_PYRO, exc_type=ImportError)
    sys.path.insert(0, str(SCRIPTS))
    try:
        from pyro_models import PYRO_FAMILIES, build_pyro_vae
    finally:
        sys.path.remove(str(SCRIPTS))
    x = torch.bernoulli(torch.full((4, 1, 28, 28), 0.2))
    for family in PYRO_FAMILIES:
        torch.manual_seed(0)
        model = build_pyro_vae(family, 3, [8], depth=2, iaf_hidden=[8])
        loss, rec, kl = model.loss(x)
        loss.backward()
        assert rec.shape == kl.shape == (4,) and torch.isfinite(loss)
        assert all(p.grad is not None for p in model.parameters()), family
        with torch.no_grad():
            bound = model.iwae_bound(x, 16, chunk=5)
        assert bound.shape == (4,) and torch.isfinite(bound).all()


def test_bench_sampling_writes_a_table_json_and_plot(tmp_path, capsys):
    sampling = load("bench_sampling")
    result = sampling.main(
        [
            "--families",
            "autoregressive,iaf",
            "--dims",
            "2,4",
            "--hidden",
            "8",
            "--repeats",
            "1",
            "--threads",
            "1",
            "--json",
            str(tmp_path / "s.json"),
            "--png",
            str(tmp_path / "s.png"),
        ]  # fmt: skip
    )
    assert set(result["ms"]) == {"autoregressive", "iaf"} and all(v > 0 for v in result["ms"]["iaf"].values())
    assert (tmp_path / "s.png").stat().st_size > 1000
    assert json.loads((tmp_path / "s.json").read_text())["dims"] == [2, 4]
    assert "| `autoregressive` |" in capsys.readouterr().out
