"""A table of wrong inputs through the command line: each gets one line that says what is
wrong and what to do, a non-zero exit, no traceback, and leaves no files behind."""

from __future__ import annotations

import gzip
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from vaeflow.cli import main

FAST = ["trainer.max_epochs=1", "trainer.progress=plain", "trainer.iw_k=2", "trainer.images=0"]


def amat(tmp: Path, lines: list[str]) -> Path:
    root = tmp / "bm"
    root.mkdir()
    good = " ".join(["0", "1"] * 392)
    for split in ("train", "valid", "test"):
        (root / f"binarized_mnist_{split}.amat").write_text("\n".join([good] * 3) + "\n")
    (root / "binarized_mnist_train.amat").write_text("\n".join(lines) + "\n")
    return root


def idx_root(tmp: Path, corrupt: bool) -> Path:
    raw = tmp / "mn" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for stem, n in (("train-images-idx3-ubyte", 20), ("t10k-images-idx3-ubyte", 5)):
        payload = struct.pack(">IIII", 0x0803, n, 28, 28) + bytes(n * 784)
        data = gzip.compress(payload)
        (raw / f"{stem}.gz").write_bytes(data[: len(data) // 2] if corrupt else data)
    return tmp / "mn"


def truncated_checkpoint(tmp: Path) -> Path:
    run = tmp / "old" / "checkpoints"
    run.mkdir(parents=True)
    torch.save({"model": {"w": torch.ones(5000)}, "config": {}}, run / "last.pt")
    data = (run / "last.pt").read_bytes()
    (run / "last.pt").write_bytes(data[: len(data) // 3])
    return tmp / "old"


class Hostile:
    def __reduce__(self):
        return (print, ("this must never run",))


def hostile_checkpoint(tmp: Path) -> Path:
    path = tmp / "evil" / "checkpoints" / "last.pt"
    path.parent.mkdir(parents=True)
    torch.save({"model": {}, "config": {}, "x": Hostile()}, path)
    return path


# (id, argv or a function of the temporary directory giving argv, what the line must say)
CASES: list[tuple[str, Callable[[Path], list[str]] | list[str], str]] = [
    ("unknown command", ["trian"], "unknown command 'trian'; known commands: train"),
    ("unknown group option", ["train", "posterior=foo"], "Could not find 'posterior/foo'; choose one of:"),
    ("unknown dataset", ["train", "dataset=cifar100"], "Could not find 'dataset/cifar100'"),
    ("unknown kl estimator", ["train", "kl=exact"], "Could not find 'kl/exact'"),
    ("unknown key", ["train", "trainer.epochs=3"], "unknown config key 'trainer.epochs'"),
    ("unknown top-level key", ["train", "latent_dim=3"], "unknown config key 'latent_dim'"),
    ("depth on mean field", ["train", "posterior.depth=4"], "unknown config key 'posterior.depth'"),
    ("malformed override", ["train", "trainer.max_epochs=3 ="], "Error parsing override"),
    ("unknown launcher", ["train", "hydra/launcher=slurmx"], "Could not find 'hydra/launcher/slurmx'"),
    ("multirun with --cfg", ["train", "-m", "seed=1,2", "--cfg", "job"], "Only one of --run, --multirun, --cfg"),
    ("depth 0", ["train", "posterior=iaf", "posterior.depth=0", *FAST], "posterior.depth=0: a flow needs at least one step"),
    ("negative depth", ["train", "posterior=iaf", "posterior.depth=-2", *FAST], "posterior.depth=-2"),
    ("latent dimension 0", ["train", "model.latent_dim=0", *FAST], "model.latent_dim=0"),
    ("analytic KL with a flow", ["train", "kl=analytic", "posterior=iaf", *FAST], "use kl=mc or kl=auto"),
    ("epochs not a number", ["train", "trainer.max_epochs=abc"], "trainer.max_epochs=abc"),
    ("batch size 0", ["train", "trainer.batch_size=0", *FAST], "trainer.batch_size=0"),
    ("learning rate 0", ["train", "optim.lr=0", *FAST], "optim.lr=0"),
    ("zero samples", ["train", "objective.samples=0", *FAST], "objective.samples=0"),
    ("unknown objective", ["train", "objective=vimco"], "Could not find 'objective/vimco'"),
    ("k of 0", ["train", "objective=iwae", "objective.k=0", *FAST], "objective.k=0"),
    ("k with the ELBO", ["train", "objective.k=5", *FAST], "unknown config key 'objective.k'"),
    ("DReG with the ELBO", ["train", "objective.gradient=dreg", *FAST], "objective.gradient=dreg is for objective=iwae"),
    ("unknown gradient", ["train", "objective=iwae", "objective.gradient=score", *FAST], "objective.gradient=score"),
    ("STL through planar", ["train", "objective=iwae", "objective.gradient=stl", "posterior=planar", *FAST],
     "posterior=planar cannot evaluate"),
    ("STL with the analytic KL", ["train", "objective.gradient=stl", "kl=analytic", *FAST], "use kl=mc or kl=auto"),
    ("zero hidden width", ["train", "encoder.hidden_dims=[300,0]", *FAST], "encoder.hidden_dims=[300, 0]"),
    ("unknown activation", ["train", "decoder.activation=swish", *FAST], "unknown activation 'swish'"),
    ("validation bigger than the data", ["train", "dataset.val_size=5000", *FAST], "dataset.val_size=5000"),
    ("unknown device", ["train", "trainer.device=tpu", *FAST], "trainer.device=tpu"),
    ("missing dataset directory", lambda t: ["train", "dataset=binarized_mnist", f"dataset.root={t / 'nope'}", *FAST],
     "binarized_mnist_train.amat not found"),
    ("truncated amat", lambda t: ["train", "dataset=binarized_mnist", f"dataset.root={amat(t, ['0 1 0'])}", *FAST],
     "binarized_mnist_train.amat"),
    ("amat line of the wrong length", lambda t: ["train", "dataset=binarized_mnist",
     f"dataset.root={amat(t, [' '.join(['0'] * 784), ' '.join(['0'] * 700)])}", *FAST], "line 2"),
    ("amat value other than 0/1", lambda t: ["train", "dataset=binarized_mnist",
     f"dataset.root={amat(t, [' '.join(['0'] * 783 + ['2'])])}", *FAST], "line 1"),
    ("corrupt IDX gz", lambda t: ["train", "dataset=mnist", f"dataset.root={idx_root(t, corrupt=True)}", *FAST],
     "train-images-idx3-ubyte.gz"),
    ("resume from a missing checkpoint", lambda t: ["train", f"trainer.resume={t / 'nothing.pt'}", *FAST],
     "not found"),
    ("resume from a truncated checkpoint", lambda t: ["train", f"trainer.resume={truncated_checkpoint(t)}", *FAST],
     "corrupt or truncated"),
    ("resume from a hostile checkpoint", lambda t: ["train", f"trainer.resume={hostile_checkpoint(t)}", *FAST],
     "refused"),
    ("eval of a missing directory", lambda t: ["eval", str(t / "nowhere")], "no such file or directory"),
    ("eval of a directory that is not a run", lambda t: ["eval", str(t)], "is not a vaeflow run directory"),
    ("eval with k=0", lambda t: ["eval", str(truncated_checkpoint(t)), "k=0"], "k=0"),
    ("eval of an unknown split", lambda t: ["eval", str(truncated_checkpoint(t)), "split=dev"], "split=dev"),
    ("eval of a missing checkpoint file", lambda t: ["eval", f"run={truncated_checkpoint(t) / 'checkpoints' / 'x.pt'}"],
     "no such file or directory"),
    ("eval of a truncated checkpoint", lambda t: ["eval", str(truncated_checkpoint(t)), "checkpoint=last"],
     "corrupt or truncated"),
    ("eval of a hostile checkpoint", lambda t: ["eval", str(hostile_checkpoint(t)), "checkpoint=last"], "refused"),
    ("unwritable output directory", ["train", "hydra.run.dir=/proc/vaeflow-run", *FAST], "cannot write /proc/vaeflow-run"),
    # values are checked, never coerced (2.5 latents would train 2 while the saved config says 2.5)
    ("latent dimension not an integer", ["train", "model.latent_dim=2.5", *FAST], "model.latent_dim=2.5: the latent space needs an integer"),
    ("depth not an integer", ["train", "posterior=iaf", "posterior.depth=2.5", *FAST], "posterior.depth=2.5: use an integer"),
    ("hidden width not an integer", ["train", "encoder.hidden_dims=[300,2.5]", *FAST], "encoder.hidden_dims=[300, 2.5]: use a list of integers"),
    ("epochs not an integer", ["train", "trainer.max_epochs=2.5"], "trainer.max_epochs=2.5"),
    ("test neither true nor false", ["train", "trainer.test=2", *FAST], "trainer.test=2: use true or false"),
    ("samples not an integer", ["train", "objective.samples=1.5", *FAST], "objective.samples=1.5"),
    ("betas not two numbers", ["train", "optim.betas=[0.9]", *FAST], "optim.betas=[0.9]: use two numbers in [0, 1)"),
    ("a string for a number", ["train", "objective.free_bits=lots", *FAST], "objective.free_bits=lots: use a number"),
    ("an unknown progress mode", ["train", "trainer.progress=fancy", "trainer.max_epochs=1"], "trainer.progress=fancy: use auto, rich or plain"),
    ("a validation size not an integer", ["train", "dataset.val_size=20.5", *FAST], "dataset.val_size=20.5: use an integer"),
    ("eval k not an integer", lambda t: ["eval", str(truncated_checkpoint(t)), "k=2.5"], "k=2.5"),
    ("eval limit not an integer", lambda t: ["eval", str(truncated_checkpoint(t)), "limit=1.5"], "limit=1.5"),
    ("eval seed not an integer", lambda t: ["eval", str(truncated_checkpoint(t)), "seed=0.5"], "seed=0.5"),
    ("eval gaps neither true nor false", lambda t: ["eval", str(truncated_checkpoint(t)), "gaps.enabled=2"], "gaps=2"),
    ("eval gaps.n not an integer", lambda t: ["eval", str(truncated_checkpoint(t)), "gaps=true", "gaps.n=2.5"], "gaps.n=2.5"),
    # a directory that was there before the command stays, and so do its files
    ("an existing run directory", lambda t: ["train", f"hydra.run.dir={existing(t)}", "model.latent_dim=0", *FAST],
     "model.latent_dim=0"),
    ("an existing outputs/ folder", lambda t: ["train", f"hydra.run.dir={existing(t, 'outputs')}/train/run",
     "model.latent_dim=0", *FAST], "model.latent_dim=0"),
]  # fmt: skip


def existing(tmp: Path, name: str = "mine") -> Path:
    """A folder made before the command, holding a file of its own."""
    (tmp / name).mkdir()
    (tmp / name / "notes.txt").write_text("mine\n")
    return tmp / name


def snapshot(root: Path) -> dict[Path, float | None]:
    """Every path below root, with the modification time of files (a directory's own time
    changes when something was made in it and removed again)."""
    return {p: p.stat().st_mtime if p.is_file() else None for p in root.rglob("*")}


@pytest.mark.parametrize(("argv", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_wrong_input_gets_one_line(argv, expected, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    args = argv(tmp_path) if callable(argv) else argv
    before = snapshot(tmp_path)
    try:
        code = main(args)
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    assert code not in (0, None)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(("error: ", "vaeflow: ")) and expected in lines[0], lines[0]
    assert "Traceback" not in out + err and "this must never run" not in out + err
    after = snapshot(tmp_path)
    # nothing written, nothing changed; but a refused resume may log why in the run's own log
    logged = {
        p for p in after.keys() - before.keys() if p.suffix == ".log" and (p.parent / "checkpoints").is_dir()
    }
    assert {p: t for p, t in after.items() if p not in logged and p not in {q.parent for q in logged}} == {
        p: t for p, t in before.items() if p not in {q.parent for q in logged}
    }


def test_hydra_full_error_keeps_the_traceback(tmp_path, monkeypatch):
    from hydra.errors import MissingConfigException

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(MissingConfigException):
        main(["train", "posterior=foo"])
