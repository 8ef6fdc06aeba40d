"""The per-sample stages of the caption job, as Ray Data UDFs (see pipeline/caption/job.py).

    read_shard_samples: tar -> one row per sample (mp4 bytes, ids, the shard's sample count)
    decode_sample:      row -> the row with its middle frame (decord), mp4 dropped
    CaptionerActor:     batch of rows -> the rows with `caption` (model loaded once per actor)

Tars are opened read-only with `tarfile`; only `mp4` and `json` members are read (as bytes, the
json with `json.loads`), never unpickled (DESIGN.md section 6). Every row carries its shard's
sample count (`shard_total`), which is how the driver knows a shard is complete.
"""

from __future__ import annotations

import json
import logging
import tarfile
from typing import Any, Iterator

import numpy as np

from pipeline.caption.captioner import Captioner, CaptionerConfig, middle_frame
from pipeline.errors import StageError
from vipstream.schema import (FORBIDDEN_EXTS, MAX_META_JSON_BYTES, META_EXT, VIDEO_EXT, shard_stem,
                              split_member_name)

log = logging.getLogger(__name__)

#: Row kinds flowing through the pipeline. A shard that cannot be read or holds no sample still
#: emits one row, so the driver hears about every shard it scheduled.
SAMPLE, SHARD_ERROR, EMPTY_SHARD = "sample", "shard_error", "empty_shard"


# ---------------------------------------------------------------------------------------------
# Stage 1: read a shard (flat_map, one CPU task per shard)


def sample_row(shard: int, total: int, index: int, kind: str, key: str = "", **extra: Any) -> dict[str, Any]:
    row = {"shard": shard, "shard_total": total, "sample_index": index, "kind": kind, "key": key,
           "video_id": "", "clip_id": "", "mp4": b"", "error_stage": "", "error_reason": ""}
    row.update(extra)
    return row


def group_members(members: list[tarfile.TarInfo]) -> dict[str, dict[str, tarfile.TarInfo]]:
    """key -> {ext: member}, in tar order, keyed by the trainer's rule (schema.split_member_name:
    a member a/b/KEY.mp4 is sample a/b/KEY), so the sidecar row joins the sample it captions."""
    samples: dict[str, dict[str, tarfile.TarInfo]] = {}
    for member in members:
        if not member.isfile():
            continue
        key, ext = split_member_name(member.name)
        if key is None:
            continue
        samples.setdefault(key, {})[ext] = member
    return samples


