r"""Evaluation of a trained VAE: the importance-weighted NLL, bits/dim and the inference gaps.

**Importance-weighted log-likelihood** (Burda et al., 2016). For each example x, draw
:math:`z_1, \dots, z_k \sim q(z|x)` and form the log-weights
:math:`\log w_i = \log p(x|z_i) + \log p(z_i) - \log q(z_i|x)`; then

.. math:: \log \hat p(x) = \log \frac{1}{k} \sum_{i=1}^k w_i
    = \operatorname{logsumexp}_i \log w_i - \log k,

a stochastic lower bound, :math:`E[\log \hat p(x)] = \mathcal{L}_k(x) \le \log p(x)`, that
rises with k and is consistent as :math:`k \to \infty`. On the same samples,

.. math:: \widehat{\text{ELBO}}(x) = \frac{1}{k} \sum_i \log w_i \le \log \hat p(x)
    \quad \text{(Jensen, for every draw; equality at } k = 1),

and :math:`\widehat{KL} = \frac{1}{k} \sum_i [\log q(z_i|x) - \log p(z_i)]`. The effective
sample size :math:`ESS = (\sum w_i)^2 / \sum w_i^2` gives the delta-method Monte Carlo
standard error of the estimate, :math:`se(\log \hat p) \approx \sqrt{(k / ESS - 1) / k}`,
whose square over two is its bias: a small ``mc_se`` says k is large enough.

**Cost.** The encoder runs once per example; only posterior sampling and the decoder
repeat. Samples are processed in chunks of ``examples x samples`` pairs sized from a
memory budget (:func:`plan_chunks`): all k samples of as many examples as fit, or equal
slices of one example's k samples when k is large; on the CPU a chunk stays below
:data:`CPU_CHUNK_MB`, where its buffers are reused from cache and heap. Chunks are reduced
with a running ``logsumexp`` in float64, so peak memory is bounded whatever k is. The
standard normal noise of sample i
of example j comes from its own stream, seeded by ``(seed, j, i // NOISE_BLOCK)``
(:func:`example_noise`), so the estimate of an example does not depend on the chunk
size, the batch size or which other examples are evaluated; only float rounding does.

**Inference gaps** (Cremer et al., 2018). With :math:`q^*` the best posterior of a family
for one example (optimized locally, not amortized),

.. math:: \log p(x) - \mathcal{L}[q] = \underbrace{\log p(x) - \mathcal{L}[q^*]}_{\text{approximation}}
    + \underbrace{\mathcal{L}[q^*] - \mathcal{L}[q]}_{\text{amortization}} .

:func:`inference_gaps` optimizes, per example and batched over examples, a local
posterior of the same family (the encoder features h as free parameters, started at the
encoder's output) and a more flexible one (the same, followed by a per-example
full-covariance affine step and planar steps, started at the identity), then estimates
:math:`\log p(x)` by the most precise of three high-k IW estimates.

References:
    | Importance Weighted Autoencoders (Burda, Grosse & Salakhutdinov, 2016)
    | https://arxiv.org/abs/1509.00519
    | Inference Suboptimality in Variational Autoencoders (Cremer, Li & Duvenaud, 2018)
    | https://arxiv.org/abs/1801.03558
    | Variational Inference with Normalizing Flows (Rezende & Mohamed, 2015), planar flows
    | https://arxiv.org/abs/1505.05770
"""

from __future__ import annotations

import ctypes
import logging
import math
import resource
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from vaeflow.checkpoint import load_checkpoint
from vaeflow.data import DataSplits, binarize_fixed, load_dataset
from vaeflow.errors import CheckpointError, ConfigError, DataError
from vaeflow.model import VAE, build_model
from vaeflow.progress import TaskProgress, progress_mode
from vaeflow.resolvers import resumed_run_dir
from vaeflow.train import resolve_device, write_json_atomic

__all__ = [
    "NOISE_BLOCK",
    "SPLITS",
    "IWEstimate",
    "Proposal",
    "amortized_proposal",
    "example_noise",
    "bytes_per_pair",
    "pairs_per_chunk",
    "plan_chunks",
    "importance_weighted",
    "mean_se",
    "LocalPosterior",
    "fit_local_posterior",
    "inference_gaps",
    "keep_freed_memory",
    "run_dir_of",
    "resolve_run",
    "TrainedRun",
    "load_trained",
    "evaluate",
]

log = logging.getLogger("vaeflow")

#: samples per noise block: the unit of the per-example noise streams (see :func:`example_noise`).
NOISE_BLOCK = 256
#: On the CPU a chunk's working memory stays below this, whatever the budget: larger buffers
#: are mapped afresh by the allocator and page-faulted at every chunk (measured on the MLP
#: benchmark model: chunks of 5,000+ pairs cost ~30% more CPU time than chunks of 4,096).
CPU_CHUNK_MB = 64
SPLITS = ("test", "val", "train")
CHECKPOINTS = ("best", "last")

#: ``proposal(x, start, stop) -> sample``, where ``sample(eps [n, b, D]) -> (z, log q)``
#: draws for the examples ``start:stop`` of the evaluated set, whose images are ``x``.
Proposal = Callable[[Tensor, int, int], Callable[[Tensor], tuple[Tensor, Tensor]]]


