r"""The posterior registry: ``posterior=<family>`` selects a builder registered here."""

from __future__ import annotations

from vaeflow.registry import Registry

__all__ = ["POSTERIORS"]

POSTERIORS = Registry("posterior")
