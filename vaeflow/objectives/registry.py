r"""The objective registry: ``objective=<name>`` selects a builder registered here."""

from __future__ import annotations

from vaeflow.registry import Registry

__all__ = ["OBJECTIVES"]

OBJECTIVES = Registry("objective")
