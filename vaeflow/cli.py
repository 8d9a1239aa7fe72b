r"""``vaeflow <command> [overrides]``: dispatches to one module per command.

The command word is removed from ``sys.argv`` before the command's ``@hydra.main`` runs,
so every Hydra flag (``-m``, ``--cfg job``, ``--help``, ``hydra/launcher=...``) works
as it does for a plain Hydra app.
"""

from __future__ import annotations

import importlib
import sys

__all__ = ["COMMANDS", "main"]

#: command -> (module, one-line summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("vaeflow.commands.train", "train a VAE (Hydra overrides, -m for sweeps)"),
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
    module = importlib.import_module(COMMANDS[command][0])
    sys.argv = [f"vaeflow-{command}", *args[1:]]
    module.main()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
