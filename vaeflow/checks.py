r"""Config values checked, never coerced: a value of the wrong kind is a one-line error.

A value reaches the code as YAML or a command-line override made it: ``model.latent_dim=2.5``
is the float 2.5, which ``int()`` would silently turn into 2 while the saved config says
2.5, and ``trainer.test=2`` is an integer that a truth test would take for ``true``. Every
place that reads a setting goes through these helpers; the options of a swappable part are
checked against the annotations of the class that takes them (:func:`check_arguments`,
called by :meth:`vaeflow.registry.Registry.build`).

Example:
    >>> integer("model.latent_dim", 40, low=1)
    40
    >>> integer("model.latent_dim", 2.5, low=1)
    Traceback (most recent call last):
    ...
    vaeflow.errors.ConfigError: model.latent_dim=2.5: use an integer >= 1
"""

from __future__ import annotations

import inspect
import os
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from vaeflow.errors import ConfigError

__all__ = ["integer", "number", "boolean", "choice", "text", "check_arguments", "matches"]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _fail(key: str, value: Any, advice: str) -> ConfigError:
    return ConfigError(f"{key}={_show(value)}: {advice}")


def _show(value: Any) -> str:
    if isinstance(value, Sequence) and not isinstance(value, str):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return "null" if value is None else str(value)


def integer(key: str, value: Any, low: int | None = None, *, none: bool = False, advice: str = "") -> Any:
    r"""``value`` when it is an integer (not a bool, not a float) ``>= low``; ``None``
    passes where ``none``. Otherwise a :class:`ConfigError` naming ``key``."""
    if value is None and none:
        return None
    if not _is_int(value) or (low is not None and value < low):
        bound = f" >= {low}" if low is not None else ""
        raise _fail(key, value, advice or f"use {'null or ' if none else ''}an integer{bound}")
    return value


def number(
    key: str,
    value: Any,
    low: float | None = None,
    *,
    above: bool = False,
    none: bool = False,
    advice: str = "",
) -> Any:
    r"""``value`` when it is a number (an integer or a float, not a bool) ``>= low``
    (``> low`` with ``above``); ``None`` passes where ``none``."""
    if value is None and none:
        return None
    bad = not _is_number(value) or value != value  # NaN
    if not bad and low is not None:
        bad = value <= low if above else value < low
    if bad:
        bound = "" if low is None else f" {'>' if above else '>='} {low:g}"
        raise _fail(key, value, advice or f"use {'null or ' if none else ''}a number{bound}")
    return value


def boolean(key: str, value: Any) -> bool:
    r"""``value`` when it is ``true`` or ``false``."""
    if not isinstance(value, bool):
        raise _fail(key, value, "use true or false")
    return value


def choice(key: str, value: Any, options: Sequence[str]) -> str:
    r"""``value`` when it is one of ``options``."""
    if not isinstance(value, str) or value not in options:
        listed = ", ".join(options[:-1]) + (" or " if len(options) > 1 else "") + options[-1]
        raise _fail(key, value, f"use {listed}")
    return value


def text(key: str, value: Any, *, none: bool = False) -> Any:
    r"""``value`` when it is a string (``None`` where ``none``)."""
    if (value is None and none) or isinstance(value, str):
        return value
    raise _fail(key, value, f"use {'null or ' if none else ''}a string (quote it: {key}='...')")


def matches(value: Any, annotation: Any) -> bool | None:
    r"""Whether ``value`` is of the annotated type, for the types a config can hold:
    ``int``, ``float`` (an integer too), ``bool``, ``str``, sequences of those and unions
    with ``None``. ``None`` (no verdict) for any other annotation (paths, tensors, ...)."""
    if annotation is Any or annotation is inspect.Parameter.empty:
        return None
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        members = typing.get_args(annotation)
        if any(m is os.PathLike or typing.get_origin(m) is os.PathLike for m in members):
            return None  # a path: checked when it is opened
        verdicts = [value is None if m is type(None) else matches(value, m) for m in members]
        return None if None in verdicts and not any(verdicts) else any(v for v in verdicts)
    if annotation is int:
        return _is_int(value)
    if annotation is float:
        return _is_number(value)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if origin in (list, tuple, Sequence) or annotation in (list, tuple):
        if isinstance(value, str | bytes) or not isinstance(value, Sequence):
            return False
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        if len(args) != 1:
            return None if args else True
        verdicts = [matches(v, args[0]) for v in value]
        return None if None in verdicts else all(verdicts)
    return None


def _describe(annotation: Any) -> str:
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    if annotation in names:
        return names[annotation]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [m for m in typing.get_args(annotation) if m is not type(None)]
        optional = len(members) < len(typing.get_args(annotation))
        return ("null or " if optional else "") + " or ".join(_describe(m) for m in members)
    if origin in (list, tuple, Sequence):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        if len(args) == 1:
            plural = {int: "integers", float: "numbers", bool: "booleans", str: "strings"}
            return f"a list of {plural.get(args[0], 'values')}"
    return "a list" if origin in (list, tuple, Sequence) else getattr(annotation, "__name__", str(annotation))


def annotations_of(builder: Callable[..., Any]) -> dict[str, Any]:
    r"""The evaluated annotations of ``builder``'s parameters (a class: of its ``__init__``)."""
    target = builder.__init__ if inspect.isclass(builder) else builder
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # an annotation that cannot be evaluated here: no verdict on it
        hints = {}
    out = {}
    for p in inspect.signature(builder).parameters.values():
        annotation = hints.get(p.name, p.annotation)
        if not isinstance(annotation, str):
            out[p.name] = annotation
    return out


def check_arguments(group: str, name: str, builder: Callable[..., Any], options: Mapping[str, Any]) -> None:
    r"""Checks each of ``options`` (the keys a config group option gives ``builder``)
    against ``builder``'s annotation of it; the error names ``group.key``."""
    annotations = annotations_of(builder)
    for key, value in options.items():
        if key in annotations and matches(value, annotations[key]) is False:
            raise _fail(f"{group}.{key}", value, f"use {_describe(annotations[key])} ({group}={name})")
