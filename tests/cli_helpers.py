"""Running the real `vaeflow` command in a subprocess, as a user runs it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

#: the installed console script, or `python -m vaeflow` where it is not on PATH
VAEFLOW = [shutil.which("vaeflow")] if shutil.which("vaeflow") else [sys.executable, "-m", "vaeflow"]


def vaeflow(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """`vaeflow <args>` in ``cwd`` (without HYDRA_FULL_ERROR); with ``check``, a non-zero
    exit fails the test with the command's output."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    result = subprocess.run([*VAEFLOW, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"vaeflow {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result
