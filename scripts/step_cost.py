r"""The cost of a training step of any configuration, and the epochs that fit a CPU budget.

An equal CPU budget for configurations whose steps cost very different amounts (the IW
bound at k=50 against the ELBO, a flow against mean-field) is a number of epochs per
configuration: the budget divided by the measured seconds per epoch. This script measures
them the way the long runs train (the real data, ``trainer.threads``), on the steps after a
warm-up, and prints a row per configuration with the epochs of ``--budget-s``:

    python scripts/step_cost.py --budget-s 900 --common "experiment=iwae_cpu dataset.root=../shared/data" \
        vae="" iwae5="objective=iwae objective.k=5" iwae50="objective=iwae objective.k=50"

Measure under the load the runs will have (``scripts/mnist_comparison.sh`` trains two at a
time with one thread each: measure beside one other one-thread job). The seconds per epoch
are training steps only; validation is not part of the budget (``metrics.json``'s
``train_time_s`` counts the same).
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import tempfile
import time
from functools import partial

from benchkit.machine import timed
from hydra import compose, initialize_config_module

from vaeflow.training.loop import Trainer


def step_seconds(
    overrides: list[str], min_seconds: float, max_steps: int, warmup: int
) -> tuple[float, int, int]:
    r"""Median seconds per training step of the composed config (after the warm-up, each
    step waited for on its device), its steps per epoch, and how many steps were timed."""
    with initialize_config_module(config_module="vaeflow.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(cfg, run_dir)
        times: list[float] = []
        start = time.perf_counter()
        for i, x in enumerate(trainer.train_loader.epoch(0)):
            seconds, _ = timed(partial(trainer.train_batch, x, 1.0), trainer.device)
            if i >= warmup:
                times.append(seconds)
            if len(times) >= max_steps or (len(times) >= 5 and time.perf_counter() - start > min_seconds):
                break
        return statistics.median(times), len(trainer.train_loader), len(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", nargs="+", help='NAME="overrides" (the overrides of that configuration)')
    parser.add_argument("--common", default="", help="overrides every row shares")
    parser.add_argument("--budget-s", type=float, default=900.0, help="training seconds of each row")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--min-seconds", type=float, default=15.0, help="time each row at least this long")
    parser.add_argument("--max-steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()

    common = shlex.split(args.common) + [f"trainer.threads={args.threads}", "trainer.progress=plain"]
    print(f"| row | ms/step | steps/epoch | s/epoch | epochs in {args.budget_s:.0f} s | steps timed |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for row in args.rows:
        name, _, overrides = row.partition("=")
        seconds, steps, timed = step_seconds(
            common + shlex.split(overrides), args.min_seconds, args.max_steps, args.warmup
        )
        epoch_s = seconds * steps
        epochs = max(1, round(args.budget_s / epoch_s))
        print(f"| {name} | {1000 * seconds:.0f} | {steps} | {epoch_s:.0f} | {epochs} | {timed} |", flush=True)


if __name__ == "__main__":
    main()
