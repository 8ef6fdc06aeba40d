"""Deterministic seeds from named parts, the same in every process and every run.

Python's `hash()` of a string changes per process (PYTHONHASHSEED) and webdataset's samplers seed
from pid and time, so neither can give an exactly resumable stream. Every random choice of the
loader draws from a generator seeded by `derive_seed(seed, *parts)` instead: the shard order from
(seed, epoch, rank, worker), the sample buffer from (seed, rank, worker), and the per-clip
choices (train frame rule, mixed text draw, annotation sentence) from (seed, epoch, key), so a clip's
frames and text do not depend on which rank or worker reads it or on what was skipped before it.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any printable parts (ints, strings)."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def python_rng(*parts: object) -> random.Random:
    return random.Random(derive_seed(*parts))


def sample_rng(seed: int, epoch: int, key: str, purpose: str) -> np.random.Generator:
    """The generator of one clip's `purpose` ('frames', 'mixed', 'annotation') in one epoch."""
    return np.random.default_rng(derive_seed(seed, epoch, key, purpose))
