"""`Batch`: what the trainer and evaluation receive, and `collate`, which builds it in the worker.

Shapes (B clips, T frames, S the processor's crop size, L = max_text_length):
video [B, T, 3, S, S], frame [B, 3, S, S] (the middle frame F), token ids and masks [B, L] long.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch

from train.data.pixels import PixelSpec, apply_affine_
from train.data.pixels import pixel_affine as affine_of
from train.data.text import Texts, tokenize


@dataclass
class Batch:
    video: torch.Tensor                       # [B, T, 3, S, S] float32 | bfloat16 (| uint8, see pixel_affine)
    frame: torch.Tensor                       # [B, 3, S, S]   the middle frame F of each clip
    keys: list[str]
    has_caption: torch.Tensor                 # [B] bool: a real caption row (not a fallback)
    subtitle_ids: torch.Tensor | None = None  # [B, L] long (text_source subtitle, both)
    subtitle_mask: torch.Tensor | None = None
    caption_ids: torch.Tensor | None = None   # [B, L] long (text_source caption, both)
    caption_mask: torch.Tensor | None = None
    text_ids: torch.Tensor | None = None      # [B, L] long (text_source mixed, annotation)
    text_mask: torch.Tensor | None = None
    text_is_caption: torch.Tensor | None = None  # [B] bool (mixed, annotation)
    captions: list[list[str]] | None = None   # the json's reference sentences (retrieval sets)
    counts: dict[str, int] = dataclasses.field(default_factory=dict)  # skips since this worker's last batch
    pixel_affine: torch.Tensor | None = None  # [2, 3] with pixel_dtype uint8: normalised = pixel * a - b

    def __len__(self) -> int:
        return len(self.keys)

    def _map(self, fn) -> "Batch":
        changes = {f.name: fn(getattr(self, f.name)) for f in dataclasses.fields(self)
                   if isinstance(getattr(self, f.name), torch.Tensor)}
        return dataclasses.replace(self, **changes)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        """A copy with every tensor on `device`; uint8 pixels (pixel_dtype uint8) arrive as
        CLIP-normalised float32, computed there."""
        return self._map(lambda t: t.to(device, non_blocking=non_blocking)).normalized()

    def normalized(self) -> "Batch":
        """This batch with float32 CLIP-normalised pixels (itself when they already are)."""
        if self.pixel_affine is None or self.video.dtype != torch.uint8:
            return self
        return dataclasses.replace(self, video=apply_affine_(self.video.float(), self.pixel_affine),
                                   frame=apply_affine_(self.frame.float(), self.pixel_affine), pixel_affine=None)

    def pin_memory(self) -> "Batch":
        """Called by the DataLoader's pin-memory thread (pin_memory=True)."""
        return self._map(lambda t: t.pin_memory())


@dataclass(frozen=True)
class ClipSample:
    """One decoded, cropped clip on its way to a batch (normalised only in the batch tensor)."""

    key: str
    pixels: torch.Tensor   # [K, S, S, 3] uint8: the distinct decoded frames, cropped
    rows: list[int]        # [T] positions of the chosen frames in `pixels`
    middle_row: int        # position of frame F in `pixels`
    texts: Texts


