"""Non-finite steps: a NaN/inf loss or gradient norm skips the update; too many in a row stop the run.

One bad update (a learning rate too high, a batch of garbage) turns every weight into NaN, and from
then on the run trains nothing while it writes NaN checkpoints and prunes the good ones. So, as fp16
loss scalers do, a step whose loss or global gradient norm is not finite leaves the weights and the
optimizer state as they were: the step still counts (its batches were consumed and the schedule
moves on, so a resume stays exact), it is logged and counted (`nonfinite_steps`). A skipped step
cannot change the weights, so non-finite values that persist over `max_nonfinite_steps` different
batches come from the weights, not from the data: the run stops (exit 1) naming the step and the
last good checkpoint: the newest from before the weights that failed (checkpoint.last_good_checkpoint).

Under DDP every rank must take the same decision (one rank stepping while another skips would
desynchronise the replicas), so the flags are summed over ranks before anyone acts on them.

Logs stay JSON: `json_safe` turns a non-finite float into null and lists the keys it nulled, since
Python's json writes bare `NaN`, which no JSON parser accepts.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from train.distributed import DistEnv, sum_over_ranks
from vipstream.errors import JobError

log = logging.getLogger(__name__)

#: Key a `json_safe` row lists its nulled (non-finite) values under.
NONFINITE_KEY = "nonfinite"


class NonFiniteTrainingError(JobError):
    """Too many consecutive steps had a non-finite loss or gradient norm: the run cannot go on."""


@dataclass(frozen=True)
class StepHealth:
    """What this step's numbers say, agreed by every rank."""

    loss_finite: bool
    grad_finite: bool

    @property
    def finite(self) -> bool:
        return self.loss_finite and self.grad_finite

    def counts_toward_stop(self, loss_scaled: bool) -> bool:
        """Whether this step counts toward max_nonfinite_steps. With an fp16 loss scaler
        (`loss_scaled`) a finite loss whose gradients overflow is the scaler's routine (it lowers
        its scale and skips the step): counted as skipped, never fatal."""
        return not self.finite and (not self.loss_finite or not loss_scaled)


def step_health(env: DistEnv, loss: torch.Tensor, grad_norm: torch.Tensor) -> StepHealth:
    """Whether the loss and the gradient norm are finite on every rank (one all-reduce of 2 flags)."""
    flags = torch.stack([~torch.isfinite(loss.detach().float()).all(),
                         ~torch.isfinite(grad_norm.detach().float().to(loss.device)).all()]).float()
    loss_bad, grad_bad = (sum_over_ranks(env, flags) > 0).tolist()
    return StepHealth(loss_finite=not loss_bad, grad_finite=not grad_bad)


def weights_finite(model: torch.nn.Module) -> bool:
    """Whether every parameter and buffer of `model` is finite (checked before a checkpoint is written)."""
    return all(bool(torch.isfinite(t).all()) for t in (*model.parameters(), *model.buffers())
               if t.is_floating_point())


@dataclass
class NonFiniteGuard:
    """Counts skipped steps and stops the run after `max_consecutive` of them in a row.

    `counts_toward_stop` (StepHealth.counts_toward_stop): an fp16 scaler's overflow steps are
    counted, not fatal.
    """

    max_consecutive: int
    announce: bool = True  # log each skipped step (rank 0; the others count silently)
    total: int = 0  # steps skipped over the whole run (restored on resume)
    streak: int = 0  # consecutive skipped steps that count toward the stop
    streak_start: int | None = None
    skipped_steps: list[int] = field(default_factory=list)  # this session's, for the summary

    def record(self, step: int, health: StepHealth, *, counts_toward_stop: bool = True) -> None:
        """Book step `step` (1-based, after the update was applied or skipped). A step whose loss
        was finite ends a streak, also when an fp16 scaler's overflow skipped its update."""
        if health.finite or not counts_toward_stop:
            self.streak, self.streak_start = 0, None
        if health.finite:
            return
        self.total += 1
        self.skipped_steps.append(step)
        if not counts_toward_stop:  # the fp16 loss scaler's routine: it lowers its scale
            log.debug("step %d: fp16 gradient overflow: update skipped, loss scale lowered", step)
            return
        self.streak += 1
        self.streak_start = self.streak_start or step
        what = " and ".join(name for name, ok in (("loss", health.loss_finite), ("gradient norm", health.grad_finite))
                            if not ok)
        if self.announce:
            log.warning("step %d: non-finite %s: update skipped (%d skipped so far, %d in a row; the run stops at %d)",
                        step, what, self.total, self.streak, self.max_consecutive)

    def stop_if_exhausted(self, step: int, last_good: Callable[[int], Path | None], lr: float) -> None:
        """Raise NonFiniteTrainingError once the streak reaches `max_consecutive`.

        The weights of the step before the streak failed on `max_consecutive` different batches,
        so a checkpoint of that step is no way back: the message names `last_good(that step)`, the
        newest good checkpoint from before it (called only now: it reads the run folder)."""
        if self.streak < self.max_consecutive:
            return
        suspect = (self.streak_start or step) - 1  # its weights gave the first non-finite step
        checkpoint = last_good(suspect)
        way_back = (f"The last good checkpoint is {checkpoint}: continue from it with a lower lr (this step's was "
                    f"{lr:.3g}) or grad_clip_norm, e.g. --init {checkpoint} --output NEW_RUN"
                    if checkpoint is not None else
                    f"No checkpoint from before step {suspect} is left: start again from --init with a lower lr "
                    f"(this step's was {lr:.3g}) or grad_clip_norm")
        raise NonFiniteTrainingError(
            f"training stopped at step {step}: {self.streak} consecutive steps (from step {self.streak_start}) had a "
            f"non-finite loss or gradient norm (max_nonfinite_steps {self.max_consecutive}); their updates were "
            f"skipped, so the weights are those of step {suspect}, which failed on all of those batches. "
            f"{way_back}; if the data is at fault (a batch of garbage), check it first")


def json_safe(row: dict[str, Any]) -> dict[str, Any]:
    """`row` with every non-finite float (nested too) replaced by None; if any was, the row also
    lists their flattened names ("loss", "val/t2v/R@1") under NONFINITE_KEY."""
    nulled: list[str] = []

    def clean(value: Any, name: str) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            nulled.append(name)
            return None
        if isinstance(value, dict):
            return {k: clean(v, f"{name}/{k}" if name else str(k)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v, f"{name}/{i}") for i, v in enumerate(value)]
        return value

    cleaned = clean(row, "")
    if nulled:
        cleaned[NONFINITE_KEY] = sorted(nulled)
    return cleaned
