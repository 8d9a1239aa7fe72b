r"""How noisy each gradient estimator of the IW bound is, on a trained model (Tucker et al., 2019).

For one trained run and each ``k``, draws the gradient of the IW bound ``--draws`` times on
the same ``--images`` test images (independent noise each time), with every estimator the
run's family supports (``reparam``, ``stl``, ``dreg``), and reports for the inference
network (encoder and posterior) and for the decoder:

    variance     the trace of the gradient's covariance over draws (the sum of the
                 per-parameter variances), per image of the batch
    SNR          the mean over parameters of |E g| / std g (Rainforth et al., 2018)

DReG's inference-network variance should be below the reparameterization gradient's at
large k, and its decoder gradient the same. ``--run`` takes a run directory written by
``vaeflow train``; without it a mean-field IWAE (k=64) is trained first on the embedded
digits for ``--train-epochs`` epochs (seeded), in a temporary directory::

    python scripts/gradient_variance.py                       # digits, trained here (about a minute)
    python scripts/gradient_variance.py --run outputs/train/<run> --k 1 8 64 --draws 200

It prints a table and writes ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

import torch
from hydra import compose, initialize_config_module

from vaeflow.evaluate.runs import load_trained
from vaeflow.objectives import IwaeObjective
from vaeflow.training import train


def train_reference(epochs: int, run_dir: Path) -> Path:
    r"""A mean-field IWAE (k=64, DReG) on the embedded digits, trained for ``epochs``."""
    with initialize_config_module("vaeflow.conf", version_base=None):
        cfg = compose(
            "train",
            overrides=["objective=iwae", "objective.k=64", "objective.gradient=dreg", f"trainer.max_epochs={epochs}",
                       "trainer.progress=plain", "trainer.images=0", "trainer.test=false"],
        )  # fmt: skip
    train(cfg, run_dir)
    return run_dir


def measure(model, objective, x: torch.Tensor, draws: int, seed: int) -> dict[str, float]:
    r"""Variance (trace, per image) and mean SNR of the inference and decoder gradients."""
    inference = [*model.encoder.parameters(), *model.posterior.parameters()]
    decoder = list(model.decoder.parameters())
    generator = torch.Generator().manual_seed(seed)
    beta = torch.ones((), dtype=x.dtype)
    grads: dict[str, list[torch.Tensor]] = {"inference": [], "decoder": []}
    for _ in range(draws):
        eps = torch.randn(objective.samples, x.shape[0], model.latent_dim, generator=generator, dtype=x.dtype)
        model.zero_grad(set_to_none=True)
        objective(model, x, eps, beta)[0].backward()
        for part, params in (("inference", inference), ("decoder", decoder)):
            grads[part].append(torch.cat([p.grad.reshape(-1) for p in params if p.grad is not None]))
    out = {}
    for part, values in grads.items():
        g = torch.stack(values).double()
        mean, std = g.mean(0), g.std(0)
        live = std > 0
        out[f"{part}_variance"] = float(g.var(0).sum()) * x.shape[0]
        out[f"{part}_snr"] = float((mean[live].abs() / std[live]).mean())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", help="a run directory of vaeflow train (default: train one on digits)")
    parser.add_argument("--k", type=int, nargs="+", default=[64])
    parser.add_argument("--images", type=int, default=16, help="test images in the batch")
    parser.add_argument("--draws", type=int, default=100, help="independent gradients per estimator")
    parser.add_argument("--train-epochs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="gradient_variance.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(args.run) if args.run else train_reference(args.train_epochs, Path(tmp) / "run")
        trained = load_trained(run)
    model, family = trained.model, str(trained.config["posterior"]["name"])
    x = trained.data.test.images[: args.images]
    rows = []
    for k in args.k:
        for gradient in ("reparam", "stl", "dreg"):
            try:
                objective = IwaeObjective(model, k=k, gradient=gradient, family=family)
            except Exception as e:  # a family without log q of a given z: say so and go on
                print(f"k={k} {gradient}: skipped ({e})")
                continue
            rows.append({"k": k, "gradient": gradient, **measure(model, objective, x, args.draws, args.seed)})
    where = (
        run
        if args.run
        else f"trained here for {args.train_epochs} epochs on digits (objective=iwae k=64 dreg)"
    )
    print(f"run: {where}; posterior={family}, {x.shape[0]} test images, {args.draws} draws each")
    print(
        f"{'k':>4} {'gradient':>8} {'inference var':>14} {'inference SNR':>14} {'decoder var':>12} {'decoder SNR':>12}"
    )
    for r in rows:
        print(f"{r['k']:>4} {r['gradient']:>8} {r['inference_variance']:>14.4g} {r['inference_snr']:>14.3f} "
              f"{r['decoder_variance']:>12.4g} {r['decoder_snr']:>12.3f}")  # fmt: skip
    result = {
        "run": str(run),
        "posterior": family,
        "images": int(x.shape[0]),
        "draws": args.draws,
        "rows": rows,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    assert all(math.isfinite(r["inference_variance"]) for r in rows)


if __name__ == "__main__":
    main()
