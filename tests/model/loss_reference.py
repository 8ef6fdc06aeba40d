"""A direct, loop-based OCL reference (one row, one softmax at a time), for the loss tests."""

from __future__ import annotations

import math

import torch


def _row_ce(query: torch.Tensor, candidates: list[torch.Tensor], positive: int, scale: float) -> torch.Tensor:
    """-log softmax(scale * <query, candidate>)[positive] over a list of candidate vectors."""
    logits = torch.stack([scale * torch.dot(query, candidate) for candidate in candidates])
    return -(logits[positive] - torch.logsumexp(logits, dim=0))


def ce(queries: torch.Tensor, keys: torch.Tensor, scale: float) -> torch.Tensor:
    """Mean over rows i of CE(query_i over all keys, positive key_i)."""
    rows = [_row_ce(queries[i], list(keys), i, scale) for i in range(len(queries))]
    return torch.stack(rows).mean()


def ce_joint(video: torch.Tensor, positives: torch.Tensor, others: torch.Tensor, scale: float) -> torch.Tensor:
    """Video i over all B positive-source texts + the other source's texts of clips j != i."""
    rows = []
    for i in range(len(video)):
        candidates = list(positives) + [others[j] for j in range(len(others)) if j != i]
        rows.append(_row_ce(video[i], candidates, i, scale))
    return torch.stack(rows).mean()


def reference_ocl(video, subtitle, caption, frame, scale: float, variant: str) -> torch.Tensor:
    """The variants of model/loss.py, written term by term."""
    parts = set(("joint+fc" if variant == "ocl" else variant).split("+"))
    total = torch.zeros((), dtype=video.dtype)
    if "vs" in parts:
        total = total + ce(subtitle, video, scale) + ce(video, subtitle, scale)
    if "vc" in parts:
        total = total + ce(caption, video, scale) + ce(video, caption, scale)
    if "joint" in parts:
        total = total + ce(subtitle, video, scale) + ce(caption, video, scale)
        total = total + ce_joint(video, subtitle, caption, scale) + ce_joint(video, caption, subtitle, scale)
    if "fc" in parts:
        total = total + ce(frame, caption, scale) + ce(caption, frame, scale)
    return total


def unit_features(batch: int, dim: int, seed: int, dtype=torch.float64) -> list[torch.Tensor]:
    """Four `[batch, dim]` L2-normalised feature sets: video, subtitle, caption, frame."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.nn.functional.normalize(torch.randn(batch, dim, generator=generator, dtype=dtype), dim=-1)
            for _ in range(4)]


VARIANTS = ["vs", "vc", "vs+vc", "joint", "vs+fc", "vc+fc", "vs+vc+fc", "joint+fc", "ocl"]
SCALE = math.e ** 2.5
