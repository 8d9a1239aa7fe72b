r"""The reference VAE of ``scripts/bench.py``, built from pyro-ppl's conditional transforms.

The same MLP VAE as vaeflow's (encoder ``784-300-300``, ReLU, features through the
activation; a linear head giving the base ``N(mu(h), sigma(h)^2)``; decoder
``D-300-300-784``; Bernoulli pixels; standard normal prior), with the posterior built the
way a pyro user builds it:

- ``mean_field``: ``Normal(mu, sigma).to_event(1)`` and the closed-form KL;
- flows: a :class:`~pyro.distributions.ConditionalTransformedDistribution` of that base and
  ``depth`` conditional transforms, conditioned on the encoder features ``h``:
  :func:`~pyro.distributions.transforms.conditional_planar`,
  :func:`~pyro.distributions.transforms.conditional_radial`,
  :func:`~pyro.distributions.transforms.conditional_householder` (one reflection per
  transform) with pyro's default hypernetworks (``DenseNN`` with two hidden layers of
  ``10 D`` units), and :func:`~pyro.distributions.transforms.conditional_affine_autoregressive`
  (IAF, in its stable sigmoid-gated form, with its MADE's widths given by ``iaf_hidden``;
  pyro's own default is one layer of ``10 D``), natural and reversed order in turn as in
  vaeflow;
- ``log q(z|x)`` of the flows by ``TransformedDistribution.log_prob`` on the sample just
  drawn (pyro finds the pre-images in its transforms' caches).

It is trained in a plain torch loop (``torch.optim`` with its defaults) by ``bench.py``;
nothing here depends on vaeflow. Importing this module needs pyro-ppl
(``pip install 'vaeflow[bench]'``).

References:
    | Pyro: Deep Universal Probabilistic Programming (Bingham et al., 2019)
    | https://arxiv.org/abs/1810.09538
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from pyro.distributions.conditional import ConditionalDistribution
from pyro.nn import ConditionalAutoRegressiveNN
from torch import Tensor, nn
from torch.distributions import kl_divergence

__all__ = ["PYRO_FAMILIES", "PyroVAE", "build_pyro_vae"]

#: vaeflow posterior families that pyro has a conditional counterpart of.
PYRO_FAMILIES = ("mean_field", "planar", "radial", "householder", "iaf")


class _AmortizedNormal(ConditionalDistribution):
    r"""``h -> Normal(mu(h), exp(log_sigma(h))).to_event(1)``: the flows' base."""

    def __init__(self, head: nn.Linear) -> None:
        self.head = head

    def condition(self, context: Tensor) -> dist.Distribution:
        loc, log_scale = self.head(context).chunk(2, -1)
        return dist.Normal(loc, log_scale.exp()).to_event(1)


def _mlp(dims: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        if i:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(a, b))
    return nn.Sequential(*layers)


def _transform(family: str, latent_dim: int, feature_dim: int, index: int, iaf_hidden: Sequence[int] | None):
    if family == "planar":
        return T.conditional_planar(latent_dim, feature_dim)
    if family == "radial":
        return T.conditional_radial(latent_dim, feature_dim)
    if family == "householder":
        return T.conditional_householder(latent_dim, feature_dim, count_transforms=1)
    if family == "iaf":
        hidden = [10 * latent_dim] if iaf_hidden is None else [int(w) for w in iaf_hidden]
        order = torch.arange(latent_dim) if index % 2 == 0 else torch.arange(latent_dim).flip(0)
        arn = ConditionalAutoRegressiveNN(
            latent_dim, feature_dim, hidden, param_dims=[1, 1], permutation=order
        )
        return T.ConditionalAffineAutoregressive(arn, stable=True)
    raise ValueError(f"pyro has no conditional counterpart of posterior={family}; use one of {PYRO_FAMILIES}")