# --------------------------------------------------------------------------------------
# The importance-weighted estimator
# --------------------------------------------------------------------------------------


@dataclass
class IWEstimate:
    r"""Per-example results of :func:`importance_weighted`, float64 tensors ``[N]`` on the CPU.

    Attributes:
        log_px: :math:`\log \hat p(x) = \operatorname{logsumexp}_i \log w_i - \log k`.
        elbo: :math:`\frac1k \sum_i \log w_i`, on the same samples.
        rec: :math:`\frac1k \sum_i \log p(x|z_i)`.
        kl: :math:`\frac1k \sum_i [\log q(z_i|x) - \log p(z_i)]`; ``elbo = rec - kl``.
        ess: effective sample size :math:`(\sum_i w_i)^2 / \sum_i w_i^2`, in ``[1, k]``.
        k: samples per example.
    """

    log_px: Tensor
    elbo: Tensor
    rec: Tensor
    kl: Tensor
    ess: Tensor
    k: int

    @property
    def mc_se(self) -> Tensor:
        r"""Delta-method Monte Carlo standard error of each :math:`\log \hat p(x)`,
        :math:`\sqrt{(k / ESS - 1) / k}`."""
        return ((self.k / self.ess - 1).clamp(min=0) / self.k).sqrt()

    def select(self, index: Tensor) -> IWEstimate:
        r"""The estimates of the examples ``index``."""
        return IWEstimate(
            self.log_px[index], self.elbo[index], self.rec[index], self.kl[index], self.ess[index], self.k
        )


def amortized_proposal(model: VAE) -> Proposal:
    r"""The model's own amortized posterior: the encoder runs once per block of examples,
    then ``posterior.reparameterize(h, eps)`` maps noise to samples."""

    def prepare(x: Tensor, start: int, stop: int) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
        h = model.encoder(x)
        return lambda eps: model.posterior.reparameterize(h, eps)

    return prepare


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


def _stream_seed(*keys: int) -> int:
    x = 0
    for key in keys:
        x = _splitmix64(x ^ (int(key) & 0xFFFFFFFFFFFFFFFF))
    return x >> 1  # torch seeds are < 2**63


def example_noise(
    ids: Sequence[int],
    start: int,
    stop: int,
    latent_dim: int,
    seed: int,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    r"""Standard normal noise for samples ``start:stop`` of the examples ``ids``.

    Sample i of example j is row ``i % NOISE_BLOCK`` of a ``[NOISE_BLOCK, D]`` block drawn
    from a generator seeded by ``(seed, j, i // NOISE_BLOCK)``: the same numbers whichever
    chunk asks for them, so estimates do not depend on how the work is chunked.

    Arguments:
        ids: example identifiers (indices in the dataset split).
        start, stop: the range of sample indices.
        latent_dim: D.
        seed: the evaluation seed.

    Returns:
        ``eps [stop - start, len(ids), D]``.
    """
    out = torch.empty(stop - start, len(ids), latent_dim, device=device, dtype=dtype)
    generator = torch.Generator(device=device)
    first, last = start // NOISE_BLOCK, (stop - 1) // NOISE_BLOCK
    for j, example in enumerate(ids):
        for block in range(first, last + 1):
            lo, hi = max(start, block * NOISE_BLOCK), min(stop, (block + 1) * NOISE_BLOCK)
            generator.manual_seed(_stream_seed(seed, example, block))
            tile = torch.randn(NOISE_BLOCK, latent_dim, generator=generator, device=device, dtype=dtype)
            out[lo - start : hi - start, j] = tile[lo - block * NOISE_BLOCK : hi - block * NOISE_BLOCK]
    return out


class _AllocationCounter(TorchDispatchMode):
    r"""Adds up the bytes of every new tensor an operation returns (views excluded)."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {
            t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, Tensor)
        }
        for t in tree_leaves(out):
            if isinstance(t, Tensor) and t.untyped_storage().data_ptr() not in inputs:
                self.bytes += t.untyped_storage().nbytes()
        return out


@torch.inference_mode()
def bytes_per_pair(model: VAE, x: Tensor, proposal: Proposal | None = None) -> int:
    r"""Bytes of working memory per (example, sample) pair of one chunk.

    Counts every tensor that posterior sampling, the decoder and the likelihood allocate
    for 4 and for 8 samples of one example, as if none were freed (an upper bound of the
    peak), and takes the difference per sample; adds the noise and the float64 reductions.
    """
    proposal = proposal or amortized_proposal(model)
    x = x[:1]
    sample = proposal(x, 0, 1)
    param = next(model.parameters())
    counts = []
    for n in (4, 8):
        eps = torch.randn(n, 1, model.latent_dim, device=param.device, dtype=param.dtype)
        with _AllocationCounter() as counter:
            z, log_q = sample(eps)
            model.log_joint(z, x)
        counts.append(counter.bytes)
    per_pair = max(counts[1] - counts[0], 0) // 4
    return per_pair + model.latent_dim * param.element_size() + 6 * 8


def keep_freed_memory() -> bool:
    r"""Asks glibc's malloc to keep freed blocks for reuse: a process-wide setting.

    By default glibc maps large blocks afresh and trims its heap, so each chunk's buffers
    are page-faulted again (measured: about 2 faults per sample, a third more CPU time).
    With blocks below 32 MiB served from the heap (``M_MMAP_THRESHOLD``) and the heap not
    trimmed below 1 GiB (``M_TRIM_THRESHOLD``), they are reused. ``vaeflow eval`` calls it;
    the library functions do not. Returns whether it applied (glibc only).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-3, 32 * 2**20)) and bool(libc.mallopt(-1, 2**30))
    except (OSError, AttributeError):
        return False


