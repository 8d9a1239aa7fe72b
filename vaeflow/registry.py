r"""Named builders: a config group option's ``name`` picks a class, its other keys are
the class's keyword arguments.

One :class:`Registry` per swappable part (dataset, encoder, decoder, posterior, prior), so
that the error for a wrong option, key or value reads the same everywhere.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from vaeflow.checks import check_arguments
from vaeflow.errors import ConfigError

__all__ = ["Registry"]


class Registry:
    r"""A table of builders for one config group.

    Arguments:
        group: the config group's name, used in error messages (``posterior``, ...).
    """

    def __init__(self, group: str) -> None:
        self.group = group
        self.entries: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        r"""Decorator that registers a class or factory under ``name``."""

        def decorator(builder: Callable[..., Any]) -> Callable[..., Any]:
            if name in self.entries:
                raise ValueError(f"{self.group} {name!r} is registered twice")
            self.entries[name] = builder
            return builder

        return decorator

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def names(self) -> list[str]:
        return sorted(self.entries)

    def build(self, cfg: Mapping[str, Any], **fixed: Any) -> Any:
        r"""Builds the entry named by ``cfg["name"]`` with the other keys of ``cfg`` and
        the ``fixed`` arguments the caller supplies (sizes known only at run time).

        Each key of ``cfg`` is checked against the builder's annotation of it
        (:func:`~vaeflow.checks.check_arguments`): ``posterior.depth=2.5`` is refused, not
        truncated."""
        options = dict(cfg)
        name = options.pop("name", None)
        if name not in self.entries:
            raise ConfigError(f"unknown {self.group} {name!r}: choose one of {', '.join(self.names())}")
        builder = self.entries[name]
        try:
            inspect.signature(builder).bind(**fixed, **options)
        except TypeError as e:
            raise ConfigError(
                f"{self.group}={name}: {e}; check the keys under '{self.group}' in your overrides"
            ) from None
        check_arguments(self.group, name, builder, options)
        return builder(**fixed, **options)
