"""`vipstream caption --import DB`: an ordinary caption sidecar from captions made elsewhere
(the released OFA captions of HD-VILA, `hdvila_ofa_captions_db`), joined on the clip's clip_id.

    finished shards -> shard_clips: the shard's manifest rows (its stats file holds them;
                       OUT/manifest.parquet is their concatenation), or the clip json members
                       of its tar when the stats carry no rows
                    -> caption_rows: clip_id -> db.lookup -> one sidecar row per clip
                       (frame_index = schema.middle_frame_index(num_frames), frame_time_s =
                       frame_index / fps: the frame the trainer pairs with the caption)
                    -> SidecarWriter: captions/{id}/{shard}.parquet + errors.parquet, atomically

Same files, columns and folder as a captioning run (pipeline/caption/job.py), the same
captioner.json identity check, the same caption lock and per-shard resume. No Ray: importing is
a lookup per clip. A clip without a caption (or with an unusable one) is an error row in the
sidecar's errors.parquet; keys of the import that name no clip are counted. The `import` block
of the summary describes the import against every finished shard, so it is the same number
however many runs the import took.
"""

from __future__ import annotations

import logging
import re
import tarfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pipeline.atomic import write_json_atomic
from pipeline.caption.captioner import CaptionerConfig
from pipeline.caption.job import (CAPTION_SUMMARY_FILENAME, check_captioner_dir, list_shards, needs_captions,
                                  resolve_out_dir, summarise_run)
from pipeline.caption.sidecars import SidecarWriter
from pipeline.caption.stages import EMPTY_SHARD, SAMPLE, SHARD_ERROR, group_members, read_meta, sample_row
from pipeline.errors import failure_counts
from pipeline.shards import read_stats
from pipeline.text_db import TextDB, open_text_db
from vipstream.config import ConfigError, config_to_dict
from vipstream.output_lock import CAPTION_LOCK_FILENAME, output_lock
from vipstream.schema import META_EXT, captions_dir, middle_frame_index

log = logging.getLogger(__name__)

#: Stage of the error rows an import writes.
STAGE = "import"
#: Where an imported caption is read from, first found wins (the reference's JSON form: `caption`).
CAPTION_FIELDS = ("caption",)
_QUOTED_CLIP_ID = re.compile(r"""clip_id (?:'[^']*'|"[^"]*")""")


@dataclass(frozen=True)
class ClipRef:
    """What the join needs of one clip of a shard."""

    key: str
    video_id: str
    clip_id: str
    num_frames: Any
    fps: Any


# ---------------------------------------------------------------------------------------------
# A shard's clips


_CLIP_FIELDS = ("key", "clip_id", "num_frames", "fps")


def clips_from_stats(stats: dict[str, Any] | None) -> list[ClipRef] | None:
    """The shard's manifest rows as ClipRefs, or None when its stats carry no usable rows."""
    rows = (stats or {}).get("rows")
    if not isinstance(rows, list) or not all(isinstance(r, dict) and all(f in r for f in _CLIP_FIELDS)
                                             for r in rows):
        return None
    return [ClipRef(str(r["key"]), str(r.get("video_id") or ""), str(r["clip_id"]), r["num_frames"], r["fps"])
            for r in rows]


def clips_from_tar(path: Path) -> list[ClipRef]:
    """The clips of a shard from its tar's json members (no video bytes are read).

    Raises OSError/tarfile.TarError when the tar cannot be read."""
    with tarfile.open(path, mode="r:") as handle:
        clips = []
        for key, parts in group_members(handle.getmembers()).items():
            meta = read_meta(handle, parts.get(META_EXT))
            clips.append(ClipRef(key, str(meta.get("video_id") or ""), str(meta.get("clip_id") or ""),
                                 meta.get("num_frames"), meta.get("fps")))
        return clips


# ---------------------------------------------------------------------------------------------
# The join: a shard's clips -> its sidecar rows


