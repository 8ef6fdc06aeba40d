"""train/schedule.py: linear warm-up then cosine to 0, and a scheduler made at a resume step
gives the learning rates the uninterrupted run had from that step on."""

from __future__ import annotations

import math

import pytest
import torch

from train.config import TrainConfig
from train.schedule import make_scheduler, warmup_cosine


def test_warmup_rises_linearly_then_the_cosine_falls_to_zero_at_the_last_step():
    factor = warmup_cosine(warmup_steps=4, total_steps=20)
    assert [factor(s) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert factor(4) == pytest.approx(1.0)
    assert factor(12) == pytest.approx(0.5)  # half-way through the cosine
    assert factor(20) == pytest.approx(0.0, abs=1e-12) and factor(25) == pytest.approx(0.0, abs=1e-12)
    falling = [factor(s) for s in range(4, 21)]
    assert all(a > b for a, b in zip(falling, falling[1:]))


def _rates(cfg: TrainConfig, start_step: int, steps: int) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    scheduler = make_scheduler(optimizer, cfg, start_step=start_step)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_a_scheduler_made_at_a_resume_step_continues_the_uninterrupted_schedule():
    cfg = TrainConfig(lr=1e-3, max_steps=30, warmup_fraction=0.1)
    whole = _rates(cfg, start_step=0, steps=30)
    assert whole[0] == pytest.approx(1e-3 / 3) and max(whole) == pytest.approx(1e-3)
    assert whole[-1] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 26 / 27)))
    assert _rates(cfg, start_step=17, steps=13) == pytest.approx(whole[17:])