class PyroVAE(nn.Module):
    r"""An MLP VAE whose posterior is made of pyro distributions and conditional transforms.

    Arguments:
        family: one of :data:`PYRO_FAMILIES`.
        latent_dim: D.
        hidden_dims: encoder widths (the last is the feature size); the decoder uses them reversed.
        depth: the number of conditional transforms (flows).
        input_dim: pixels per image.
        iaf_hidden: widths of the IAF's MADE (``None``: pyro's default ``[10 D]``).
    """

    def __init__(
        self,
        family: str,
        latent_dim: int,
        hidden_dims: Sequence[int] = (300, 300),
        depth: int = 4,
        input_dim: int = 784,
        iaf_hidden: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if family not in PYRO_FAMILIES:
            raise ValueError(f"posterior={family}: pyro counterparts exist for {', '.join(PYRO_FAMILIES)}")
        hidden = [int(w) for w in hidden_dims]
        self.family, self.latent_dim = family, latent_dim
        self.encoder = nn.Sequential(nn.Flatten(1), _mlp([input_dim, *hidden]), nn.ReLU())
        self.head = nn.Linear(hidden[-1], 2 * latent_dim)
        self.decoder = _mlp([latent_dim, *hidden[::-1], input_dim])
        flows = [] if family == "mean_field" else range(int(depth))
        self.transforms = nn.ModuleList(
            _transform(family, latent_dim, hidden[-1], k, iaf_hidden) for k in flows
        )
        self.base = _AmortizedNormal(self.head)
        self.q = dist.ConditionalTransformedDistribution(self.base, list(self.transforms))

    def posterior(self, h: Tensor) -> dist.Distribution:
        r"""``q(z|x)`` given the features ``h``: the base itself for mean-field."""
        return self.base.condition(h) if self.family == "mean_field" else self.q.condition(h)

    def _prior(self, like: Tensor) -> dist.Distribution:
        zero = like.new_zeros(())
        return dist.Normal(zero, 1.0).expand([self.latent_dim]).to_event(1)

    def _log_px(self, z: Tensor, x: Tensor) -> Tensor:
        return dist.Bernoulli(logits=self.decoder(z)).to_event(1).log_prob(x.flatten(1))

    def elbo_terms(self, x: Tensor) -> tuple[Tensor, Tensor]:
        r"""One-sample reconstruction term and KL, each ``[B]`` (closed-form KL for mean-field)."""
        h = self.encoder(x)
        q = self.posterior(h)
        z = q.rsample()
        if self.family == "mean_field":
            kl = kl_divergence(q, self._prior(z))
        else:
            kl = q.log_prob(z) - self._prior(z).log_prob(z)
        return self._log_px(z, x), kl

    def loss(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        r"""``(-mean ELBO, rec [B], kl [B])``."""
        rec, kl = self.elbo_terms(x)
        return -(rec - kl).mean(), rec, kl

    def log_weights(self, x: Tensor, k: int, chunk: int = 1000) -> Tensor:
        r"""``log p(x, z_i) - log q(z_i|x)``, ``[k, B]``, in chunks of samples."""
        q = self.posterior(self.encoder(x))
        parts = []
        for start in range(0, k, chunk):
            z = q.rsample((min(chunk, k - start),))
            parts.append(self._log_px(z, x) + self._prior(z).log_prob(z) - q.log_prob(z))
        return torch.cat(parts, 0)

    def iwae_bound(self, x: Tensor, k: int, chunk: int = 1000) -> Tensor:
        r"""``log (1/k) sum_i p(x, z_i) / q(z_i|x)``, ``[B]``."""
        return torch.logsumexp(self.log_weights(x, k, chunk), 0) - math.log(k)


def build_pyro_vae(
    family: str,
    latent_dim: int,
    hidden_dims: Sequence[int] = (300, 300),
    depth: int = 4,
    input_dim: int = 784,
    iaf_hidden: Sequence[int] | None = None,
) -> PyroVAE:
    r"""The pyro-built VAE of ``family`` (see :class:`PyroVAE`)."""
    return PyroVAE(family, latent_dim, hidden_dims, depth, input_dim, iaf_hidden)