@dataclass
class ImportTally:
    """What the import found over every finished shard (the summary's `import` block)."""

    clips: int = 0
    captions: int = 0
    clips_without_caption: int = 0
    captions_invalid: int = 0
    captions_truncated: int = 0
    clips_failed: int = 0  # no usable num_frames/fps: the paired frame is unknown
    matched_keys: set[str] = field(default_factory=set)

    def as_dict(self, db: TextDB, max_chars: int) -> dict[str, Any]:
        info = db.describe()
        return {**info, "keys_matched": len(self.matched_keys),
                "keys_unmatched": info["keys"] - len(self.matched_keys), "clips": self.clips,
                "clips_with_caption": self.captions, "clips_without_caption": self.clips_without_caption,
                "captions_invalid": self.captions_invalid, "captions_truncated": self.captions_truncated,
                "clips_failed": self.clips_failed, "max_caption_chars": max_chars}


def _paired_frame(clip: ClipRef) -> tuple[int, float]:
    """(frame_index, frame_time_s) of the frame the trainer pairs with the clip's caption: the
    middle frame of its num_frames decoded frames, at fps. ValueError when they are unusable."""
    num_frames, fps = clip.num_frames, clip.fps
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames <= 0:
        raise ValueError(f"the clip's num_frames is {num_frames!r}, expected a positive integer")
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not fps > 0:
        raise ValueError(f"the clip's fps is {fps!r}, expected a positive number")
    index = middle_frame_index(num_frames)
    return index, index / float(fps)


def caption_rows(shard: int, clips: list[ClipRef], db: TextDB, max_chars: int,
                 tally: ImportTally) -> list[dict[str, Any]]:
    """One SidecarWriter row per clip (an EMPTY_SHARD row for a shard without clips): its
    caption and paired frame, or an error row saying why it has none."""
    if not clips:
        return [sample_row(shard, 1, -1, EMPTY_SHARD)]
    rows = []
    for index, clip in enumerate(clips):
        tally.clips += 1
        ids = {"video_id": clip.video_id, "clip_id": clip.clip_id}
        found = db.lookup(clip.clip_id, max_chars) if clip.clip_id else None
        if found is not None:
            tally.matched_keys.add(clip.clip_id)
        try:
            frame_index, frame_time_s = _paired_frame(clip)
        except ValueError as exc:
            tally.clips_failed += 1
            reason = f"{exc}: the frame paired with its caption is unknown"
        else:
            if found is None:
                tally.clips_without_caption += 1
                reason = f"no caption for clip_id {clip.clip_id!r} in {db.name}"
            elif found.text is None:
                tally.captions_invalid += 1
                reason = f"the caption of clip_id {clip.clip_id!r} in {db.name} is unusable: {found.reason}"
            else:
                tally.captions += 1
                tally.captions_truncated += found.truncated
                rows.append(sample_row(shard, len(clips), index, SAMPLE, clip.key, **ids, caption=found.text,
                                 frame_index=frame_index, frame_time_s=frame_time_s))
                continue
        rows.append(sample_row(shard, len(clips), index, SAMPLE, clip.key, **ids, caption="", frame_index=-1,
                         frame_time_s=float("nan"), error_stage=STAGE, error_reason=reason))
    return rows


def shard_rows(out_dir: Path, shard: int, tar: Path, db: TextDB, max_chars: int,
               tally: ImportTally) -> list[dict[str, Any]]:
    """The sidecar rows of one finished shard (a SHARD_ERROR row when its clips cannot be read)."""
    clips = clips_from_stats(read_stats(out_dir, shard))
    if clips is None:
        try:
            clips = clips_from_tar(tar)
        except (OSError, tarfile.TarError) as exc:
            return [sample_row(shard, 1, -1, SHARD_ERROR, error_stage="read",
                         error_reason=f"expected a readable tar at {tar}, found: {type(exc).__name__}: {exc}")]
    return caption_rows(shard, clips, db, max_chars, tally)


