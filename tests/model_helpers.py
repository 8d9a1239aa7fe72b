"""Models with known answers for the tests of estimators: a linear-Gaussian VAE, whose
marginal and posterior are Gaussian in closed form."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vaeflow.model import VAE
from vaeflow.posteriors.mean_field import MeanField
from vaeflow.priors import StandardNormal


class FlattenEncoder(nn.Module):
    r"""``h = [x, 0]``: the data itself, and ``extra`` features that are 0 (the head reads
    log sigma from them, so that local optimization over h is well conditioned)."""

    def __init__(self, dims: int, extra: int = 0) -> None:
        super().__init__()
        self.feature_dim, self.extra = dims + extra, extra

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)
        return torch.cat([x, x.new_zeros(x.shape[0], self.extra)], 1)


class LinearDecoder(nn.Module):
    r"""``z -> W z + b``."""

    def __init__(self, weight: Tensor, bias: Tensor) -> None:
        super().__init__()
        self.weight, self.bias = nn.Parameter(weight), nn.Parameter(bias)

    def forward(self, z: Tensor) -> Tensor:
        return z @ self.weight.T + self.bias


class GaussianLikelihood(nn.Module):
    r"""``x | z ~ N(mean, sigma^2 I)`` with a fixed sigma."""

    def __init__(self, sigma: float) -> None:
        super().__init__()
        self.sigma = sigma

    def log_prob(self, mean: Tensor, x: Tensor) -> Tensor:
        x = x.flatten(1)
        return torch.distributions.Normal(mean, self.sigma).log_prob(x).sum(-1)

    def mean(self, params: Tensor) -> Tensor:
        return params


class LinearGaussian:
    r"""A linear-Gaussian VAE in float64 with its exact marginal and posterior."""

    def __init__(
        self, dims: int = 8, latent: int = 3, sigma: float = 0.5, orthogonal: bool = True, seed: int = 0
    ):
        g = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(dims, dims, generator=g, dtype=torch.float64))
        if orthogonal:  # W^T W diagonal: the exact posterior is mean-field
            weight = q[:, :latent] * torch.tensor(
                [2.0, 1.0, 0.5][:latent] + [1.0] * (latent - 3), dtype=torch.float64
            )
        else:
            weight = torch.randn(dims, latent, generator=g, dtype=torch.float64)
        self.weight, self.bias, self.sigma = (
            weight,
            0.3 * torch.randn(dims, generator=g, dtype=torch.float64),
            sigma,
        )
        self.dims, self.latent = dims, latent
        self.precision = torch.eye(latent, dtype=torch.float64) + weight.T @ weight / sigma**2
        self.cov = torch.linalg.inv(self.precision)
        self.gain = self.cov @ weight.T / sigma**2  # posterior mean = gain (x - b)

    def marginal(self) -> torch.distributions.MultivariateNormal:
        cov = self.weight @ self.weight.T + self.sigma**2 * torch.eye(self.dims, dtype=torch.float64)
        return torch.distributions.MultivariateNormal(self.bias, cov)

    def sample(self, n: int, seed: int = 1) -> Tensor:
        x = self.marginal().sample((n,)) if seed is None else self._sample(n, seed)
        return x.reshape(n, 1, 1, self.dims)

    def _sample(self, n: int, seed: int) -> Tensor:
        torch.manual_seed(seed)
        return self.marginal().sample((n,))

    def log_px(self, x: Tensor) -> Tensor:
        return self.marginal().log_prob(x.flatten(1))

    def model(self, mean_shift: float = 0.0, log_sigma_shift: float = 0.0) -> VAE:
        r"""The VAE with a mean-field posterior head ``(mu, log sigma) = A h + c`` on
        ``h = [x, 0]``: the exact posterior's mean and marginal scales, shifted."""
        d, p = self.latent, self.dims
        posterior = MeanField(d, p + d).double()
        with torch.no_grad():
            lin = posterior.base.linear
            lin.weight.zero_()
            lin.weight[:d, :p] = self.gain
            lin.bias[:d] = -self.gain @ self.bias + mean_shift
            lin.weight[d:, p:] = torch.eye(d, dtype=torch.float64)
            lin.bias[d:] = 0.5 * torch.log(torch.diagonal(self.cov)) + log_sigma_shift
        decoder = LinearDecoder(self.weight.clone(), self.bias.clone())
        encoder = FlattenEncoder(p, extra=d)
        return VAE(encoder, posterior, StandardNormal(d), decoder, GaussianLikelihood(self.sigma), (1, 1, p))
