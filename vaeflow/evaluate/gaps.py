r"""The inference gaps of Cremer et al. (2018): local (non-amortized) posteriors and their fit.

:class:`LocalPosterior` gives each example its own posterior parameters, started at the
amortized posterior: the same family (the encoder features as free parameters) or a more
flexible one (followed by a full-covariance affine step and planar steps).
:func:`fit_local_posterior` maximizes every example's ELBO over them, and
:func:`inference_gaps` splits :math:`\log p(x) - \mathcal{L}[q]` into the approximation and
amortization gaps with importance-weighted estimates of :math:`\log p(x)`.

References:
    | Inference Suboptimality in Variational Autoencoders (Cremer, Li & Duvenaud, 2018)
    | https://arxiv.org/abs/1801.03558
    | Variational Inference with Normalizing Flows (Rezende & Mohamed, 2015), planar flows
    | https://arxiv.org/abs/1505.05770
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaeflow.evaluate.estimator import (
    IWEstimate,
    _model_dtype_device,
    importance_weighted,
    pairs_per_chunk,
)
from vaeflow.model import VAE
from vaeflow.randomness import Stream, stream_seed
from vaeflow.stats import mean_se

__all__ = ["LocalPosterior", "fit_local_posterior", "inference_gaps"]


class LocalPosterior(nn.Module):
    r"""A posterior with its own parameters for each of N examples, started at the amortized one.

    Same family: the encoder features :math:`h_j` become free parameters, so
    :math:`q_j(z) = q(z; h_j)` ranges over every posterior the model's head can express.
    Flexible (``flow_depth`` not ``None``): :math:`z_0 \sim q(z; h_j)` then a per-example
    full-covariance affine step :math:`z_1 = L_j z_0 + m_j` (:math:`L_j` lower triangular with
    diagonal :math:`e^{s_j}`) and ``flow_depth`` planar steps (Rezende & Mohamed, 2015)

    .. math:: z' = z + \hat u \tanh(w^\top z + b), \quad
        \log|\det \partial z'/\partial z| = \log(1 + (1 - \tanh^2(w^\top z + b))\, w^\top \hat u),

    with :math:`\hat u = u + (\operatorname{softplus}(w^\top u) - 1 - w^\top u)\, w / \|w\|^2`
    so that :math:`w^\top \hat u > -1` (invertible). :math:`L = I`, :math:`m = 0` and
    :math:`\hat u = 0` at the start, so both begin exactly at the amortized posterior.

    Arguments:
        posterior: the model's posterior (its head maps ``h`` to ``q``; not trained here).
        h: the encoder's features of the N examples ``[N, F]`` (the starting point).
        flow_depth: planar steps of the flexible family (``None``: same family only).
        generator: seeds the planar directions ``w``.
    """

    def __init__(
        self,
        posterior: nn.Module,
        h: Tensor,
        flow_depth: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self._head = (posterior,)  # a tuple, so that the model's weights are not parameters here
        self.h = nn.Parameter(h.detach().clone())
        self.flexible = flow_depth is not None
        if self.flexible:
            n, d = h.shape[0], posterior.latent_dim
            kw = {"device": h.device, "dtype": h.dtype}
            self.log_diag = nn.Parameter(torch.zeros(n, d, **kw))
            self.lower = nn.Parameter(torch.zeros(n, d, d, **kw))
            self.shift = nn.Parameter(torch.zeros(n, d, **kw))
            depth = int(flow_depth)
            w = torch.randn(depth, n, d, generator=generator, dtype=h.dtype) / math.sqrt(d)
            self.w = nn.Parameter(w.to(h.device))
            # u_hat = 0 (the identity) where w^T u = log(e - 1), i.e. softplus(w^T u) = 1
            u = math.log(math.e - 1) * w / w.square().sum(-1, keepdim=True)
            self.u = nn.Parameter(u.to(h.device))
            self.b = nn.Parameter(torch.zeros(depth, n, **kw))

    def reparameterize(self, eps: Tensor, index: slice = slice(None)) -> tuple[Tensor, Tensor]:
        r"""``eps [n, b, D]`` for the examples ``index`` -> ``z [n, b, D]``, ``log q [n, b]``."""
        z, log_q = self._head[0].reparameterize(self.h[index], eps)
        if not self.flexible:
            return z, log_q
        log_diag = self.log_diag[index]
        scale = torch.tril(self.lower[index], -1) + torch.diag_embed(log_diag.exp())
        z = torch.einsum("sbd,bed->sbe", z, scale) + self.shift[index]
        log_q = log_q - log_diag.sum(-1)
        for w, u, b in zip(self.w[:, index], self.u[:, index], self.b[:, index]):
            wu = (w * u).sum(-1, keepdim=True)
            u_hat = u + (F.softplus(wu) - 1 - wu) * w / w.square().sum(-1, keepdim=True)
            act = torch.tanh((z * w).sum(-1) + b)
            z = z + u_hat * act.unsqueeze(-1)
            log_q = log_q - torch.log1p((1 - act.square()) * (w * u_hat).sum(-1))
        return z, log_q

    def proposal(self, x: Tensor, start: int, stop: int) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
        r"""This posterior as a :data:`Proposal` over the examples it was built for."""
        return lambda eps: self.reparameterize(eps, slice(start, stop))


@contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)


def fit_local_posterior(
    model: VAE,
    images: Tensor,
    local: LocalPosterior,
    *,
    steps: int,
    lr: float,
    samples: int,
    seed: int = 0,
    block: int | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> list[float]:
    r"""Maximizes every example's ELBO over its own local posterior parameters.

    .. math:: \max_{\lambda_j} \frac1S \sum_{s=1}^S \log p(x_j, z_s) - \log q_{\lambda_j}(z_s),
        \quad z_s = T_{\lambda_j}(\epsilon_s),

    all examples at once (the parameters of different examples do not interact, so one
    Adam step on the summed objective is N independent steps), with a cosine-decayed
    learning rate. ``block`` examples are processed at a time, gradients accumulated:
    the result does not depend on it. The model's weights stay fixed.

    Returns:
        The mean ELBO per step (a noisy trace).
    """
    dtype, device = _model_dtype_device(model)
    n = images.shape[0]
    block = n if not block else max(1, int(block))
    generator = torch.Generator(device=device).manual_seed(int(seed))
    optimizer = torch.optim.Adam(local.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, steps))
    trace: list[float] = []
    model.eval()
    with _frozen(model), torch.enable_grad():
        for step in range(steps):
            eps = torch.randn(samples, n, model.latent_dim, generator=generator, device=device, dtype=dtype)
            optimizer.zero_grad(set_to_none=True)
            total = 0.0
            for e0 in range(0, n, block):
                index = slice(e0, min(n, e0 + block))
                x = images[index].to(device=device, dtype=dtype)
                z, log_q = local.reparameterize(eps[:, index], index)
                log_px, log_pz = model.log_joint(z, x)
                elbo = (log_px + log_pz - log_q).mean(0)
                elbo = torch.where(torch.isfinite(elbo), elbo, torch.zeros_like(elbo))
                (-elbo.sum()).backward()
                total += elbo.detach().sum().item()
            for p in local.parameters():
                if p.grad is not None:
                    p.grad.nan_to_num_(0.0, 0.0, 0.0)
            optimizer.step()
            schedule.step()
            trace.append(total / n)
            if progress is not None:
                progress(step + 1, trace[-1])
    return trace


def inference_gaps(
    model: VAE,
    images: Tensor,
    *,
    k: int,
    seed: int = 0,
    ids: Sequence[int] | None = None,
    steps: int = 500,
    lr: float = 0.03,
    samples: int = 16,
    flow_depth: int = 4,
    memory_mb: float | None = None,
    amortized: IWEstimate | None = None,
    log_px: Tensor | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    r"""The approximation and amortization gaps of Cremer et al. (2018) on ``images``.

    For each example: :math:`\mathcal{L}[q]`, the amortized ELBO; :math:`\mathcal{L}[q^*]`,
    the ELBO of the best same-family posterior found by :func:`fit_local_posterior`
    (at least :math:`\mathcal{L}[q]`, since q is in the family); :math:`\mathcal{L}[q^*_{flex}]`,
    that of the flexible local posterior (at least :math:`\mathcal{L}[q^*]`, since the family
    contains the same family); :math:`\log p(x)`, ``log_px`` when given (quadrature, for 1
    or 2 latents), else the largest of the three k-sample IW estimates (with q, :math:`q^*`
    and :math:`q^*_{flex}`). Each is a stochastic lower bound, so the largest is the closest:
    a proposal that misses a posterior mode lowers only its own estimate, while its nearly
    equal weights give it the smallest Monte Carlo standard error (choosing by that error
    made the approximation gap negative, -4.6 nats where it is +4.3, on a two-mode
    posterior). And each is at least the ELBO on its own samples (Jensen), so the
    approximation gap is never negative. Then

    - ``approximation = log p(x) - best local ELBO`` and
      ``amortization = best local ELBO - L[q]`` (best local = the flexible one), which add up
      to the inference gap ``log p(x) - L[q]``;
    - ``approximation_same``, ``amortization_same``: the same split with
      :math:`\mathcal{L}[q^*]` of the model's own family, as in Cremer et al.'s Table 2.

    All ELBOs are averaged over the same k samples as the IW estimates (common random
    numbers). Each figure is a mean over examples with its standard error.

    ``amortized``, when given, is the k-sample estimate with the amortized posterior
    already computed for these examples with the same ``seed`` and ``ids`` (the noise is
    keyed by both, so it would come out the same). ``log_px``, when given, is the exact
    :math:`\log p(x)` of each example (:func:`~vaeflow.evaluate.quadrature.quadrature`). ``progress(phase, done, total)`` is called
    with the work done in units of one optimization step (each IW pass counts as one).

    Returns:
        ``{"n", "k", ..., "rows": {name: {"mean", "se"}}, "per_example": {name: [...]}}``.
    """
    dtype, device = _model_dtype_device(model)
    n = images.shape[0]
    exact = None if log_px is None else torch.as_tensor(log_px, dtype=torch.float64)
    ids = list(range(n)) if ids is None else [int(i) for i in ids]
    total = 3 + 2 * steps
    report = progress or (lambda phase, done, total: None)
    iw = {"memory_mb": memory_mb, "seed": seed, "ids": ids}
    if amortized is None:
        report("amortized IW", 0, total)
        amortized = importance_weighted(model, images, k, **iw)
    elif amortized.k != k or amortized.log_px.shape[0] != n:
        raise ValueError(
            f"the amortized estimate has k={amortized.k} for {amortized.log_px.shape[0]} examples"
        )
    with torch.no_grad():
        h = torch.cat(
            [model.encoder(images[i : i + 256].to(device=device, dtype=dtype)) for i in range(0, n, 256)]
        )
    generator = torch.Generator().manual_seed(stream_seed(seed, Stream.GAPS_FLEXIBLE))
    block = max(1, pairs_per_chunk(model, images[:1], memory_mb, grad=True)[0] // samples)
    locals_ = {
        "same": LocalPosterior(model.posterior, h),
        "flexible": LocalPosterior(model.posterior, h, flow_depth=flow_depth, generator=generator),
    }
    traces, estimates = {}, {}
    for i, (name, local) in enumerate(locals_.items()):
        traces[name] = fit_local_posterior(
            model,
            images,
            local,
            steps=steps,
            lr=lr,
            samples=samples,
            seed=stream_seed(seed, Stream.GAPS_FIT, i),
            block=block,
            progress=lambda step, elbo, name=name, i=i: report(
                f"local {name}: elbo {elbo:.2f}", 1 + i * (steps + 1) + step, total
            ),
        )
        report(f"local {name} IW", (i + 1) * (steps + 1), total)
        estimates[name] = importance_weighted(model, images, k, proposal=local.proposal, **iw)
    report("done", total, total)
    # log p(x): exact where given, else per example the largest of the IW estimates
    candidates = [amortized, *estimates.values()]
    chosen = torch.stack([e.log_px for e in candidates]).nan_to_num(-math.inf).argmax(0)
    best_iw = torch.stack([e.log_px for e in candidates]).gather(0, chosen[None])[0]
    log_px = best_iw if exact is None else exact.to(best_iw)
    elbo_q = amortized.elbo
    elbo_same = torch.maximum(estimates["same"].elbo, elbo_q)
    elbo_flex = torch.maximum(estimates["flexible"].elbo, elbo_same)
    per_example = {
        "log_px": log_px,
        "elbo_amortized": elbo_q,
        "elbo_local_same": elbo_same,
        "elbo_local_flexible": elbo_flex,
        "inference": log_px - elbo_q,
        "approximation": log_px - elbo_flex,
        "amortization": elbo_flex - elbo_q,
        "approximation_same": log_px - elbo_same,
        "amortization_same": elbo_same - elbo_q,
    }
    rows = {}
    for name, values in per_example.items():
        mean, se = mean_se(values)
        rows[name] = {"mean": mean, "se": se}
    return {
        "n": n,
        "k": k,
        "steps": steps,
        "lr": lr,
        "samples": samples,
        "flow_depth": flow_depth,
        "ids": ids,
        "rows": rows,
        "not_improved": {
            "same": int((estimates["same"].elbo <= elbo_q).sum()),
            "flexible": int((estimates["flexible"].elbo <= elbo_same).sum()),
        },
        "log_px_rule": "quadrature" if exact is not None else "the largest of the IW estimates",
        "log_px_from": {name: int((chosen == i).sum()) for i, name in enumerate(["amortized", *estimates])},
        "log_px_mc_se_mean": float(torch.stack([e.mc_se for e in candidates]).gather(0, chosen[None]).mean()),
        "best_iw_below_exact": None if exact is None else mean_se(log_px - best_iw)[0],
        "log_px_amortized_iw": mean_se(amortized.log_px)[0],
        "final_train_elbo": {name: trace[-1] if trace else None for name, trace in traces.items()},
        "per_example": {name: values.tolist() for name, values in per_example.items()},
    }
