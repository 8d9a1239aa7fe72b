r"""Priors p(z): ``prior=<name>`` picks one from :data:`PRIORS`; each has ``log_prob(z)``,
``sample(n, generator)`` and ``gaussian_params()`` (:mod:`vaeflow.priors.base`)."""

from vaeflow.priors.base import Prior
from vaeflow.priors.flow import FlowPrior
from vaeflow.priors.gaussian import Gaussian
from vaeflow.priors.mog import MixtureOfGaussians
from vaeflow.priors.registry import PRIORS
from vaeflow.priors.standard_normal import StandardNormal
from vaeflow.priors.vamp import VampPrior

__all__ = ["PRIORS", "FlowPrior", "Gaussian", "MixtureOfGaussians", "Prior", "StandardNormal", "VampPrior"]