# ---------------------------------------------------------------------------------------------
# The job


def run_caption_import(out_dir: str | Path, db_path: str | Path, cfg: CaptionerConfig, *,
                       progress: bool = True) -> dict[str, Any]:
    """Import the captions at `db_path` as the sidecar captions/{cfg.captioner_id}/ of every
    finished shard lacking one (all of them with `cfg.overwrite`); returns the summary also
    saved as captions/{id}/summary.json.

    Raises ConfigError (no captioner_id, a captioner given too, an unreadable DB, missing
    shards, the id taken by other captions) before anything is written.
    """
    started = time.perf_counter()
    if not cfg.captioner_id:
        raise ConfigError("--import needs --captioner-id: the sidecar folder under OUT/captions/ "
                          "(the trainer's captioner_id), e.g. --captioner-id ofa-hdvila")
    if cfg.captioner:
        raise ConfigError(f"give either --import DB or --captioner {cfg.captioner!r}, not both")
    out_dir = resolve_out_dir(out_dir)
    finished, unfinished = list_shards(out_dir)
    with open_text_db(db_path, CAPTION_FIELDS) as db:
        source = str(Path(db_path).resolve())
        record = {"captioner_id": cfg.captioner_id, "model": f"import:{db.name}", "model_path": None,
                  "model_type": "import", "import": {"source": source, "form": db.form},
                  "model_identity": f"import:{source}",
                  "generation": {"import_form": db.form, "max_caption_chars": cfg.max_caption_chars},
                  "config": config_to_dict(cfg), "created": datetime.now(timezone.utc).isoformat()}
        lock = captions_dir(out_dir, cfg.captioner_id) / CAPTION_LOCK_FILENAME
        with output_lock(lock, "vipstream caption --import"):
            return _import_locked(out_dir, db, cfg, record, finished, unfinished, progress, started)


def _import_locked(out_dir: Path, db: TextDB, cfg: CaptionerConfig, record: dict[str, Any],
                   finished: list[tuple[int, Path]], unfinished: list[int], progress: bool,
                   started: float) -> dict[str, Any]:
    from tqdm import tqdm

    captioner_id = cfg.captioner_id
    folder = check_captioner_dir(out_dir, captioner_id, record, cfg.overwrite)
    writer = SidecarWriter(out_dir, captioner_id)
    tally = ImportTally()
    skipped = 0
    job_started = time.perf_counter()
    # Shards already imported are read too (not rewritten): the import block counts them all.
    with tqdm(finished, desc=f"import [{captioner_id}]", unit="shard", disable=not progress) as bar:
        for shard, tar in bar:
            rows = shard_rows(out_dir, shard, tar, db, cfg.max_caption_chars, tally)
            if not cfg.overwrite and not needs_captions(out_dir, captioner_id, shard):
                skipped += 1
                continue
            writer.add(rows)  # all of the shard's rows at once: it is written now
            bar.set_postfix(captions=writer.captions, errors=len(writer.errors))
    job_s = time.perf_counter() - job_started
    summary = summarise_run(out_dir, captioner_id, cfg, finished, unfinished, skipped, writer, job_s,
                         time.perf_counter() - started)
    summary["captioner"] = record["model"]
    # Reasons name their clip_id; tallied without it, they say what went wrong how often.
    summary["errors_by_reason"] = failure_counts(
        {**e, "reason": _QUOTED_CLIP_ID.sub("clip_id", e["reason"])} for e in writer.errors)[1]
    summary["import"] = tally.as_dict(db, cfg.max_caption_chars)
    if tally.clips and not tally.matched_keys:
        summary["import"]["sample_keys"] = db.sample_keys()
    log.info("import %s: %d of %d clips captioned, %d keys of the import name no clip", db.name,
             tally.captions, tally.clips, summary["import"]["keys_unmatched"])
    write_json_atomic(folder / CAPTION_SUMMARY_FILENAME, summary)
    return summary
