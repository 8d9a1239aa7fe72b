r"""The likelihood registry: ``likelihood=<name>`` selects a class registered here."""

from vaeflow.registry import Registry

__all__ = ["LIKELIHOODS"]

LIKELIHOODS = Registry("likelihood")