def pairs_per_chunk(
    model: VAE, x: Tensor, memory_mb: float, proposal: Proposal | None = None, grad: bool = False
) -> tuple[int, int]:
    r"""``(max pairs per chunk, bytes per pair)`` for a budget of ``memory_mb`` MiB (and at
    most :data:`CPU_CHUNK_MB` on the CPU); ``grad``: with autograd, which keeps the
    activations (counted as three times the inference memory)."""
    dtype, device = _model_dtype_device(model)
    per_pair = bytes_per_pair(model, x[:1].to(device, dtype), proposal) * (3 if grad else 1)
    budget = memory_mb if device.type != "cpu" else min(memory_mb, CPU_CHUNK_MB)
    return max(1, int(budget * 2**20) // per_pair), per_pair


def plan_chunks(k: int, n_examples: int, max_pairs: int, batch_size: int | None = None) -> tuple[int, int]:
    r"""Splits the work into blocks of examples and chunks of samples.

    Arguments:
        k: samples per example.
        n_examples: examples to evaluate.
        max_pairs: the most (example, sample) pairs one chunk may hold.
        batch_size: examples per block (``None``: as many as fit with all k samples, at least 1).

    Returns:
        ``(examples per block, samples per chunk)``; when a chunk does not hold all k
        samples, the chunks are about equal and multiples of :data:`NOISE_BLOCK` samples
        where they can be.
    """
    max_pairs = max(1, int(max_pairs))
    if batch_size:
        examples = max(1, min(int(batch_size), n_examples))
    else:
        examples = max(1, min(n_examples, max_pairs // k))
    most = min(k, max(1, max_pairs // examples))
    if most == k:
        return examples, k
    samples = -(-k // -(-k // most))  # k split into equal chunks
    if samples >= NOISE_BLOCK:
        up = -(-samples // NOISE_BLOCK) * NOISE_BLOCK
        samples = up if up <= most else most - most % NOISE_BLOCK
    return examples, samples


def _model_dtype_device(model: nn.Module) -> tuple[torch.dtype, torch.device]:
    param = next(model.parameters())
    return param.dtype, param.device


@torch.inference_mode()
def importance_weighted(
    model: VAE,
    images: Tensor,
    k: int,
    *,
    seed: int = 0,
    ids: Sequence[int] | Tensor | None = None,
    proposal: Proposal | None = None,
    memory_mb: float = 512,
    max_pairs: int | None = None,
    batch_size: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> IWEstimate:
    r"""The importance-weighted estimate of :math:`\log p(x)` for every example, with the
    ELBO and KL on the same samples (Burda et al., 2016).

    .. math:: \log \hat p(x) = \operatorname{logsumexp}_{i=1}^k
        [\log p(x|z_i) + \log p(z_i) - \log q(z_i|x)] - \log k, \quad z_i \sim q(z|x).

    Arguments:
        model: the VAE (its device and dtype are used).
        images: examples ``[N, ...]`` (any device; moved block by block).
        k: samples per example, >= 1.
        seed: seeds the noise (see :func:`example_noise`).
        ids: an identifier per example (its index in the split); default ``range(N)``.
        proposal: the posterior to sample from (default: the model's amortized one).
        memory_mb: working memory of one chunk, used when ``max_pairs`` is not given
            (see :func:`pairs_per_chunk`).
        max_pairs: the most (example, sample) pairs per chunk.
        batch_size: examples per block (default: from the budget).
        progress: called as ``progress(pairs_done, examples_done)`` after every chunk.

    Returns:
        An :class:`IWEstimate`.

    Example:
        >>> from vaeflow.model import build_model
        >>> cfg = {"model": {"latent_dim": 2}, "encoder": {"name": "mlp", "hidden_dims": [8]},
        ...        "decoder": {"name": "mlp", "hidden_dims": [8]},
        ...        "posterior": {"name": "mean_field"}, "prior": {"name": "standard_normal"}}
        >>> model = build_model(cfg, (1, 4, 4))
        >>> x = torch.bernoulli(torch.full((3, 1, 4, 4), 0.5))
        >>> est = importance_weighted(model, x, k=50)
        >>> bool((est.log_px >= est.elbo).all())
        True
    """
    k = int(k)
    if k < 1:
        raise ConfigError(f"k={k}: the importance-weighted estimate needs k >= 1 samples")
    n = images.shape[0]
    ids = list(range(n)) if ids is None else [int(i) for i in ids]
    if len(ids) != n:
        raise ValueError(f"{len(ids)} ids for {n} examples")
    dtype, device = _model_dtype_device(model)
    proposal = proposal or amortized_proposal(model)
    model.eval()
    if max_pairs is None:
        max_pairs, _ = pairs_per_chunk(model, images[:1], memory_mb, proposal)
    examples, samples = plan_chunks(k, n, max_pairs, batch_size)
    out = torch.empty(5, n, dtype=torch.float64)
    done = 0
    for e0 in range(0, n, examples):
        e1 = min(n, e0 + examples)
        x = images[e0:e1].to(device=device, dtype=dtype)
        sample = proposal(x, e0, e1)
        lse = lse2 = None
        sums = torch.zeros(3, e1 - e0, dtype=torch.float64, device=device)
        for s0 in range(0, k, samples):
            s1 = min(k, s0 + samples)
            eps = example_noise(ids[e0:e1], s0, s1, model.latent_dim, seed, device=device, dtype=dtype)
            z, log_q = sample(eps)
            log_px, log_pz = model.log_joint(z, x)
            log_w = (log_px + log_pz - log_q).double()
            part, part2 = torch.logsumexp(log_w, 0), torch.logsumexp(2 * log_w, 0)
            lse = part if lse is None else torch.logaddexp(lse, part)
            lse2 = part2 if lse2 is None else torch.logaddexp(lse2, part2)
            sums += torch.stack([log_w.sum(0), log_px.double().sum(0), (log_q - log_pz).double().sum(0)])
            done += (s1 - s0) * (e1 - e0)
            if progress is not None:
                progress(done, e0 + (e1 - e0) * (s1 == k))
        out[:, e0:e1] = torch.stack([lse - math.log(k), *(sums / k), 2 * lse - lse2]).cpu()
    log_px, elbo, rec, kl, log_ess = out
    return IWEstimate(log_px, elbo, rec, kl, log_ess.exp(), k)


def mean_se(values: Tensor) -> tuple[float, float]:
    r"""Mean and standard error of the mean, :math:`s / \sqrt{n}`, over the finite values."""
    values = values.double()
    values = values[torch.isfinite(values)]
    if values.numel() == 0:
        return math.nan, math.nan
    if values.numel() == 1:
        return values.item(), math.nan
    return values.mean().item(), (values.std() / math.sqrt(values.numel())).item()


# --------------------------------------------------------------------------------------
# Local (non-amortized) posteriors and the inference gaps
# --------------------------------------------------------------------------------------


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
    memory_mb: float = 512,
    amortized: IWEstimate | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    r"""The approximation and amortization gaps of Cremer et al. (2018) on ``images``.

    For each example: :math:`\mathcal{L}[q]`, the amortized ELBO; :math:`\mathcal{L}[q^*]`,
    the ELBO of the best same-family posterior found by :func:`fit_local_posterior`
    (at least :math:`\mathcal{L}[q]`, since q is in the family); :math:`\mathcal{L}[q^*_{flex}]`,
    that of the flexible local posterior (at least :math:`\mathcal{L}[q^*]`, since the family
    contains the same family); :math:`\log \hat p(x)`, of the three k-sample IW estimates
    (with q, :math:`q^*` and :math:`q^*_{flex}`), the one with the smallest Monte Carlo
    standard error, usually that of :math:`q^*_{flex}`, the proposal closest to the
    posterior (the largest of several noisy estimates would be biased upwards). Then

    - ``approximation = log p(x) - best local ELBO`` and
      ``amortization = best local ELBO - L[q]`` (best local = the flexible one), which add up
      to the inference gap ``log p(x) - L[q]``;
    - ``approximation_same``, ``amortization_same``: the same split with
      :math:`\mathcal{L}[q^*]` of the model's own family, as in Cremer et al.'s Table 2.

    All ELBOs are averaged over the same k samples as the IW estimates (common random
    numbers). Each figure is a mean over examples with its standard error.

    ``amortized``, when given, is the k-sample estimate with the amortized posterior
    already computed for these examples with the same ``seed`` and ``ids`` (the noise is
    keyed by both, so it would come out the same). ``progress(phase, done, total)`` is called
    with the work done in units of one optimization step (each IW pass counts as one).

    Returns:
        ``{"n", "k", ..., "rows": {name: {"mean", "se"}}, "per_example": {name: [...]}}``.
    """
    dtype, device = _model_dtype_device(model)
    n = images.shape[0]
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
    generator = torch.Generator().manual_seed(_stream_seed(seed, 1))
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
            seed=_stream_seed(seed, 2, i),
            block=block,
            progress=lambda step, elbo, name=name, i=i: report(
                f"local {name}: elbo {elbo:.2f}", 1 + i * (steps + 1) + step, total
            ),
        )
        report(f"local {name} IW", (i + 1) * (steps + 1), total)
        estimates[name] = importance_weighted(model, images, k, proposal=local.proposal, **iw)
    report("done", total, total)
    # log p(x): per example, the IW estimate with the smallest Monte Carlo standard error
    candidates = [amortized, *estimates.values()]
    chosen = torch.stack([e.mc_se for e in candidates]).nan_to_num(math.inf).argmin(0)
    log_px = torch.stack([e.log_px for e in candidates]).gather(0, chosen[None])[0]
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
        "log_px_from": {name: int((chosen == i).sum()) for i, name in enumerate(["amortized", *estimates])},
        "log_px_mc_se_mean": float(torch.stack([e.mc_se for e in candidates]).gather(0, chosen[None]).mean()),
        "log_px_amortized_iw": mean_se(amortized.log_px)[0],
        "final_train_elbo": {name: trace[-1] if trace else None for name, trace in traces.items()},
        "per_example": {name: values.tolist() for name, values in per_example.items()},
    }


# --------------------------------------------------------------------------------------
# The command: runs, checkpoints, data, reporting
# --------------------------------------------------------------------------------------


def run_dir_of(run: Any) -> str:
    r"""The run directory of ``run``, a run directory or a checkpoint file in one, as an
    absolute path (the OmegaConf resolver ``vaeflow.run_dir`` of ``conf/eval.yaml``).

    Raises a one-line :class:`ConfigError` when ``run`` is missing, does not exist or is a
    directory without ``checkpoints/``.
    """
    if run is None or str(run).strip() == "":
        raise ConfigError(
            "no run given: use `vaeflow eval <run dir>` (a directory that vaeflow train wrote) "
            "or run=<checkpoint .pt>"
        )
    path = Path(str(run)).expanduser()
    if not path.exists():
        raise ConfigError(
            f"run={run}: no such file or directory; give a run directory that vaeflow train wrote "
            "(it holds checkpoints/) or a checkpoint .pt file"
        )
    run_dir = resumed_run_dir(str(path))
    if run_dir is None and path.is_file():  # a checkpoint outside a run's checkpoints/
        run_dir = path.parent
    if run_dir is None:
        raise ConfigError(
            f"run={run} is not a vaeflow run directory (it has no checkpoints/); give the directory "
            "that vaeflow train printed, or run=<checkpoint .pt>"
        )
    return str(run_dir.resolve())


def resolve_run(run: Any, checkpoint: str = "best") -> tuple[Path, Path]:
    r"""``(checkpoint file, run directory)`` of a run directory or a checkpoint file."""
    run_dir = Path(run_dir_of(run))
    path = Path(str(run)).expanduser().resolve()
    if path.is_file():
        return path, run_dir
    if checkpoint not in CHECKPOINTS:
        raise ConfigError(f"checkpoint={checkpoint}: use best or last (or run=<path of a .pt file>)")
    ckpt = path / "checkpoints" / f"{checkpoint}.pt"
    if not ckpt.is_file():
        other = "last" if checkpoint == "best" else "best"
        raise CheckpointError(
            f"{ckpt} not found (the run may not have finished an epoch); try checkpoint={other}"
        )
    return ckpt, run_dir


def _training_cwd(run_dir: Path) -> Path | None:
    try:
        hydra_cfg = OmegaConf.load(run_dir / ".hydra" / "hydra.yaml")
        cwd = OmegaConf.select(hydra_cfg, "hydra.runtime.cwd", default=None)
        return Path(cwd) if cwd else None
    except Exception:
        return None


def _dataset_config(train_cfg: DictConfig, dataset_root: Any, run_dir: Path) -> DictConfig:
    dataset = train_cfg.dataset.copy()
    if dataset_root is not None:
        dataset.root = str(dataset_root)
    elif (
        dataset.get("root") and not Path(str(dataset.root)).is_absolute() and not Path(dataset.root).exists()
    ):
        # A relative root is relative to where training ran.
        cwd = _training_cwd(run_dir)
        if cwd is not None and (cwd / str(dataset.root)).exists():
            dataset.root = str(cwd / str(dataset.root))
    return dataset


@dataclass
class TrainedRun:
    r"""A trained model rebuilt from one of its checkpoints (:func:`load_trained`).

    Attributes:
        model: the VAE in eval mode, on the requested device.
        data: the dataset it was trained on, loaded afresh.
        config: the training config saved in the checkpoint.
        dataset: the dataset config actually loaded (``dataset_root`` applied).
        checkpoint: the checkpoint file.
        run_dir: the run directory.
        epoch: the epoch at which the checkpoint was written (``None`` if not recorded).
        step: the optimizer step at which it was written.
    """

    model: VAE
    data: DataSplits
    config: DictConfig
    dataset: DictConfig
    checkpoint: Path
    run_dir: Path
    epoch: int | None
    step: int | None


def load_trained(
    run: Any,
    checkpoint: str = "best",
    dataset_root: Any = None,
    device: str | torch.device = "cpu",
    load_data: Callable[[DictConfig], DataSplits] = load_dataset,
) -> TrainedRun:
    r"""Rebuilds a trained run's model and loads its data, the one way that ``vaeflow eval``
    and ``vaeflow report`` both use.

    The checkpoint is read with ``weights_only=True`` (:func:`~vaeflow.checkpoint.load_checkpoint`)
    and the model is rebuilt from the config saved in it, not from ``.hydra/``, so that
    a checkpoint is self-describing. A relative ``dataset.root`` is taken relative to where
    training ran when it does not exist from here.

    Arguments:
        run: a run directory written by ``vaeflow train``, or a checkpoint file in one.
        checkpoint: ``best`` or ``last`` (ignored when ``run`` is a file).
        dataset_root: where the data is, if not where the run was trained.
        device: where to put the model (the data stays on the CPU).
        load_data: reads the dataset that a ``dataset`` config describes; a caller that
            loads many runs of one dataset passes one that caches it.

    Raises:
        ConfigError: ``run`` is not a run directory or checkpoint.
        CheckpointError: the checkpoint is missing, corrupt, unsafe or from another model.
        DataError: the dataset's files are missing or malformed.
    """
    ckpt_path, run_dir = resolve_run(run, checkpoint)
    state = load_checkpoint(ckpt_path, map_location="cpu")
    train_cfg = OmegaConf.create(state["config"])
    dataset_cfg = _dataset_config(train_cfg, dataset_root, run_dir)
    data = load_data(dataset_cfg)
    model = build_model(train_cfg, data.shape)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(
            f"checkpoint {ckpt_path} does not fit the model its config describes ({first[:160]})"
        ) from None
    model.to(device).eval()
    return TrainedRun(
        model, data, train_cfg, dataset_cfg, ckpt_path, run_dir, state.get("epoch"), state.get("step")
    )


def _seeded_ids(n: int, limit: int | None, seed: int) -> Tensor:
    if not limit or limit >= n:
        return torch.arange(n)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(_stream_seed(seed, 3)))
    return perm[: int(limit)].sort().values


def _check(cfg: DictConfig) -> None:
    k, limit, split = cfg.k, cfg.get("limit"), cfg.split
    checks = [
        (isinstance(k, int) and k >= 1, f"k={k}: the importance-weighted estimate needs k >= 1 samples"),
        (split in SPLITS, f"split={split}: use test, val or train"),
        (cfg.checkpoint in CHECKPOINTS, f"checkpoint={cfg.checkpoint}: use best or last"),
        (limit is None or (isinstance(limit, int) and limit >= 0), f"limit={limit}: use null or >= 1"),
        (cfg.memory_mb > 0, f"memory_mb={cfg.memory_mb}: the memory budget must be > 0"),
        (cfg.get("batch_size") is None or cfg.batch_size >= 1, f"batch_size={cfg.batch_size}: null or >= 1"),
        (cfg.get("threads") is None or cfg.threads >= 1, f"threads={cfg.get('threads')}: use null or >= 1"),
        (cfg.progress in ("auto", "rich", "plain"), f"progress={cfg.progress}: use auto, rich or plain"),
    ]
    gaps = _gaps_config(cfg)
    if gaps["enabled"]:
        checks += [
            (gaps["n"] >= 1, f"gaps.n={gaps['n']}: use >= 1 examples"),
            (gaps["k"] is None or gaps["k"] >= 1, f"gaps.k={gaps['k']}: use null or >= 1"),
            (gaps["steps"] >= 0, f"gaps.steps={gaps['steps']}: use >= 0"),
            (gaps["lr"] > 0, f"gaps.lr={gaps['lr']}: must be > 0"),
            (gaps["samples"] >= 1, f"gaps.samples={gaps['samples']}: use >= 1"),
            (gaps["flow_depth"] >= 0, f"gaps.flow_depth={gaps['flow_depth']}: use >= 0"),
        ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def _gaps_config(cfg: DictConfig) -> dict[str, Any]:
    r"""``cfg.gaps`` over the defaults of the packaged ``conf/eval.yaml``; a bare boolean
    (``gaps=true`` given straight to Hydra replaces the group) switches them on or off."""
    defaults = OmegaConf.load(resources.files("vaeflow.conf").joinpath("eval.yaml")).gaps
    gaps = cfg.get("gaps")
    if isinstance(gaps, DictConfig):
        return {**OmegaConf.to_container(defaults), **OmegaConf.to_container(gaps, resolve=True)}
    return {**OmegaConf.to_container(defaults), "enabled": bool(gaps)}


def _table(rows: Sequence[tuple[str, str, str]], header: tuple[str, str, str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    lines = [f"{header[0]:<{widths[0]}}  {header[1]:>{widths[1]}}  {header[2]:>{widths[2]}}"]
    lines.append("-" * len(lines[0]))
    lines += [f"{a:<{widths[0]}}  {b:>{widths[1]}}  {c:>{widths[2]}}" for a, b, c in rows]
    return "\n".join(lines)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _peak_memory_mb(device: torch.device) -> dict[str, float]:
    peak = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        peak["peak_cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return peak


def evaluate(cfg: DictConfig, out_dir: str | Path, *, multirun: bool = False) -> dict[str, Any]:
    r"""Evaluates a trained run (``conf/eval.yaml``) and writes ``eval.json``,
    ``per_example.pt`` and ``tb/`` under ``out_dir``.

    Loads the checkpoint with ``weights_only=True`` and the config saved in it, rebuilds
    the model, and computes the k-sample importance-weighted NLL of every example of the
    split (or of a seeded random subset of ``limit`` examples), the ELBO and KL on the
    same samples and bits/dim; with ``gaps.enabled`` also the inference gaps on a seeded
    subset of ``gaps.n`` of those examples.

    Arguments:
        cfg: the composed config (``conf/eval.yaml``).
        out_dir: this evaluation's directory (``<run>/eval/<time>_<split>_k<k>``).
        multirun: whether this is one job of a sweep (plain progress lines).

    Returns:
        What ``eval.json`` holds.
    """
    wall_start = time.perf_counter()
    out_dir = Path(out_dir)
    _check(cfg)
    ckpt_path, run_dir = resolve_run(cfg.run, str(cfg.checkpoint))
    if out_dir.resolve() == run_dir or (out_dir / "checkpoints").exists():
        raise ConfigError(f"eval output dir {out_dir} is a training run; write evaluations under <run>/eval/")
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    device = resolve_device(str(cfg.device))
    if device.type == "cpu":
        keep_freed_memory()
    mode = progress_mode(str(cfg.progress), multirun, key="progress")
    k, seed = int(cfg.k), int(cfg.seed)

    try:
        trained = load_trained(ckpt_path, dataset_root=cfg.get("dataset_root"), device=device)
    except DataError as e:
        raise DataError(f"{e} (vaeflow eval: point dataset_root=<dir> at the data)") from None
    model, data, train_cfg, dataset_cfg = trained.model, trained.data, trained.config, trained.dataset

    split = data[str(cfg.split)]
    ids = _seeded_ids(len(split), cfg.get("limit"), seed)
    images = split.images[ids]
    if split.dynamic:  # evaluation needs fixed bits: binarize a dynamic split once, seeded
        images = binarize_fixed(images, seed)
    n = images.shape[0]
    dims = math.prod(data.shape)
    max_pairs, per_pair = pairs_per_chunk(model, images[:1], float(cfg.memory_mb))
    examples, samples = plan_chunks(k, n, max_pairs, cfg.get("batch_size"))
    log.info(
        "vaeflow eval: %s (epoch %s), %s %s split: %d examples, k=%d, seed %d; device %s, %d threads; "
        "chunks of %d examples x %d samples (%.0f KiB per pair, budget %s MiB); output %s",
        ckpt_path,
        trained.epoch,
        dataset_cfg.name,
        cfg.split,
        n,
        k,
        seed,
        device,
        torch.get_num_threads(),
        examples,
        samples,
        per_pair / 1024,
        cfg.memory_mb,
        out_dir,
    )

    iw_start = time.perf_counter()
    with TaskProgress(mode, n * k, f"IW-NLL k={k}") as bar:

        def progress(done: int, examples_done: int) -> None:
            rate = done / max(time.perf_counter() - iw_start, 1e-9)
            bar.update(done, f"{examples_done:,}/{n:,} examples  {rate:,.0f} samples/s")

        est = importance_weighted(
            model,
            images,
            k,
            seed=seed,
            ids=ids.tolist(),
            max_pairs=max_pairs,
            batch_size=cfg.get("batch_size"),
            progress=progress,
        )
    iw_time = time.perf_counter() - iw_start

    nll = -est.log_px
    finite = torch.isfinite(nll)
    if not finite.all():
        log.warning(
            "%d of %d examples have a non-finite estimate; they are left out of the means",
            int((~finite).sum()),
            n,
        )
    nll_mean, nll_se = mean_se(nll)
    elbo_mean, elbo_se = mean_se(est.elbo)
    rec_mean, _ = mean_se(est.rec)
    kl_mean, kl_se = mean_se(est.kl)
    gap_mean, gap_se = mean_se(est.log_px - est.elbo)
    bpd = nll_mean / (dims * math.log(2))
    result: dict[str, Any] = {
        "eval/iw_nll": nll_mean,
        "eval/iw_nll_se": nll_se,
        "eval/elbo": elbo_mean,
        "eval/elbo_se": elbo_se,
        "eval/rec": rec_mean,
        "eval/kl": kl_mean,
        "eval/kl_se": kl_se,
        "eval/iw_gain": gap_mean,
        "eval/iw_gain_se": gap_se,
        "eval/bits_per_dim": bpd,
        "eval/mc_se_mean": float(est.mc_se[finite].mean()) if finite.any() else math.nan,
        "eval/mc_se_max": float(est.mc_se[finite].max()) if finite.any() else math.nan,
        "eval/ess_median": float(est.ess.median()),
        "eval/examples_per_s": n / iw_time,
        "eval/samples_per_s": n * k / iw_time,
        "eval/time_s": iw_time,
        "run": str(run_dir),
        "checkpoint": str(ckpt_path),
        "checkpoint_epoch": trained.epoch,
        "checkpoint_step": trained.step,
        "dataset": str(dataset_cfg.name),
        "posterior": str(train_cfg.posterior.name),
        "latent_dim": int(train_cfg.model.latent_dim),
        "split": str(cfg.split),
        "examples": n,
        "nonfinite": int((~finite).sum()),
        "limit": cfg.get("limit"),
        "k": k,
        "seed": seed,
        "dims": dims,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "chunk": {
            "examples": examples,
            "samples": samples,
            "bytes_per_pair": per_pair,
            "max_pairs": max_pairs,
            "memory_mb": cfg.memory_mb,
        },
    }
    rows = [
        (f"IW-NLL, k={k} (nats)", _fmt(nll_mean), _fmt(nll_se)),
        ("-ELBO (nats)", _fmt(-elbo_mean), _fmt(elbo_se)),
        ("  reconstruction -E[log p(x|z)]", _fmt(-rec_mean), ""),
        ("  KL(q(z|x) || p(z))", _fmt(kl_mean), _fmt(kl_se)),
        ("IW gain  log p(x) - ELBO", _fmt(gap_mean), _fmt(gap_se)),
        ("bits/dim (IW-NLL)", _fmt(bpd, 4), _fmt(nll_se / (dims * math.log(2)), 4)),
        ("Monte Carlo se per example (mean)", _fmt(result["eval/mc_se_mean"], 4), ""),
        ("effective samples (median of k)", _fmt(result["eval/ess_median"], 1), ""),
    ]

    gaps_cfg = _gaps_config(cfg)
    if gaps_cfg["enabled"]:
        gaps_start = time.perf_counter()
        gn = min(int(gaps_cfg["n"]), n)
        pick = (
            torch.randperm(n, generator=torch.Generator().manual_seed(_stream_seed(seed, 4)))[:gn]
            .sort()
            .values
        )
        gk = int(gaps_cfg["k"] or k)
        log.info(
            "inference gaps: %d examples, local posteriors (same family; + affine and %d planar steps) "
            "by %d Adam steps (lr %g, %d samples), log p(x) by IW with k=%d",
            gn,
            gaps_cfg["flow_depth"],
            gaps_cfg["steps"],
            gaps_cfg["lr"],
            gaps_cfg["samples"],
            gk,
        )
        with TaskProgress(mode, 3 + 2 * int(gaps_cfg["steps"]), "inference gaps") as bar:
            gaps = inference_gaps(
                model,
                images[pick],
                k=gk,
                seed=seed,
                ids=ids[pick].tolist(),
                steps=int(gaps_cfg["steps"]),
                lr=float(gaps_cfg["lr"]),
                samples=int(gaps_cfg["samples"]),
                flow_depth=int(gaps_cfg["flow_depth"]),
                memory_mb=float(cfg.memory_mb),
                amortized=est.select(pick) if gk == k else None,
                progress=lambda phase, done, total: bar.update(done, phase),
            )
        gaps["time_s"] = time.perf_counter() - gaps_start
        per_example_gaps = gaps.pop("per_example")
        result["gaps"] = gaps
        names = {
            "log_px": f"log p(x) (most precise IW estimate, k={gk})",
            "elbo_amortized": "ELBO, amortized q",
            "elbo_local_same": "ELBO, local q* (same family)",
            "elbo_local_flexible": "ELBO, local q* (flexible)",
            "inference": "inference gap  log p(x) - L[q]",
            "approximation": "approximation gap  log p(x) - L[q*]",
            "amortization": "amortization gap  L[q*] - L[q]",
            "approximation_same": "  same family: approximation",
            "amortization_same": "  same family: amortization",
        }
        gap_rows = [(names[key], _fmt(v["mean"]), _fmt(v["se"])) for key, v in gaps["rows"].items()]
        for key in ("approximation", "amortization", "inference"):
            result[f"eval/gaps/{key}"] = gaps["rows"][key]["mean"]
            result[f"eval/gaps/{key}_se"] = gaps["rows"][key]["se"]
    result.update(_peak_memory_mb(device))
    result["total_time_s"] = time.perf_counter() - wall_start

    torch.save(
        {
            "ids": ids,
            "log_px": est.log_px,
            "elbo": est.elbo,
            "rec": est.rec,
            "kl": est.kl,
            "ess": est.ess,
            "k": k,
            "seed": seed,
            "split": str(cfg.split),
            **(
                {"gaps": {key: torch.tensor(v) for key, v in per_example_gaps.items()}}
                if gaps_cfg["enabled"]
                else {}
            ),
        },
        out_dir / "per_example.pt",
    )
    _write_tensorboard(out_dir, result, int(trained.epoch or 0))
    write_json_atomic(result, out_dir / "eval.json")

    header = f"{dataset_cfg.name} {cfg.split}, {n:,} examples, {ckpt_path.name} (epoch {trained.epoch})"
    log.info("%s\n%s", header, _table(rows, ("", "mean", "se")))
    if gaps_cfg["enabled"]:
        log.info(
            "inference gaps (Cremer et al. 2018), %d examples, nats\n%s",
            result["gaps"]["n"],
            _table(gap_rows, ("", "mean", "se")),
        )
    log.info(
        "%.1f examples/s, %s samples/s; IW %.1fs, total %.1fs; peak memory %.0f MiB; wrote %s",
        result["eval/examples_per_s"],
        f"{result['eval/samples_per_s']:,.0f}",
        iw_time,
        result["total_time_s"],
        result["peak_rss_mb"],
        out_dir / "eval.json",
    )
    return result


def _write_tensorboard(out_dir: Path, result: Mapping[str, Any], step: int) -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(out_dir / "tb"))
    try:
        for key, value in result.items():
            if key.startswith("eval/") and isinstance(value, (int, float)) and math.isfinite(value):
                writer.add_scalar(key, value, step)
    finally:
        writer.close()
