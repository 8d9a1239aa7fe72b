r"""MADE's one-pass sequential solve against the textbook D-pass fixed-point iteration."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from vaeflow.nets.made import MADE


def fixed_point_solve(made: MADE, u: Tensor, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    r"""``x = mu(x) + exp(s(x)) * u`` by D full passes from ``x = 0``: after pass t the first
    t dimensions in the order are exact (the brute-force reference)."""
    x = torch.zeros_like(u)
    for _ in range(made.latent_dim):
        mu, s = made(x, h)
        x = mu + s.exp() * u
    mu, s = made(x, h)
    return x, mu, s


def affine(u: Tensor):
    return lambda outs, d: outs[0] + outs[1].exp() * u[..., d]


@pytest.mark.parametrize(
    ("dim", "hidden", "order"),
    [
        (5, [16, 16], [0, 1, 2, 3, 4]),
        (5, [16, 16], [3, 0, 4, 1, 2]),
        (6, [4], [5, 4, 3, 2, 1, 0]),  # a layer narrower than D: degrees 0..3 only
        (4, [7, 3, 9], [1, 3, 0, 2]),  # uneven widths, three hidden layers
    ],
)
@pytest.mark.parametrize("context", [3, 0])
def test_solve_matches_the_fixed_point_iteration(dim: int, hidden: list[int], order: list[int], context: int):
    torch.manual_seed(0)
    made = MADE(dim, context, hidden, 2, torch.tensor(order)).double()
    with torch.no_grad():
        for p in made.parameters():
            p.mul_(2.0)  # outputs far from zero, so a wrong dependency shows
    u = torch.randn(2, 5, dim, dtype=torch.float64)
    h = torch.randn(5, context, dtype=torch.float64) if context else None
    x, (mu, s) = made.solve(affine(u), h, u)
    ref_x, ref_mu, ref_s = fixed_point_solve(made, u, h)
    torch.testing.assert_close(x, ref_x, rtol=0, atol=1e-10)
    torch.testing.assert_close(mu, ref_mu, rtol=0, atol=1e-10)
    torch.testing.assert_close(s, ref_s, rtol=0, atol=1e-10)
    # the gradients of the solution, with respect to the weights and the noise
    u.requires_grad_(True)
    w = torch.randn_like(u)
    grads = torch.autograd.grad((made.solve(affine(u), h, u)[0] * w).sum(), [u, *made.parameters()])
    ref = torch.autograd.grad((fixed_point_solve(made, u, h)[0] * w).sum(), [u, *made.parameters()])
    for g, r in zip(grads, ref):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-9)


def test_solve_works_for_any_elementwise_inverse():
    # IAF's inverse: z_d = (y_d - (1 - gate_d) m_d) / gate_d, checked by the forward map.
    torch.manual_seed(1)
    made = MADE(4, 2, [12], 2, torch.tensor([2, 1, 3, 0])).double()
    y, h = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)

    def solve_dim(outs, d):
        gate = torch.sigmoid(outs[1])
        return (y[..., d] - (1 - gate) * outs[0]) / gate

    z, _ = made.solve(solve_dim, h, y)
    m, s = made(z, h)
    gate = torch.sigmoid(s)
    torch.testing.assert_close(gate * z + (1 - gate) * m, y, rtol=0, atol=1e-10)


def test_solve_costs_about_one_pass_of_flops():
    # Count multiply-adds of F.linear: the solve does the FLOPs of ~one MADE pass, not D.
    torch.manual_seed(0)
    dim = 16
    made = MADE(dim, 8, [64, 64], 2, torch.arange(dim))
    u, h = torch.randn(10, dim), torch.randn(10, 8)
    calls: list[int] = []
    real = F.linear

    def counting(x, weight, bias=None):
        calls.append(x.shape[:-1].numel() * weight.shape[0] * weight.shape[1])
        return real(x, weight, bias)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(F, "linear", counting)
        made.solve(affine(u), h, u)
        solve_flops = sum(calls)
        calls.clear()
        made(u, h)
        pass_flops = sum(calls)
    assert solve_flops < 1.0 * pass_flops  # masked zeros are skipped: less than one dense pass
