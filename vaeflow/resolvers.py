r"""OmegaConf resolvers used in vaeflow's configs; registered on import."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

__all__ = ["resume_run_dir"]


def resume_run_dir(resume: str | None, default: str) -> str:
    r"""``${vaeflow.resume_dir:${trainer.resume},<default>}``: the run directory of a
    resumed run, so that it goes on writing where it stopped; ``default`` otherwise."""
    if resume in (None, "", "auto", "none", "null"):
        return default
    path = Path(str(resume)).expanduser()
    if path.is_file():
        path = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return str(path) if path.is_dir() else default


if not OmegaConf.has_resolver("vaeflow.resume_dir"):
    OmegaConf.register_new_resolver("vaeflow.resume_dir", resume_run_dir)
