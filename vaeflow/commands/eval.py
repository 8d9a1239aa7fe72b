r"""``vaeflow eval <run dir> [overrides]``: importance-weighted NLL and inference gaps (``conf/eval.yaml``).

Before Hydra parses ``sys.argv``, a leading positional ``<run dir>`` becomes ``run=<run dir>``
(quoted for Hydra's grammar where needed: sweep subdirectories hold ``=`` and ``,``), and
``gaps=true|false`` becomes ``gaps.enabled=...`` (and ``quadrature=...`` ``quadrature.enabled=...``);
a run that does not exist is reported in one
line before Hydra would create its output directory.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from vaeflow.commands import run_command
from vaeflow.errors import VaeflowError
from vaeflow.evaluate import evaluate, run_dir_of

__all__ = ["main", "rewrite_argv", "check_runs"]

OmegaConf.register_new_resolver("vaeflow.run_dir", run_dir_of, replace=True)

_PLAIN = re.compile(r"[\w./~+:@-]+")
_NO_RUN_NEEDED = {"-h", "--help", "--hydra-help", "-c", "--cfg", "--info", "-i", "--shell-completion", "-sc"}
_TAKES_VALUE = {"-cp", "--config-path", "-cn", "--config-name", "-cd", "--config-dir", "--experimental-rerun"}


def quote(value: str) -> str:
    r"""``value`` as a Hydra override value: as is when plain, else single-quoted (Hydra
    unescapes only backslashes before a quote or the closing quote, and escaped quotes)."""
    if _PLAIN.fullmatch(value):
        return value
    value = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, value)
    return "'" + value.replace("'", "\\'") + "'"


def _words(args: list[str]) -> list[int]:
    r"""Positions of the arguments that are neither flags nor the values of flags."""
    return [
        i for i, a in enumerate(args) if not a.startswith("-") and (i == 0 or args[i - 1] not in _TAKES_VALUE)
    ]


def rewrite_argv(args: list[str]) -> list[str]:
    r"""Turns the first word, when it is a path rather than an override (``vaeflow eval
    [-m] <run dir> ...``), into ``run=...``, and ``gaps=<bool>`` into ``gaps.enabled=<bool>``
    (``quadrature=<bool|auto>`` likewise)."""
    args = list(args)
    words = _words(args)
    if words and ("=" not in args[words[0]] or Path(args[words[0]]).exists()):
        args[words[0]] = f"run={quote(args[words[0]])}"
    for i, arg in enumerate(args):
        key, _, value = arg.partition("=")
        section = key.lstrip("+")
        if section in ("gaps", "quadrature") and value.lower() in ("true", "false", "auto"):
            args[i] = f"{section}.enabled={value.lower()}"
    return args


def check_runs(args: list[str]) -> str | None:
    r"""A one-line error when no run is given or a given run does not exist, else ``None``."""
    if any(a.split("=")[0] in _NO_RUN_NEEDED for a in args):
        return None
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        overrides = OverridesParser.create().parse_overrides([args[i] for i in _words(args)])
    except Exception:
        return None  # Hydra will report the syntax error itself
    runs = [o for o in overrides if o.key_or_group.lstrip("+") == "run"]
    if not runs:
        return "no run given: use `vaeflow eval <run dir>` (a directory that vaeflow train wrote) or run=<checkpoint .pt>"
    for override in runs:
        values = (
            list(override.sweep_string_iterator()) if override.is_sweep_override() else [override.value()]
        )
        for value in values:
            try:
                run_dir_of(value)
            except VaeflowError as e:
                return str(e)
    return None


@hydra.main(version_base="1.3", config_path="pkg://vaeflow.conf", config_name="eval")
def _main(cfg: DictConfig) -> dict | None:
    return run_command(evaluate, cfg)


def main() -> None:
    args = rewrite_argv(sys.argv[1:])
    problem = check_runs(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    sys.argv = [sys.argv[0], *args]
    _main()
