r"""``vaeflow <command> [overrides]``: dispatches to one module per command.

The command word is removed from ``sys.argv`` before the command's ``@hydra.main`` runs,
so every Hydra flag (``-m``, ``--cfg job``, ``--help``, ``hydra/launcher=...``) works
as it does for a plain Hydra app.
"""

from __future__ import annotations

import importlib
import os
import re
import sys

__all__ = ["COMMANDS", "main", "one_line"]

#: command -> (module, one-line summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("vaeflow.commands.train", "train a VAE (Hydra overrides, -m for sweeps)"),
    "eval": ("vaeflow.commands.eval", "importance-weighted NLL (k=5000) and inference gaps of a run"),
    "report": ("vaeflow.commands.report", "tables and plots of a sweep's runs (results.csv, .md, PNGs)"),
}

USAGE = """usage: vaeflow <command> [overrides...]

Train and compare VAEs with structured approximate posteriors.

commands:
{commands}

`vaeflow <command> --help` shows a command's config groups and options.
Examples:
  vaeflow train posterior=iaf posterior.depth=8
  vaeflow train -m posterior=mean_field,iaf trainer.max_epochs=20
  vaeflow train --cfg job
"""


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    return USAGE.format(commands="\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if args[0] in ("-V", "--version"):
        from vaeflow import __version__

        print(f"vaeflow {__version__}")
        return 0
    command = args[0]
    if command not in COMMANDS:
        print(
            f"vaeflow: unknown command {command!r}; known commands: {', '.join(COMMANDS)} "
            "(see vaeflow --help)",
            file=sys.stderr,
        )
        return 2
    from vaeflow.launchers import missing_launcher

    if problem := missing_launcher(args[1:]):
        print(f"error: {problem}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    sys.argv = [f"vaeflow-{command}", *args[1:]]
    # Hydra's errors (unknown group option, unknown key, bad override) propagate to here,
    # where they become one line; HYDRA_FULL_ERROR=1 set by the user keeps the traceback.
    full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        module.main()
    except Exception as e:
        if full_error:
            raise
        if _is_config_error(e):
            print(f"error: {one_line(e, command)}", file=sys.stderr)
        elif isinstance(e, OSError) and e.filename is not None:  # e.g. an unwritable output directory
            print(
                f"error: cannot write {e.filename}: {e.strerror}; choose a writable place "
                "(e.g. hydra.run.dir=<dir>) or fix its permissions",
                file=sys.stderr,
            )
        else:
            raise
        return 2
    return 0


def _is_config_error(error: BaseException) -> bool:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(error, ValueError) and str(error).startswith("Only one of --run"):
        return True  # Hydra's own check of its flags (e.g. -m with --cfg)
    return isinstance(error, HydraException | OmegaConfBaseException)


def one_line(error: BaseException, command: str = "train") -> str:
    r"""A Hydra or OmegaConf error as one line: what is wrong and what to do."""
    text = str(error)
    if error.__cause__ is not None and str(error.__cause__) not in text:
        text += "\n" + str(error.__cause__)
    text = text.split("Config search path:")[0]
    unknown = re.search(r"Could not override '([^']+)'.*is not in struct", text, re.S)
    if unknown:
        key = unknown.group(1)
        return (
            f"unknown config key '{key}': check its spelling (`vaeflow {command} --cfg job` lists "
            f"the keys of the chosen options); to add a new key write +{key}=..."
        )
    options = re.search(r"Available options in '([^']+)':\s*((?:\s*\S+)+)", text)
    lines = [
        line.strip()
        for line in text.splitlines()
        if line.strip()
        and not re.match(r"\s*(full_key|object_type|reference_type|Available options)", line)
        and not line.startswith("\t")
    ]
    message = "; ".join(line.rstrip(".") for line in lines)
    if options:
        message += f"; choose one of: {', '.join(options.group(2).split())}"
    return message


if __name__ == "__main__":
    raise SystemExit(main())
