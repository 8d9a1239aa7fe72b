r"""One training step, without a host synchronization, and the guard against non-finite steps.

A step draws the posterior noise from the trainer's own generator, evaluates the
objective's loss and statistics (``torch.compile``-d with ``trainer.compile``),
backpropagates the loss,
measures the gradient norm (clipping it with ``trainer.grad_clip``) and updates the
parameters, unless the loss or the gradient is not finite: then the step is skipped.

Deciding to skip needs no host read when the optimizer can skip on the device: fused Adam
(``optim.fused: true``, the default) takes the flag as ``found_inf``, as with
``torch.amp.GradScaler``, and leaves parameters, moments and step count untouched. Other
optimizers (Adamax) read the flag on the host before stepping, which costs nothing on the
CPU and one synchronization per step on a GPU (logged once). The counts of skipped steps
stay on the device too (:class:`NonFiniteGuard`) and are read at logging intervals, where
``trainer.max_bad_steps`` in a row stops the run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor

from vaeflow.errors import TrainingError
from vaeflow.model import VAE
from vaeflow.objectives import Objective

__all__ = ["StepResult", "TrainStep", "NonFiniteGuard"]

log = logging.getLogger("vaeflow")


@dataclass
class StepResult:
    r"""What one step leaves on the device: the batch sums of the objective's figures
    (``loss`` included), whether the step was taken, the gradient norm and whether the loss
    was finite."""

    stats: dict[str, Tensor]
    taken: Tensor
    grad_norm: Tensor
    loss_finite: Tensor


class TrainStep:
    r"""``step(x, beta)``: one optimizer step on the batch ``x`` with KL weight ``beta``.

    Arguments:
        model: the VAE.
        objective: gives the loss and per-example statistics of a batch and its noise.
        optimizer: over ``model``'s parameters.
        generator: the training noise's generator (on the model's device).
        grad_clip: the largest gradient norm (``None``: no clipping).
        compile: ``torch.compile`` the objective.
    """

    def __init__(
        self,
        model: VAE,
        objective: Objective,
        optimizer: torch.optim.Optimizer,
        generator: torch.Generator,
        grad_clip: float | None = None,
        compile: bool = False,
    ) -> None:
        self.model, self.objective, self.optimizer, self.generator = model, objective, optimizer, generator
        self.grad_clip = grad_clip
        # read once, not at every step (config lookups and module walks cost ~3% of a step)
        self.params = list(model.parameters())
        self.dtype, self.device = self.params[0].dtype, self.params[0].device
        self.samples, self.latent_dim = int(objective.samples), model.latent_dim

        def evaluate(x: Tensor, eps: Tensor, beta: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
            return objective(model, x, eps, beta)

        self.evaluate = torch.compile(evaluate) if compile else evaluate
        self.skips_on_device = bool(getattr(optimizer, "_step_supports_amp_scaling", False))
        if not self.skips_on_device and self.device.type == "cuda":
            log.info(
                "%s cannot skip a non-finite step on the GPU (no fused kernel): each step reads one "
                "flag on the host (optim.fused=true with Adam avoids it)",
                type(optimizer).__name__,
            )

    def __call__(self, x: Tensor, beta: float) -> StepResult:
        eps = torch.randn(
            (self.samples, x.shape[0], self.latent_dim),
            generator=self.generator,
            device=self.device,
            dtype=self.dtype,
        )
        beta_t = torch.tensor(beta, dtype=self.dtype).to(
            self.device, non_blocking=True
        )  # a tensor: no recompiles
        loss, stats = self.evaluate(x, eps, beta_t)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        else:
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in self.params if p.grad is not None])
        loss_finite = torch.isfinite(loss.detach())
        taken = loss_finite & torch.isfinite(grad_norm)
        if self.skips_on_device:
            self.optimizer.found_inf = (~taken).float()  # read by the fused kernel, on the device
            self.optimizer.step()
        elif taken:  # a host read: free on the CPU
            self.optimizer.step()
        stats = {name: value.detach().sum() for name, value in stats.items()}
        stats["loss"] = loss.detach() * x.shape[0]
        return StepResult(stats, taken, grad_norm.detach(), loss_finite)


class NonFiniteGuard:
    r"""Counts skipped steps on the device; :meth:`check` reads the counts (at logging
    intervals), logs the new skips and stops the run after ``max_bad_steps`` in a row.

    Arguments:
        device: where the counters live.
        max_bad_steps: consecutive skipped steps that stop the run.
    """

    def __init__(self, device: torch.device, max_bad_steps: int) -> None:
        self.max_bad_steps = max_bad_steps
        # skipped in all, the current run of skips, the longest run since the last check,
        # skipped for a non-finite loss in all
        self.counts = torch.zeros(4, dtype=torch.int64, device=device)
        self.reported = 0

    def update(self, result: StepResult) -> None:
        skipped, bad_loss = (~result.taken).long(), (~result.loss_finite).long()
        run = (self.counts[1] + 1) * skipped
        self.counts.copy_(
            torch.stack(
                [self.counts[0] + skipped, run, torch.maximum(self.counts[2], run), self.counts[3] + bad_loss]
            )
        )

    @property
    def skipped(self) -> int:
        return int(self.counts[0])

    def check(self, step: int, epoch: int, best: str) -> int:
        r"""Reads the counters; logs the steps skipped since the last check; raises a
        :class:`TrainingError` naming ``best`` (the last good checkpoint) when
        ``max_bad_steps`` steps in a row were skipped. Returns the skipped steps in all."""
        total, _, longest, bad_loss = self.counts.tolist()
        if total > self.reported:
            what = "loss" if bad_loss == total else "gradient" if bad_loss == 0 else "loss or gradient"
            log.warning(
                "step %d: %d step(s) skipped since the last report (non-finite %s; up to %d in a row)",
                step, total - self.reported, what, longest,
            )  # fmt: skip
            self.reported = total
        if longest >= self.max_bad_steps:
            raise TrainingError(
                f"{self.max_bad_steps} non-finite steps in a row at epoch {epoch}; the last good "
                f"checkpoint is {best}; lower optim.lr, set trainer.grad_clip or use objective.warmup_epochs"
            )
        self.counts[2] = 0
        return total

    def state_dict(self) -> dict[str, int]:
        total, run, longest, bad_loss = self.counts.tolist()
        return {"skipped": total, "run": run, "longest": longest, "bad_loss": bad_loss}

    def load_state_dict(self, state: dict[str, int]) -> None:
        keys = ("skipped", "run", "longest", "bad_loss")
        self.counts.copy_(torch.tensor([int(state.get(k, 0)) for k in keys]))
        self.reported = int(state.get("skipped", 0))