def read_shard_samples(item: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """{shard, path} -> one row per sample: its mp4 bytes, ids and the shard's sample count.

    Only the `mp4` and `json` members are read; forbidden (pickle) members are never opened.
    """
    shard, path = int(item["shard"]), str(item["path"])
    try:
        handle = tarfile.open(path, mode="r:")
        members = handle.getmembers()
    except (OSError, tarfile.TarError) as exc:
        yield sample_row(shard, 1, -1, SHARD_ERROR, error_stage="read",
                   error_reason=f"expected a readable tar at {path}, found: {type(exc).__name__}: {exc}")
        return
    with handle:
        samples = group_members(members)
        if not samples:
            yield sample_row(shard, 1, -1, EMPTY_SHARD)
            return
        total = len(samples)
        for index, (key, parts) in enumerate(samples.items()):
            forbidden = sorted(set(parts) & FORBIDDEN_EXTS)
            if forbidden:
                log.warning("shard %s sample %s: ignoring forbidden members %s", shard_stem(shard), key, forbidden)
            meta = read_meta(handle, parts.get(META_EXT))
            ids = {"video_id": str(meta.get("video_id") or key.rsplit("_", 1)[0]),
                   "clip_id": str(meta.get("clip_id") or key)}
            if VIDEO_EXT not in parts:
                yield sample_row(shard, total, index, SAMPLE, key, **ids, error_stage="read",
                           error_reason=f"expected a {VIDEO_EXT} member, found {sorted(parts)}")
                continue
            try:
                video = handle.extractfile(parts[VIDEO_EXT]).read()
            except (OSError, tarfile.TarError) as exc:
                yield sample_row(shard, total, index, SAMPLE, key, **ids, error_stage="read",
                           error_reason=f"cannot read the {VIDEO_EXT} member: {type(exc).__name__}: {exc}")
                continue
            yield sample_row(shard, total, index, SAMPLE, key, **ids, mp4=video)


def read_meta(handle: tarfile.TarFile, member: tarfile.TarInfo | None) -> dict[str, Any]:
    """The sample's json member as a dict ({} when absent, unreadable or larger than a clip's json
    can be, schema.MAX_META_JSON_BYTES: ids are only a nicety)."""
    if member is None or member.size > MAX_META_JSON_BYTES:
        return {}
    try:
        meta = json.loads(handle.extractfile(member).read())
    except (OSError, tarfile.TarError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


# ---------------------------------------------------------------------------------------------
# Stage 2: decode the middle frame (in the same CPU task as the read)


def decode_sample(row: dict[str, Any]) -> dict[str, Any]:
    """A read row -> the same row with its middle frame as raw RGB bytes, shape, index and time.

    Frames travel as bytes + (height, width) rather than ndarrays because clips of one batch may
    differ in size, and ragged tensor columns are fragile across Ray Data versions. The mp4
    bytes are dropped here: only the frame moves on to the captioner.
    """
    out = {k: v for k, v in row.items() if k != "mp4"}
    out.update(frame=b"", height=0, width=0, frame_index=-1, frame_time_s=float("nan"))
    if row["kind"] != SAMPLE or row["error_stage"]:
        return out
    try:
        frame, out["frame_index"], out["frame_time_s"] = middle_frame(row["mp4"])
    except StageError as exc:
        out.update(error_stage=exc.stage, error_reason=exc.reason)
        return out
    except Exception as exc:  # a bad clip never costs its neighbours
        out.update(error_stage="decode", error_reason=f"{type(exc).__name__}: {exc}")
        return out
    out.update(frame=frame.tobytes(), height=frame.shape[0], width=frame.shape[1])
    return out


def read_and_decode_shard(item: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """{shard, path} -> one decoded row per sample (the flat_map UDF)."""
    for row in read_shard_samples(item):
        yield decode_sample(row)


# ---------------------------------------------------------------------------------------------
# Stage 3: caption (map_batches with an actor class: the model is loaded once per actor)


class CaptionerActor:
    """Ray Data class UDF: decoded rows -> the same rows with `caption` (frames dropped)."""

    def __init__(self, cfg: CaptionerConfig):
        import torch

        if not torch.cuda.is_available():
            torch.set_num_threads(max(1, int(cfg.num_cpus)))
        self.captioner = Captioner(cfg)
        log.info("captioner actor: %s on %s, %d torch threads", cfg.captioner, self.captioner.device,
                 torch.get_num_threads())

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["key"])
        error_stage = np.array(batch["error_stage"], dtype=object)
        error_reason = np.array(batch["error_reason"], dtype=object)
        todo = [i for i in range(n) if batch["kind"][i] == SAMPLE and not error_stage[i]]
        frames = [np.frombuffer(batch["frame"][i], dtype=np.uint8).reshape(
            int(batch["height"][i]), int(batch["width"][i]), 3) for i in todo]
        captions = np.array([""] * n, dtype=object)
        for i, caption in zip(todo, self._caption(frames, error_stage, error_reason, todo)):
            captions[i] = caption
        out = {k: v for k, v in batch.items() if k not in ("frame", "height", "width")}
        out.update(caption=captions, error_stage=error_stage, error_reason=error_reason)
        return out

    def _caption(self, frames: list[np.ndarray], error_stage: np.ndarray, error_reason: np.ndarray,
                 rows: list[int]) -> list[str]:
        """One batched generate; if it fails, frame by frame, so one bad frame is one error row."""
        try:
            return self.captioner(frames)
        except Exception as exc:
            log.warning("batched generate failed (%s: %s); captioning frame by frame", type(exc).__name__, exc)
        captions = []
        for frame, row in zip(frames, rows):
            try:
                captions.append(self.captioner([frame])[0])
            except Exception as exc:
                error_stage[row], error_reason[row] = "caption", f"generate failed: {type(exc).__name__}: {exc}"
                captions.append("")
        return captions
