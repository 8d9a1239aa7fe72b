r"""Fetching a dataset with torchvision, for loaders whose ``download=true`` is set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vaeflow.errors import DataError

__all__ = ["fetch_with_torchvision"]


def fetch_with_torchvision(name: str, cls: str, root: Path, hint: str, **kwargs: Any) -> None:
    r"""Downloads a dataset with ``torchvision.datasets.<cls>(root, download=True)``.

    Arguments:
        name: the dataset's name, for messages.
        cls: the torchvision dataset class.
        root: its ``root``.
        hint: how to put the files in place by hand, should the download fail.
        kwargs: further arguments of the class (``background=`` for Omniglot).
    """
    import torchvision.datasets

    try:
        getattr(torchvision.datasets, cls)(str(root), download=True, **kwargs)
    except Exception as e:  # network, disk or checksum: all mean "get it by hand"
        reason = " ".join(str(e).split()) or type(e).__name__
        raise DataError(f"{name}: download failed ({reason}); {hint}") from e
