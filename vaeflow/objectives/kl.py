r"""The KL estimators of the ELBO: in closed form where the (posterior, prior) pair has one,
by Monte Carlo otherwise.

The KL is either in closed form (``analytic``; only a Gaussian family against a diagonal
Gaussian prior has one) or estimated by Monte Carlo on the same samples as the
reconstruction term, ``log q(z|x) - log p(z)`` (``mc``); ``auto`` takes the closed form
where it exists.
"""

from __future__ import annotations

from vaeflow.errors import ConfigError
from vaeflow.model import VAE

__all__ = ["KL_ESTIMATORS", "has_analytic_kl", "resolve_kl"]

KL_ESTIMATORS = ("analytic", "mc", "auto")


def has_analytic_kl(model: VAE) -> bool:
    r"""Whether the (posterior, prior) pair has a closed-form KL: a Gaussian family against a
    diagonal Gaussian prior (:meth:`~vaeflow.priors.Prior.gaussian_params`)."""
    return model.posterior.has_analytic_kl and model.prior.gaussian_params() is not None


def resolve_kl(estimator: str, model: VAE, family: str = "", prior: str = "") -> str:
    r"""Turns ``analytic | mc | auto`` into the estimator used with ``model``.

    Raises a :class:`ConfigError` for ``analytic`` where no closed form exists.
    """
    if estimator not in KL_ESTIMATORS:
        raise ConfigError(f"kl={estimator}: choose one of {', '.join(KL_ESTIMATORS)}")
    if estimator == "auto":
        return "analytic" if has_analytic_kl(model) else "mc"
    if estimator == "analytic" and not has_analytic_kl(model):
        name = family or type(model.posterior).__name__
        prior = prior or type(model.prior).__name__
        raise ConfigError(
            f"kl=analytic: posterior={name} has no closed-form KL to prior={prior} (only Gaussian "
            "posteriors against Gaussian priors have one); use kl=mc or kl=auto"
        )
    return estimator