def _empty(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised tensor; in a DataLoader worker, in shared memory from the start (as
    torch's default_collate does), so handing it to the main process copies nothing."""
    if torch.utils.data.get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    proto = torch.empty(0, dtype=dtype)
    storage = proto._typed_storage()._new_shared(math.prod(shape), device="cpu")
    return proto.new(storage).view(shape)


def stack_pixels(samples: list[ClipSample], spec: PixelSpec, dtype: torch.dtype,
                 channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """video [B, T, 3, S, S] and frame [B, 3, S, S]. Each uint8 frame is normalised straight into
    its place in the batch tensor in one fused op (pixel * a - b, computed in float32), so the
    pixels are written once; a uint8 batch is only copied (Batch.to(device) normalises it).
    `channels_last` (uint8 only): the pixels stay [.., S, S, 3] in memory, the tensors are
    [.., 3, S, S] views of them: a plain copy instead of a transposing one (~1.5 vs ~2.2 ms per
    clip), for the worker -> main hand-over that finish_pixels normalises."""
    num_frames, (size_h, size_w) = len(samples[0].rows), samples[0].pixels.shape[1:3]
    if channels_last and dtype == torch.uint8:  # plain copies; the views have the usual shapes
        video = _empty((len(samples), num_frames, size_h, size_w, 3), dtype)
        frame = _empty((len(samples), size_h, size_w, 3), dtype)
        for i, sample in enumerate(samples):
            for t, row in enumerate(sample.rows):
                video[i, t].copy_(sample.pixels[row])
            frame[i].copy_(sample.pixels[sample.middle_row])
        return video.permute(0, 1, 4, 2, 3), frame.permute(0, 3, 1, 2)
    video = _empty((len(samples), num_frames, 3, size_h, size_w), dtype)
    frame = _empty((len(samples), 3, size_h, size_w), dtype)
    scale, shift = affine_of(spec).view(2, 3, 1, 1)
    neg_shift = -shift

    def put(out: torch.Tensor, pixels: torch.Tensor) -> None:  # [3, S, S] <- [S, S, 3] uint8
        if dtype == torch.uint8:
            out.copy_(pixels.permute(2, 0, 1))
        else:
            torch.addcmul(neg_shift, pixels.permute(2, 0, 1), scale, out=out)

    for i, sample in enumerate(samples):
        for t, row in enumerate(sample.rows):
            put(video[i, t], sample.pixels[row])
        put(frame[i], sample.pixels[sample.middle_row])
    return video, frame


# numpy twins of the float dtypes, for host buffers numpy allocates (bfloat16: raw 16-bit words).
_NUMPY_TWIN = {torch.float32: np.float32, torch.bfloat16: np.int16}


def _host_empty(shape: tuple[int, ...], dtype: torch.dtype, pinned: bool) -> torch.Tensor:
    """A fresh uninitialised host tensor. Not pinned, it comes from numpy, which asks the kernel
    for transparent huge pages on buffers this large (madvise): a float32 batch is ~7 MB per
    clip, and faulting it in 4 KiB pages costs as much as normalising it (measured ~157 vs
    ~95 ms CPU for a 16-clip batch here). Pinned (pin_memory=True), from torch's pinned pool."""
    if pinned:
        return torch.empty(shape, dtype=dtype, pin_memory=True)
    return torch.from_numpy(np.empty(shape, dtype=_NUMPY_TWIN[dtype])).view(dtype)


def finish_pixels(batch: Batch, dtype: torch.dtype) -> Batch:
    """A uint8 batch as the workers hand it over -> the same batch with `dtype` CLIP-normalised
    pixels (pixel * a - b, one fused op per tensor), in tensors allocated for this batch only:
    the trainer may hold a batch across micro-batches, so no output buffer is ever reused.

    Why the main process: a DataLoader worker hands each tensor over in fresh shared memory,
    and on this kind of VM its page faults (4 KiB pages: shmem huge pages are off) cost ~7 ms
    per float32 clip, more than decoding a light clip; uint8 crosses at a quarter of that."""
    if dtype == torch.uint8 or batch.pixel_affine is None or batch.video.dtype != torch.uint8:
        return batch
    scale, shift = batch.pixel_affine.view(2, 3, 1, 1)
    neg_shift = -shift
    pinned = batch.video.is_pinned()

    def convert(pixels: torch.Tensor) -> torch.Tensor:  # [..., 3, S, S] uint8 -> dtype
        out = _host_empty(tuple(pixels.shape), dtype, pinned)  # contiguous, whatever the input strides
        # One image at a time: its ~0.6 MB stays in cache between the read and the write; one
        # op over the whole [B, T, 3, S, S] batch measured ~3.5x slower (4.4 vs 1.2 ms per clip).
        for image, image_out in zip(pixels.reshape(-1, *pixels.shape[-3:]), out.view(-1, *out.shape[-3:])):
            torch.addcmul(neg_shift, image, scale, out=image_out)
        return out

    # One intra-op thread for these small memory-bound ops: in the main process torch uses every
    # core, and on a busy machine each op's thread hand-off cost ~100 ms per clip (measured).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        video, frame = convert(batch.video), convert(batch.frame)
    finally:
        torch.set_num_threads(threads)
    return dataclasses.replace(batch, video=video, frame=frame, pixel_affine=None)


def collate(samples: list[ClipSample], text_source: str, tokenizer, max_length: int, spec: PixelSpec,
            dtype: torch.dtype, counts: dict[str, int], always_captions: bool = False,
            channels_last: bool = False) -> Batch:
    """Stack and normalise the clips, tokenise each text field in one batched call per field.

    `captions` is a list (with [] for clips without) when any clip has reference sentences, or
    always with `always_captions` (eval: evaluation iterates it for every batch)."""
    texts = [s.texts for s in samples]

    def tokens(values: list[str | None]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if any(v is None for v in values):
            return None, None
        return tokenize(tokenizer, values, max_length)

    subtitle_ids, subtitle_mask = tokens([t.subtitle for t in texts]) if text_source in ("subtitle", "both") else (None, None)
    caption_ids, caption_mask = tokens([t.caption for t in texts]) if text_source in ("caption", "both") else (None, None)
    text_ids = text_mask = text_is_caption = None
    if text_source in ("mixed", "annotation"):
        text_ids, text_mask = tokens([t.text for t in texts])
        text_is_caption = torch.tensor([t.text_is_caption for t in texts], dtype=torch.bool)
    captions = [t.captions or [] for t in texts]
    video, frame = stack_pixels(samples, spec, dtype, channels_last)
    return Batch(
        video=video,
        frame=frame,
        keys=[s.key for s in samples],
        has_caption=torch.tensor([t.has_caption for t in texts], dtype=torch.bool),
        subtitle_ids=subtitle_ids, subtitle_mask=subtitle_mask,
        caption_ids=caption_ids, caption_mask=caption_mask,
        text_ids=text_ids, text_mask=text_mask, text_is_caption=text_is_caption,
        captions=captions if always_captions or any(captions) else None,
        counts=dict(counts),
        pixel_affine=affine_of(spec) if dtype == torch.uint8 else None,
    )
