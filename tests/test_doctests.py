"""Every ``Example:`` in a docstring of vaeflow runs, and says what it shows."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import vaeflow

MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(vaeflow.__path__, "vaeflow.")
    if not m.name.startswith("vaeflow.conf")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {name} failed"
