"""The learning-rate schedule: linear warm-up, then cosine to 0 at max_steps (open_clip's and the
reference's shape), built so a resumed run continues at the step it stopped at."""

from __future__ import annotations

import math
from typing import Callable

import torch

from train.config import TrainConfig


def warmup_cosine(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """LR factor at step s: linear 1/w .. 1 over the warm-up, then cosine from 1 to 0 at total_steps."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, start_step: int = 0):
    """Warm-up (warmup_fraction of max_steps, at least 1 step when > 0) then cosine, positioned at start_step."""
    warmup = math.ceil(cfg.warmup_fraction * cfg.max_steps)
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
    return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(warmup, cfg.max_steps),
                                             last_epoch=start_step - 1)
