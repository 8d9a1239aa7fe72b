r"""The prior registry: ``prior=<name>`` selects a builder registered here."""

from __future__ import annotations

from vaeflow.registry import Registry

__all__ = ["PRIORS"]

PRIORS = Registry("prior")
