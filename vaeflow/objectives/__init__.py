r"""Training objectives: ``objective=elbo | iwae`` (a config group), with the gradient
estimators ``objective.gradient=reparam | stl | dreg`` and the ELBO's KL estimators.

:func:`build_objective` makes the one a config names. The importance-weighted estimate of
log p(x) at evaluation is :func:`vaeflow.evaluate.importance_weighted`, the one estimator of
validation, test and ``vaeflow eval``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vaeflow.model import VAE
from vaeflow.objectives.base import GRADIENTS, Objective, kl_beta, objective_label, stopped_log_q
from vaeflow.objectives.elbo import ElboObjective, ElboTerms, elbo, training_loss
from vaeflow.objectives.iwae import IwaeObjective, effective_sample_size
from vaeflow.objectives.kl import KL_ESTIMATORS, has_analytic_kl, resolve_kl
from vaeflow.objectives.registry import OBJECTIVES

__all__ = [
    "GRADIENTS",
    "KL_ESTIMATORS",
    "OBJECTIVES",
    "ElboObjective",
    "ElboTerms",
    "IwaeObjective",
    "Objective",
    "build_objective",
    "effective_sample_size",
    "elbo",
    "has_analytic_kl",
    "kl_beta",
    "objective_label",
    "resolve_kl",
    "stopped_log_q",
    "training_loss",
]


def build_objective(cfg: Mapping[str, Any], model: VAE, kl: str, family: str = "") -> Objective:
    r"""The objective that the ``objective`` group ``cfg`` names, for ``model`` with the
    resolved KL estimator ``kl``."""
    return OBJECTIVES.build(cfg, model=model, kl=kl, family=family)
