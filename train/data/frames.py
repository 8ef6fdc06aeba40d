"""Which frames of a clip the model sees, and decoding exactly those with decord.

Frame rules (DESIGN.md section 1), exactly the CLIP-ViP reference's (XPretrain CLIP-ViP/src/
datasets, `get_sample_idx` with sample_rate 0), for a clip of n decoded frames and T = num_frames:
- eval: `np.linspace(0, n-1, T).astype(int)`: truncated, not rounded (rounding picks a frame one
  later at some position for 545 of the lengths n = 1..600 at T = 12);
- train: `np.linspace(start, end, T).astype(int)`, start drawn from [0, J] and end from
  [n-1-J, n-1], J = int(n / (T-1)) (n/11 at T=12), so each epoch sees slightly shifted frames.
Clips shorter than T frames repeat frames (the truncated linspace repeats indices).
The middle frame F is `schema.middle_frame_index(n)`: the frame the captioner saw.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from vipstream.schema import middle_frame_index


def spaced_indices(start: int, end: int, num_frames: int) -> np.ndarray:
    """[T] int64 `np.linspace(start, end, T)` truncated towards zero, as the reference's `.astype(int)`."""
    return np.linspace(start, end, num_frames).astype(np.int64)


def eval_frame_indices(num_decoded: int, num_frames: int) -> np.ndarray:
    """[T] int64 indices `linspace(0, n-1, T)`, truncated."""
    if num_decoded <= 0:
        raise ValueError(f"a clip needs at least one frame, found {num_decoded}")
    return spaced_indices(0, num_decoded - 1, num_frames)


def train_frame_bounds(num_decoded: int, num_frames: int) -> tuple[int, int]:
    """Largest start jitter and smallest end of the train rule: start in [0, J], end in [n-1-J, n-1].

    J = int(n / (T-1)) as in the reference, capped at (n-1)//2 so the start never passes the
    end. The cap binds only for T <= 3 (never at T >= 4), where the reference could draw a
    start after the end (T = 3: reversed frames) or an index outside the clip (T = 2)."""
    jitter = int(num_decoded / max(num_frames - 1, 1))
    jitter = min(jitter, (num_decoded - 1) // 2)  # start never passes the end
    return jitter, num_decoded - 1 - jitter


def train_frame_indices(num_decoded: int, num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """[T] int64 indices `linspace(start, end, T)` truncated, start/end drawn within the bounds."""
    if num_decoded <= 0:
        raise ValueError(f"a clip needs at least one frame, found {num_decoded}")
    max_start, min_end = train_frame_bounds(num_decoded, num_frames)
    start = int(rng.integers(0, max_start + 1))
    end = int(rng.integers(min_end, num_decoded))
    return spaced_indices(start, end, num_frames)


@dataclass(frozen=True)
class DecodedClip:
    """The distinct frames decoded, and where the T chosen ones and F sit among them.

    decoded [K, H, W, 3] uint8 RGB (K <= T+1: sorted distinct indices), rows [T] positions of
    the T chosen frames in `decoded` (repeats allowed), middle_row the position of F. Kept this
    way so the T+1 frames are never copied before they are cropped."""

    decoded: np.ndarray
    rows: np.ndarray
    middle_row: int
    num_decoded: int
    middle_index: int

    @property
    def frames(self) -> np.ndarray:
        """[T, H, W, 3] uint8: the chosen frames, in order (a copy)."""
        return self.decoded[self.rows]

    @property
    def middle(self) -> np.ndarray:
        """[H, W, 3] uint8: frame F."""
        return self.decoded[self.middle_row]


def decode_clip(mp4: bytes, num_frames: int, rng: np.random.Generator | None, *,
                threads: int = 1) -> DecodedClip:
    """Decode only the needed frames of an in-memory mp4 (no temp file): the T chosen by the
    train rule (`rng` given) or the eval rule (`rng` None), plus the middle frame, in one
    `get_batch`. Raises on an undecodable clip (the caller counts it).

    The reader is dropped before returning: decord's memory grows when readers live on after
    `get_batch` (its issues #197/#208).
    """
    import decord

    reader = decord.VideoReader(io.BytesIO(mp4), ctx=decord.cpu(0), num_threads=threads)
    try:
        num_decoded = len(reader)
        if num_decoded <= 0:
            raise ValueError("the clip decodes to 0 frames")
        indices = (eval_frame_indices(num_decoded, num_frames) if rng is None
                   else train_frame_indices(num_decoded, num_frames, rng))
        middle = middle_frame_index(num_decoded)
        wanted = np.unique(np.append(indices, middle))
        decoded = reader.get_batch(wanted.tolist()).asnumpy()  # [K, H, W, 3] uint8
    finally:
        del reader
    rows = np.searchsorted(wanted, indices)
    return DecodedClip(decoded, rows, int(np.searchsorted(wanted, middle)), num_decoded, middle)
