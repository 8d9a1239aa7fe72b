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
whose square over two is its bias *for this proposal*. It is computed from the same
weights, so it sees heavy-tailed weights but not mass the proposal never reaches: a
proposal on one mode of a two-mode posterior has nearly equal weights, a tiny ``mc_se``,
and an estimate that misses the other mode's share of :math:`p(x)` (``log 2`` low for two
equal modes). Where the latent space has 1 or 2 dimensions, :func:`quadrature` gives
:math:`\log p(x)` exactly, and ``vaeflow eval`` reports it beside the estimate.

**Posterior means and active units.** On the same samples, the posterior mean of each
example, :math:`\frac1k \sum_i z_i`; a latent is active when its posterior mean varies
across the data, :math:`\operatorname{Var}_x E_q[z_u] > 0.01` (Burda et al., 2016): the
first thing to look at when a structured posterior does not help is whether the encoder
uses the latents at all.

**Cost.** The encoder runs once per example; only posterior sampling and the decoder
repeat. Samples are processed in chunks of ``examples x samples`` pairs sized from a
memory budget (:func:`plan_chunks`): all k samples of as many examples as fit, or equal
slices of one example's k samples when k is large; on the CPU a chunk stays below
:data:`CPU_CHUNK_MB`, where its buffers are reused from cache and heap, unless
``memory_mb`` gives another budget (sequential samplers such as MAF gain from larger ones).
Chunks are reduced with a running ``logsumexp`` in float64, so peak memory is bounded
whatever k is. The standard normal noise of sample i of example j is a counter-based hash
of ``(seed, j, i)`` (:func:`~vaeflow.randomness.example_noise`), so the estimate of an
example does not depend on the chunk size, the batch size, the device or which other
examples are evaluated; only float rounding does. It is the one estimator: the trainer's
validation and test figures call it too, on the subset that :func:`~vaeflow.data.seeded_subset`
picks, so that the trainer's test figure on N images is ``vaeflow eval limit=N``'s.

**Inference gaps** (Cremer et al., 2018). With :math:`q^*` the best posterior of a family
for one example (optimized locally, not amortized),

.. math:: \log p(x) - \mathcal{L}[q] = \underbrace{\log p(x) - \mathcal{L}[q^*]}_{\text{approximation}}
    + \underbrace{\mathcal{L}[q^*] - \mathcal{L}[q]}_{\text{amortization}} .

:func:`inference_gaps` optimizes, per example and batched over examples, a local
posterior of the same family (the encoder features h as free parameters, started at the
encoder's output) and a more flexible one (the same, followed by a per-example
full-covariance affine step and planar steps, started at the identity), then takes
:math:`\log p(x)` from quadrature where the latent space has 1 or 2 dimensions, and
otherwise as the largest of three high-k IW estimates (with the amortized, the local and
the flexible proposal). Each is a stochastic lower bound, so the largest is the closest
(a proposal that misses a mode only lowers its own), and each is at least the ELBO on its
own samples, so the approximation gap cannot come out negative.

References:
    | Importance Weighted Autoencoders (Burda, Grosse & Salakhutdinov, 2016)
    | https://arxiv.org/abs/1509.00519
    | Inference Suboptimality in Variational Autoencoders (Cremer, Li & Duvenaud, 2018)
    | https://arxiv.org/abs/1801.03558
    | Variational Inference with Normalizing Flows (Rezende & Mohamed, 2015), planar flows
    | https://arxiv.org/abs/1505.05770
"""

from vaeflow.evaluate.command import SPLITS, evaluate
from vaeflow.evaluate.estimator import (
    CPU_CHUNK_MB,
    GPU_CHUNK_MB,
    SAMPLE_BLOCK,
    IWEstimate,
    Proposal,
    amortized_proposal,
    bytes_per_pair,
    chunk_budget_mb,
    importance_weighted,
    keep_freed_memory,
    pairs_per_chunk,
    plan_chunks,
)
from vaeflow.evaluate.gaps import LocalPosterior, fit_local_posterior, inference_gaps
from vaeflow.evaluate.quadrature import MAX_QUADRATURE_DIM, Quadrature, quadrature
from vaeflow.evaluate.runs import TrainedRun, load_trained, resolve_run, run_dir_of

__all__ = [
    "CPU_CHUNK_MB",
    "GPU_CHUNK_MB",
    "SAMPLE_BLOCK",
    "SPLITS",
    "IWEstimate",
    "Proposal",
    "amortized_proposal",
    "bytes_per_pair",
    "pairs_per_chunk",
    "chunk_budget_mb",
    "plan_chunks",
    "importance_weighted",
    "LocalPosterior",
    "MAX_QUADRATURE_DIM",
    "Quadrature",
    "quadrature",
    "fit_local_posterior",
    "inference_gaps",
    "keep_freed_memory",
    "run_dir_of",
    "resolve_run",
    "TrainedRun",
    "load_trained",
    "evaluate",
]
