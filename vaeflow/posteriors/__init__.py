r"""Approximate posteriors q(z|x): every family registered in :data:`POSTERIORS`."""

import importlib
import pkgutil

from vaeflow.posteriors import flows
from vaeflow.posteriors.base import DiagonalGaussian, Posterior
from vaeflow.posteriors.flows import FlowPosterior, FlowStep, register_flow
from vaeflow.posteriors.registry import POSTERIORS

__all__ = [
    "POSTERIORS",
    "DiagonalGaussian",
    "FlowPosterior",
    "FlowStep",
    "Posterior",
    "flows",
    "register_flow",
]

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("base", "registry", "flows"):
        importlib.import_module(f"{__name__}.{_module.name}")
