r"""``python -m vaeflow``: the same as the ``vaeflow`` command."""

from vaeflow.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
