r"""Sylvester normalizing flow step (van den Berg et al., 2018), amortized as in the paper.

.. math:: z' = z + Q R \tanh(\tilde R Q^\top z + b),

with ``Q [D, M]`` of orthonormal columns, ``R`` and ``R~ [M, M]`` upper-triangular and
``b [M]``, all computed from the encoder features h. By Sylvester's determinant identity

.. math:: \det \frac{\partial z'}{\partial z} = \det\big(I_M + \operatorname{diag}(\tanh'(a))\,
    \tilde R Q^\top Q R\big) = \prod_{i=1}^M \big(1 + \tanh'(a_i)\, \tilde R_{ii} R_{ii}\big),
    \quad a = \tilde R Q^\top z + b .

Invertibility constraint (Theorem 2 of the paper): ``R_ii R~_ii > -1 / ||tanh'||_inf = -1``,
enforced with the paper's ``R_ii = tanh(r_i)``, ``R~_ii = tanh(r~_i)`` (so
``|R_ii R~_ii| < 1`` and every factor above is positive). Each factor is computed as
``t^2 + (1 + R_ii R~_ii)(1 - t^2)`` with ``t = tanh(a_i)`` and
``log(1 + tanh r tanh r~) = log cosh(r + r~) - log cosh r - log cosh r~``, so that the
log-det stays finite where ``R_ii R~_ii`` rounds to -1. The strictly upper parts of
``R`` and ``R~`` are the upper and the (transposed) lower triangle of one amortized
``M x M`` matrix. There is no closed-form inverse.

``posterior.variant`` picks how ``Q`` is made:

- ``orthogonal`` (O-SNF): an amortized ``D x M`` matrix, divided by its Frobenius norm
  (all singular values in (0, 1]) and orthonormalized by the iterative Björck procedure
  ``Q <- Q (I + (I - Q^T Q) / 2)``, run until ``max |Q^T Q - I|`` is at the dtype's
  precision (``eps^{3/4}``; the paper stops at 1e-6, which would leave a log-det error
  of that order, since the determinant above assumes ``Q^T Q = I``) or 100 iterations,
  checked every iteration on the CPU and every 10 on a GPU (a check waits for the device).
  ``M = num_ortho_vecs <= D`` (default ``D // 2``, as the paper's 32 for D = 64).
- ``householder`` (H-SNF): ``Q = H_1 ... H_H`` (``M = D``), a product of
  ``num_householder`` amortized reflections.
- ``triangular`` (T-SNF): ``Q`` is the identity at even steps and the reversal
  permutation at odd steps (``M = D``), so that ``R`` acts upper- and lower-triangularly
  in turn.

References:
    | Sylvester Normalizing Flows for Variational Inference (van den Berg et al., 2018)
    | https://arxiv.org/abs/1803.05649
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaeflow.errors import ConfigError
from vaeflow.posteriors.flows.base import FlowStep, register_flow
from vaeflow.posteriors.flows.householder import reflect

__all__ = ["SylvesterStep", "bjorck_orthonormalize", "log1p_tanh_product", "VARIANTS", "BJORCK_CHECK_EVERY"]

VARIANTS = ("orthogonal", "householder", "triangular")


#: Björck iterations between convergence checks on an accelerator, where a check waits for
#: the device (on the CPU every iteration is checked: a check costs only a reduction there)
BJORCK_CHECK_EVERY = 10


def bjorck_orthonormalize(
    a: Tensor, max_iter: int = 100, tol: float | None = None, check_every: int | None = None
) -> Tensor:
    r"""Orthonormal columns from ``a [..., D, M]`` (``M <= D``, full column rank) by the
    Björck iteration ``Q <- Q (3 I - Q^T Q) / 2``, from ``Q = a / ||a||_F``.

    The iteration converges quadratically to the orthogonal polar factor of ``a`` and stays
    there, so iterating past convergence changes nothing but rounding: convergence is
    checked every ``check_every`` iterations (each check is a host read).

    Arguments:
        a: the matrices.
        max_iter: the most iterations.
        tol: stop once ``max |Q^T Q - I| <= tol`` over the batch
            (default ``eps^{3/4}`` of the dtype); a warning says when ``max_iter``
            iterations were not enough.
        check_every: iterations between checks (default: 1 on the CPU,
            :data:`BJORCK_CHECK_EVERY` elsewhere).

    Example:
        >>> import torch
        >>> q = bjorck_orthonormalize(torch.randn(4, 5, 3, dtype=torch.float64))
        >>> torch.allclose(q.mT @ q, torch.eye(3, dtype=torch.float64))
        True
    """
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    tol = torch.finfo(a.dtype).eps ** 0.75 if tol is None else tol
    every = check_every or (1 if a.device.type == "cpu" else BJORCK_CHECK_EVERY)
    q = a / torch.linalg.matrix_norm(a, keepdim=True)
    for i in range(max_iter):
        gram = q.mT @ q
        if i % every == 0 and (gram - eye).abs().amax() <= tol:
            return q
        q = q @ (1.5 * eye - 0.5 * gram)
    if (q.mT @ q - eye).abs().amax() <= tol:
        return q
    warnings.warn(
        f"Björck orthonormalization did not converge in {max_iter} iterations (a nearly rank-deficient "
        "amortized Q): the Sylvester log-det assumes orthonormal columns",
        RuntimeWarning,
        stacklevel=2,
    )
    return q


def log1p_tanh_product(x: Tensor, y: Tensor) -> Tensor:
    r"""``log(1 + tanh(x) tanh(y)) = log cosh(x + y) - log cosh(x) - log cosh(y)``, finite
    even where ``tanh(x) tanh(y)`` rounds to -1.

    Example:
        >>> import torch
        >>> log1p_tanh_product(torch.tensor(30.0, dtype=torch.float64), torch.tensor(-30.0, dtype=torch.float64))
        tensor(-58.6137, dtype=torch.float64)
    """

    def log_cosh(v: Tensor) -> Tensor:
        v = v.abs()
        return v + F.softplus(-2 * v) - math.log(2)

    return log_cosh(x + y) - log_cosh(x) - log_cosh(y)


@register_flow("sylvester")
class SylvesterStep(FlowStep):
    r"""One Sylvester step ``z + Q R tanh(R~ Q^T z + b)`` with ``Q, R, R~, b`` from h.

    Arguments:
        latent_dim: D.
        feature_dim: F.
        index: position in the stack (alternates the triangular variant's Q).
        variant: ``orthogonal``, ``householder`` or ``triangular``.
        num_ortho_vecs: M, the columns of Q in the orthogonal variant (None: ``D // 2``, the
            paper's ratio of 32 for D = 64; square Q are often ill-conditioned and need
            about three times more Björck iterations).
        num_householder: reflections per step in the householder variant.

    Example:
        >>> import torch
        >>> step = SylvesterStep(3, 4, variant="orthogonal", num_ortho_vecs=2)
        >>> z, ladj = step(torch.randn(2, 5, 3), torch.randn(5, 4))
        >>> z.shape, ladj.shape
        (torch.Size([2, 5, 3]), torch.Size([2, 5]))
    """

    def __init__(
        self,
        latent_dim: int,
        feature_dim: int,
        index: int = 0,
        variant: str = "orthogonal",
        num_ortho_vecs: int | None = None,
        num_householder: int = 8,
    ) -> None:
        super().__init__(latent_dim, feature_dim, index)
        if variant not in VARIANTS:
            raise ConfigError(f"posterior.variant={variant!r}: choose one of {', '.join(VARIANTS)}")
        self.variant = variant
        m = latent_dim
        if variant == "orthogonal":
            m = max(1, latent_dim // 2) if num_ortho_vecs is None else int(num_ortho_vecs)
            if not 1 <= m <= latent_dim:
                raise ConfigError(
                    f"posterior.num_ortho_vecs={num_ortho_vecs}: must be between 1 and latent_dim={latent_dim}"
                )
            self.q = nn.Linear(feature_dim, latent_dim * m)
        elif variant == "householder":
            if int(num_householder) < 1:
                raise ConfigError(f"posterior.num_householder={num_householder}: must be >= 1")
            self.num_householder = int(num_householder)
            self.q = nn.Linear(feature_dim, self.num_householder * latent_dim)
        else:
            perm = torch.eye(latent_dim)
            self.register_buffer("perm", perm if index % 2 == 0 else perm.flip(1), persistent=False)
        self.num_ortho_vecs = m
        self.r_full = nn.Linear(feature_dim, m * m)
        self.r_diag = nn.Linear(feature_dim, 2 * m)
        self.b = nn.Linear(feature_dim, m)
        self.register_buffer("strict_upper", torch.ones(m, m).triu(1).bool(), persistent=False)

    def orthonormal(self, h: Tensor) -> Tensor:
        r"""``Q``: ``[B, D, M]``, or ``[D, D]`` (a permutation) in the triangular variant."""
        d, m = self.latent_dim, self.num_ortho_vecs
        if self.variant == "orthogonal":
            return bjorck_orthonormalize(self.q(h).unflatten(-1, (d, m)))
        if self.variant == "householder":
            vs = self.q(h).unflatten(-1, (self.num_householder, d))
            # Rows of Q H are H applied to the rows of Q (H is symmetric).
            q = torch.eye(d, dtype=h.dtype, device=h.device).expand(*h.shape[:-1], d, d)
            for v in vs.unbind(-2):
                q = reflect(q, v.unsqueeze(-2))
            return q
        return self.perm.to(h.dtype)

    def _raw(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        m = self.num_ortho_vecs
        full = self.r_full(h).unflatten(-1, (m, m))
        x, y = self.r_diag(h).chunk(2, -1)
        zero = full.new_zeros(())
        r = torch.where(self.strict_upper, full, zero) + torch.diag_embed(torch.tanh(x))
        r_tilde = torch.where(self.strict_upper, full.mT, zero) + torch.diag_embed(torch.tanh(y))
        return self.orthonormal(h), r, r_tilde, self.b(h), log1p_tanh_product(x, y)

    def params(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        r"""``Q``, ``R [B, M, M]``, ``R~ [B, M, M]`` and ``b [B, M]``."""
        return self._raw(h)[:4]

    def forward(self, z: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        q, r, r_tilde, b, log_c = self._raw(h)
        qz = (z.unsqueeze(-2) @ q).squeeze(-2)  # Q^T z: [n, B, M]
        t = torch.tanh((r_tilde @ qz.unsqueeze(-1)).squeeze(-1) + b)
        out = z + (q @ (r @ t.unsqueeze(-1))).squeeze(-1)
        t2 = t.square()
        # 1 + tanh'(a) R_ii R~_ii = t^2 + (1 + R_ii R~_ii)(1 - t^2): no cancellation.
        return out, torch.log(t2 + log_c.exp() * (1 - t2)).sum(-1)
