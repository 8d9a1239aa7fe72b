r"""Flow steps. Every module in this package is imported, so that its
:func:`~vaeflow.posteriors.flows.base.register_flow` decorator runs: a new flow type is
one file here and one YAML in ``conf/posterior/``."""

import importlib
import pkgutil

from vaeflow.posteriors.flows.base import FlowPosterior, FlowStep, register_flow

__all__ = ["FlowPosterior", "FlowStep", "register_flow"]

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
