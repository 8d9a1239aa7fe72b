r"""The VAE: encoder + posterior + prior + decoder + likelihood (Kingma & Welling, 2014).

One forward pass, ``x -> h -> (z, log q) -> (log p(x|z), log p(z))``, gives every term
that the objectives need; nothing is recomputed.

References:
    | Auto-Encoding Variational Bayes (Kingma & Welling, 2014)
    | https://arxiv.org/abs/1312.6114
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from vaeflow.checks import integer
from vaeflow.data import DataSplits, dequantized
from vaeflow.likelihoods import LIKELIHOODS
from vaeflow.nets import DECODERS, ENCODERS
from vaeflow.posteriors import POSTERIORS
from vaeflow.priors import PRIORS

__all__ = ["VAE", "Pass", "build_model", "model_and_data"]


@dataclass
class Pass:
    r"""The terms of one forward pass with ``n`` samples per example.

    ``h [B, F]``; ``z [n, B, D]``; ``log_q``, ``log_px``, ``log_pz`` ``[n, B]``; ``kl [B]``,
    the closed-form KL, when it was asked for.
    """

    h: Tensor
    z: Tensor
    log_q: Tensor
    log_px: Tensor
    log_pz: Tensor
    kl: Tensor | None = None


class VAE(nn.Module):
    r"""A variational autoencoder with a pluggable posterior.

    Arguments:
        encoder: ``x -> h``; has ``feature_dim``.
        posterior: ``h -> (z, log q(z|x))``.
        prior: ``log_prob(z)``, ``sample(n)``.
        decoder: ``z -> likelihood parameters``.
        likelihood: a :class:`~vaeflow.likelihoods.Likelihood`.
        input_shape: image shape ``(C, H, W)``.
    """

    def __init__(
        self,
        encoder: nn.Module,
        posterior: nn.Module,
        prior: nn.Module,
        decoder: nn.Module,
        likelihood: nn.Module,
        input_shape: Sequence[int],
    ) -> None:
        super().__init__()
        self.encoder, self.posterior, self.prior = encoder, posterior, prior
        self.decoder, self.likelihood = decoder, likelihood
        self.input_shape = tuple(input_shape)

    @property
    def latent_dim(self) -> int:
        return self.posterior.latent_dim

    def log_joint(self, z: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        r"""``log p(x|z)`` and ``log p(z)``, each ``[n, B]``."""
        return self.likelihood.log_prob(self.decoder(z), x), self.prior.log_prob(z)

    def forward(
        self,
        x: Tensor,
        n: int = 1,
        analytic_kl: bool = False,
        *,
        eps: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Pass:
        r"""The terms of ``n`` samples per example; with ``analytic_kl`` also the closed-form
        KL, from the same evaluation of q's parameters.

        Arguments:
            x: images ``[B, C, H, W]``.
            n: samples per example (when ``eps`` is not given).
            analytic_kl: also the closed-form KL (Gaussian families against a diagonal
                Gaussian prior).
            eps: the posterior's standard normal noise ``[n, B, D]``.
            generator: where to draw ``eps`` from when it is not given.
        """
        h = self.encoder(x)
        if eps is None:
            eps = self.posterior.noise(h, n, generator)
        if analytic_kl:
            z, log_q, kl = self.posterior.sample_with_kl(h, eps, self.prior.gaussian_params())
        else:
            (z, log_q), kl = self.posterior.reparameterize(h, eps), None
        log_px, log_pz = self.log_joint(z, x)
        return Pass(h, z, log_q, log_px, log_pz, kl)

    def decode_mean(self, z: Tensor) -> Tensor:
        r"""The mean image ``E[x|z]``, shaped ``[..., C, H, W]``."""
        return self.likelihood.mean(self.decoder(z)).unflatten(-1, self.input_shape)

    @torch.no_grad()
    def sample_images(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        r"""Mean images of ``n`` draws from the prior (from ``generator``), ``[n, C, H, W]``."""
        return self.decode_mean(self.prior.sample(n, generator))

    @torch.no_grad()
    def reconstruct(
        self, x: Tensor, eps: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        r"""Mean images decoded from one posterior sample per image, ``[B, C, H, W]``: of the
        noise ``eps [1, B, D]``, or of noise drawn from ``generator``."""
        h = self.encoder(x)
        z, _ = self.posterior.reparameterize(h, self.posterior.noise(h, 1, generator) if eps is None else eps)
        return self.decode_mean(z[0])


def _prior_context(prior_cfg: Mapping[str, Any], **context: Any) -> dict[str, Any]:
    r"""The parts of the model that a prior asks for by name (the VampPrior: the encoder, the
    posterior and the image shape); none for the others."""
    builder = PRIORS.entries.get(prior_cfg.get("name"))
    wanted = inspect.signature(builder).parameters if builder is not None else {}
    return {key: value for key, value in context.items() if key in wanted}


def build_model(cfg: Mapping[str, Any], input_shape: Sequence[int], levels: int | None = 2) -> VAE:
    r"""Builds the VAE that a composed config describes, for images of ``input_shape`` with
    ``levels`` values per pixel (:attr:`~vaeflow.data.DataSplits.levels`).

    Uses the groups ``encoder``, ``decoder``, ``posterior``, ``prior``, ``likelihood``
    (``bernoulli`` when absent) and the key ``model.latent_dim``; the decoder emits what the likelihood reads
    (:attr:`~vaeflow.likelihoods.Likelihood.param_shape`).
    """
    latent_dim = integer(
        "model.latent_dim", cfg["model"]["latent_dim"], 1,
        advice="the latent space needs an integer number of dimensions, at least 1",
    )  # fmt: skip
    likelihood_cfg = cfg.get("likelihood") or {"name": "bernoulli"}
    likelihood = LIKELIHOODS.build(likelihood_cfg, shape=input_shape, levels=levels)
    encoder = ENCODERS.build(cfg["encoder"], input_shape=input_shape)
    posterior = POSTERIORS.build(cfg["posterior"], latent_dim=latent_dim, feature_dim=encoder.feature_dim)
    prior = PRIORS.build(
        cfg["prior"], latent_dim=latent_dim,
        **_prior_context(cfg["prior"], encoder=encoder, posterior=posterior, input_shape=tuple(input_shape),
                         posterior_name=str(cfg["posterior"]["name"])),
    )  # fmt: skip
    decoder = DECODERS.build(cfg["decoder"], latent_dim=latent_dim, output_shape=likelihood.param_shape)
    return VAE(encoder, posterior, prior, decoder, likelihood, input_shape)


def model_and_data(cfg: Mapping[str, Any], data: DataSplits) -> tuple[VAE, DataSplits]:
    r"""The model that ``cfg`` describes for ``data``, and the data as that model scores them:
    dequantized where its likelihood is a density on discrete data
    (:attr:`~vaeflow.likelihoods.Likelihood.dequantizes`). Training and evaluation both build
    through here, so that they score the same values."""
    model = build_model(cfg, data.shape, data.levels)
    return model, dequantized(data) if model.likelihood.dequantizes else data
