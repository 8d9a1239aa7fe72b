r"""OmegaConf resolvers used in vaeflow's configs; registered on import."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

__all__ = ["resumed_run_dir", "resume_run_dir", "hydra_subdir"]


def resumed_run_dir(resume: str | None) -> Path | None:
    r"""The run directory that ``trainer.resume`` names, if it names an existing one:
    a directory holding ``checkpoints/``, or a file inside such a ``checkpoints/``."""
    if resume in (None, "", "auto", "none", "null"):
        return None
    path = Path(str(resume)).expanduser()
    if path.is_file() and path.parent.name == "checkpoints":
        path = path.parent.parent
    return path if (path / "checkpoints").is_dir() else None


def resume_run_dir(resume: str | None, default: str) -> str:
    r"""``${vaeflow.resume_dir:${trainer.resume},<default>}``: a resumed run goes on
    writing in its own directory; any other run gets ``default``."""
    run_dir = resumed_run_dir(resume)
    return str(run_dir) if run_dir is not None else default


def hydra_subdir(resume: str | None) -> str | None:
    r"""``${vaeflow.hydra_subdir:${trainer.resume}}``: ``.hydra``, or none for a resumed
    run, whose ``.hydra/`` keeps the config it was started with."""
    return None if resumed_run_dir(resume) is not None else ".hydra"


for _name, _function in {"vaeflow.resume_dir": resume_run_dir, "vaeflow.hydra_subdir": hydra_subdir}.items():
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _function)
