r"""Normalizing-flow posteriors: a diagonal Gaussian base and K composable steps.

.. math:: z_0 \sim q_0(z_0|x) = N(\mu(x), \sigma(x)^2), \quad z_k = f_k(z_{k-1}; h),

.. math:: \log q_K(z_K|x) = \log q_0(z_0|x) - \sum_{k=1}^K \log |\det \partial f_k / \partial z_{k-1}|.

A step runs in the sampling direction, ``z, ladj = step(z, h)``, with ``ladj`` the
log-abs-det-Jacobian of that step; its parameters are amortized, either a linear map of
the features h or a context input to its network. A new flow type is one file holding
one :class:`FlowStep` subclass decorated with :func:`register_flow`, plus one YAML in
``conf/posterior/``: :class:`FlowPosterior` composes any number of them.

References:
    | Variational Inference with Normalizing Flows (Rezende & Mohamed, 2015)
    | https://arxiv.org/abs/1505.05770
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from torch import Tensor, nn

from vaeflow.checks import annotations_of
from vaeflow.errors import ConfigError
from vaeflow.posteriors.base import DiagonalGaussian, Posterior
from vaeflow.posteriors.registry import POSTERIORS

__all__ = ["FlowStep", "FlowPosterior", "register_flow"]


class FlowStep(nn.Module):
    r"""One amortized, invertible step ``z_k = f(z_{k-1}; h)``.

    Subclasses take ``(latent_dim, feature_dim, index, **options)``, where ``index`` is
    the step's position in its stack (to alternate orders or masks).
    """

    sequential_inverse = False  # True where :meth:`inverse` solves one dimension at a time

    def __init__(self, latent_dim: int, feature_dim: int, index: int = 0) -> None:
        super().__init__()
        self.latent_dim, self.feature_dim, self.index = latent_dim, feature_dim, index

    def forward(self, z: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        r"""``z [n, B, D] -> (f(z) [n, B, D], log|det df/dz| [n, B])``."""
        raise NotImplementedError

    def inverse(self, z: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        r"""``f(z) -> (z, log|det df/dz| at z)``: the step undone, with the ladj of the
        forward step at the recovered input."""
        raise NotImplementedError(f"{type(self).__name__} has no tractable inverse")


class FlowPosterior(Posterior):
    r"""``q_K(z|x)``: a diagonal Gaussian base followed by ``depth`` flow steps.

    Arguments:
        latent_dim: D.
        feature_dim: F.
        step: the :class:`FlowStep` subclass to stack.
        depth: K >= 1, the number of steps.
        options: keyword arguments of every step.
    """

    def __init__(
        self, latent_dim: int, feature_dim: int, step: type[FlowStep], depth: int, **options
    ) -> None:
        super().__init__(latent_dim, feature_dim)
        if int(depth) < 1:
            raise ConfigError(
                f"posterior.depth={depth}: a flow needs at least one step; use posterior=mean_field for none"
            )
        self.base = DiagonalGaussian(latent_dim, feature_dim)
        self.steps = nn.ModuleList(
            step(latent_dim, feature_dim, index=k, **options) for k in range(int(depth))
        )

    def reparameterize(self, h: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
        z, log_q = self.base.reparameterize(h, eps)
        for step in self.steps:
            z, ladj = step(z, h)
            log_q = log_q - ladj
        return z, log_q

    @property
    def has_log_prob(self) -> bool:
        r"""Whether every step has an inverse."""
        return all(type(step).inverse is not FlowStep.inverse for step in self.steps)

    @property
    def sequential_log_prob(self) -> bool:
        return any(step.sequential_inverse for step in self.steps)

    @property
    def gaussian_base(self) -> nn.Module:
        return self.base

    def log_prob(self, z: Tensor, h: Tensor) -> Tensor:
        total = 0.0
        for step in reversed(self.steps):
            z, ladj = step.inverse(z, h)
            total = total + ladj
        return self.base.log_prob(z, h) - total


def register_flow(name: str) -> Callable[[type[FlowStep]], type[FlowStep]]:
    r"""Class decorator: makes ``posterior=<name>`` a :class:`FlowPosterior` of this step.

    The posterior's options are ``depth`` and the step's own keyword arguments.
    """

    def decorator(step: type[FlowStep]) -> type[FlowStep]:
        def build(latent_dim: int, feature_dim: int, depth: int, **options) -> FlowPosterior:
            return FlowPosterior(latent_dim, feature_dim, step, depth, **options)

        fixed = ("self", "latent_dim", "feature_dim", "index")
        hints = annotations_of(step)  # evaluated, so that the registry can check the options
        step_params = [
            p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=hints.get(p.name, p.annotation))
            for p in inspect.signature(step.__init__).parameters.values()
            if p.name not in fixed
        ]
        head = [
            inspect.Parameter(p, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=int)
            for p in ("latent_dim", "feature_dim", "depth")
        ]
        build.__signature__ = inspect.Signature(head + step_params)  # type: ignore[attr-defined]
        build.__doc__ = f"A flow posterior of {step.__name__} steps."
        POSTERIORS.register(name)(build)
        return step

    return decorator
