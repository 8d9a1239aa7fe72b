r"""Likelihoods p(x|z): ``likelihood=<name>`` picks one; each says how many parameters per
pixel the decoder emits and what data it models (:mod:`vaeflow.likelihoods.base`)."""

from vaeflow.likelihoods.base import Likelihood, describe_levels
from vaeflow.likelihoods.bernoulli import Bernoulli
from vaeflow.likelihoods.gaussian import Gaussian
from vaeflow.likelihoods.logistic import DiscretizedLogistic, DiscretizedLogisticMixture
from vaeflow.likelihoods.registry import LIKELIHOODS

__all__ = [
    "LIKELIHOODS",
    "Bernoulli",
    "DiscretizedLogistic",
    "DiscretizedLogisticMixture",
    "Gaussian",
    "Likelihood",
    "describe_levels",
]
