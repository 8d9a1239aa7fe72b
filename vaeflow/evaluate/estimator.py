r"""The importance-weighted estimator of :math:`\log p(x)` (Burda et al., 2016) and its plumbing.

:func:`importance_weighted` draws k samples per example from a :data:`Proposal` (by default
the model's amortized posterior, :func:`amortized_proposal`) and reduces the log-weights
:math:`\log w_i = \log p(x|z_i) + \log p(z_i) - \log q(z_i|x)` with a running ``logsumexp``
in float64 into an :class:`IWEstimate` (IW bound, ELBO, reconstruction, KL and effective
sample size on the same samples). The noise of sample i of example j comes from its own
counter-based stream (:func:`~vaeflow.randomness.example_noise`), so the estimate does not
depend on the chunking, the batch or the device; :func:`bytes_per_pair`,
:func:`pairs_per_chunk` and :func:`plan_chunks` size the chunks from a memory budget, and
:func:`keep_freed_memory` lets glibc reuse their buffers. It is the one estimator of
log p(x): the trainer's validation and test figures, ``vaeflow eval`` and the inference
gaps all call it.

References:
    | Importance Weighted Autoencoders (Burda, Grosse & Salakhutdinov, 2016)
    | https://arxiv.org/abs/1509.00519
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from vaeflow.errors import ConfigError
from vaeflow.model import VAE
from vaeflow.randomness import example_noise

__all__ = [
    "SAMPLE_BLOCK",
    "IWEstimate",
    "Proposal",
    "amortized_proposal",
    "bytes_per_pair",
    "pairs_per_chunk",
    "chunk_budget_mb",
    "plan_chunks",
    "importance_weighted",
    "keep_freed_memory",
]

#: chunks that split an example's k samples are multiples of this many samples where they can be
SAMPLE_BLOCK = 256
#: A chunk's working memory on the CPU unless a budget is given: larger buffers are mapped
#: afresh by the allocator and page-faulted at every chunk (measured on the MLP benchmark
#: model: chunks of 5,000+ pairs cost ~30% more CPU time than chunks of 4,096). Posteriors
#: that sample sequentially (MAF) run many small steps per chunk and gain from larger ones
#: (maf depth 4, 2 threads: 64 MiB 6,700 samples/s, 1 GiB 16,300), hence ``memory_mb``.
CPU_CHUNK_MB = 64
#: A chunk's working memory on a GPU unless a budget is given.
GPU_CHUNK_MB = 512

#: ``proposal(x, start, stop) -> sample``, where ``sample(eps [n, b, D]) -> (z, log q)``
#: draws for the examples ``start:stop`` of the evaluated set, whose images are ``x``.
Proposal = Callable[[Tensor, int, int], Callable[[Tensor], tuple[Tensor, Tensor]]]


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
        z_mean: :math:`\frac1k \sum_i z_i`, the posterior mean of each example ``[N, D]``.
    """

    log_px: Tensor
    elbo: Tensor
    rec: Tensor
    kl: Tensor
    ess: Tensor
    k: int
    z_mean: Tensor

    @property
    def mc_se(self) -> Tensor:
        r"""Delta-method Monte Carlo standard error of each :math:`\log \hat p(x)`,
        :math:`\sqrt{(k / ESS - 1) / k}`.

        It is computed from the same k weights, so it sees heavy-tailed weights (a proposal
        narrower than the posterior in some direction) but not mass the proposal never
        reaches: a proposal sitting on one mode of a two-mode posterior has nearly equal
        weights, hence a tiny standard error, and an estimate that misses the other mode's
        share of :math:`p(x)` entirely. A small ``mc_se`` says that k is large enough *for
        this proposal*, not that the estimate is close to :math:`\log p(x)`.
        """
        return ((self.k / self.ess - 1).clamp(min=0) / self.k).sqrt()

    def unit_variances(self) -> Tensor:
        r"""The variance across examples of each latent's posterior mean, ``[D]``: a unit is
        *active* when it exceeds 0.01 (Burda et al., 2016), i.e. when the encoder uses it."""
        return self.z_mean.var(0) if self.z_mean.shape[0] > 1 else torch.zeros(self.z_mean.shape[1:])

    def select(self, index: Tensor) -> IWEstimate:
        r"""The estimates of the examples ``index``."""
        return IWEstimate(
            self.log_px[index], self.elbo[index], self.rec[index], self.kl[index], self.ess[index], self.k,
            self.z_mean[index],
        )  # fmt: skip


