"""Mixed precision: which one a run uses on its device, and the autocast context of its forward passes."""

from __future__ import annotations

import contextlib
from typing import Callable

import torch


def resolve_precision(precision: str, device: torch.device) -> str:
    """"auto" -> bf16 on CUDA, fp32 elsewhere (DESIGN.md: mixed precision on GPUs)."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def autocast_factory(precision: str, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    if precision == "fp32":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return lambda: torch.autocast(device.type, dtype=dtype)