def amortized_proposal(model: VAE) -> Proposal:
    r"""The model's own amortized posterior: the encoder runs once per block of examples,
    then ``posterior.reparameterize(h, eps)`` maps noise to samples."""

    def prepare(x: Tensor, start: int, stop: int) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
        h = model.encoder(x)
        return lambda eps: model.posterior.reparameterize(h, eps)

    return prepare


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


def chunk_budget_mb(memory_mb: float | None, device: torch.device) -> float:
    r"""The working memory of one chunk in MiB: ``memory_mb`` where given, else
    :data:`CPU_CHUNK_MB` on the CPU and :data:`GPU_CHUNK_MB` elsewhere."""
    if memory_mb is not None:
        return float(memory_mb)
    return CPU_CHUNK_MB if device.type == "cpu" else GPU_CHUNK_MB


def pairs_per_chunk(
    model: VAE,
    x: Tensor,
    memory_mb: float | None = None,
    proposal: Proposal | None = None,
    grad: bool = False,
) -> tuple[int, int]:
    r"""``(max pairs per chunk, bytes per pair)`` for a budget of ``memory_mb`` MiB (see
    :func:`chunk_budget_mb`); ``grad``: with autograd, which keeps the activations (counted
    as three times the inference memory)."""
    dtype, device = _model_dtype_device(model)
    per_pair = bytes_per_pair(model, x[:1].to(device, dtype), proposal) * (3 if grad else 1)
    budget = chunk_budget_mb(memory_mb, device)
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
        samples, the chunks are about equal and multiples of :data:`SAMPLE_BLOCK` samples
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
    if samples >= SAMPLE_BLOCK:
        up = -(-samples // SAMPLE_BLOCK) * SAMPLE_BLOCK
        samples = up if up <= most else most - most % SAMPLE_BLOCK
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
    memory_mb: float | None = None,
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
        seed: seeds the noise (see :func:`~vaeflow.randomness.example_noise`).
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
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"k={k}: the importance-weighted estimate needs an integer k >= 1")
    n = images.shape[0]
    ids = torch.arange(n) if ids is None else torch.as_tensor(ids, dtype=torch.int64).cpu()
    if len(ids) != n:
        raise ValueError(f"{len(ids)} ids for {n} examples")
    dtype, device = _model_dtype_device(model)
    if n and (int(ids.min()) < 0 or int(ids.max()) >= 2**31):
        raise ValueError("example ids must be in [0, 2^31)")
    ids = ids.to(device)  # once: the noise of every chunk is made on the device
    proposal = proposal or amortized_proposal(model)
    model.eval()
    if max_pairs is None:
        max_pairs, _ = pairs_per_chunk(model, images[:1], memory_mb, proposal)
    examples, samples = plan_chunks(k, n, max_pairs, batch_size)
    out = torch.empty(5, n, dtype=torch.float64, device=device)  # read back once, at the end
    z_mean = torch.empty(n, model.latent_dim, dtype=torch.float64, device=device)
    done = 0
    for e0 in range(0, n, examples):
        e1 = min(n, e0 + examples)
        x = images[e0:e1].to(device=device, dtype=dtype)
        sample = proposal(x, e0, e1)
        lse = lse2 = None
        sums = torch.zeros(3, e1 - e0, dtype=torch.float64, device=device)
        z_sum = torch.zeros(e1 - e0, model.latent_dim, dtype=torch.float64, device=device)
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
            z_sum += z.double().sum(0)
            done += (s1 - s0) * (e1 - e0)
            if progress is not None:
                progress(done, e0 + (e1 - e0) * (s1 == k))
        out[:, e0:e1] = torch.stack([lse - math.log(k), *(sums / k), 2 * lse - lse2])
        z_mean[e0:e1] = z_sum / k
    log_px, elbo, rec, kl, log_ess = out.cpu()
    return IWEstimate(log_px, elbo, rec, kl, log_ess.exp(), k, z_mean.cpu())
