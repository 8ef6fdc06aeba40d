"""Build one shard: for each of its source videos, probe -> subtitles -> spans -> transcode -> tar.

No Ray here: `pipeline/builder/jobs.py` maps this over shards. The shard is the failure boundary: a
`StageError` (or any unexpected exception) from one video or one clip becomes an error row and
the loop moves on, so a bad file never costs its neighbours.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pipeline.builder.clips import ClipPlanSpec, Span, plan_clips, validate_span
from pipeline.builder.config import PipelineConfig
from pipeline.builder.manifest import VideoEntry
from pipeline.builder.staging import local_copy
from pipeline.builder.subtitle_db import NO_SPANS_REASON, text_from_db
from pipeline.builder.subtitles import Cue, clip_subtitle, load_subtitles
from pipeline.builder.timestamps import parse_timestamp
from pipeline.builder.transcode import ProbeInfo, TranscodeSpec, probe_video, transcode_clip
from pipeline.errors import ErrorRow, StageError
from pipeline.shards import ShardWriter
from pipeline.text_db import ClipText
from vipstream.schema import CLIP_CAPTIONS_FIELD, CLIP_SUBTITLE_SOURCE_FIELD, clip_key, shard_stem
from vipstream.text_bounds import cut_text

log = logging.getLogger(__name__)


@dataclass
class PlannedClip:
    clip_index: int
    clip_id: str
    span: Span


@dataclass
class ShardReport:
    """What one shard produced; serialised as its stats file."""

    shard: int
    videos: int = 0
    videos_failed: int = 0
    clips: int = 0
    clips_failed: int = 0
    clips_without_text: int = 0
    subtitles_cut: int = 0  # clip texts longer than max_subtitle_chars, stored cut
    bytes: int = 0
    video_seconds: float = 0.0
    clip_seconds: float = 0.0
    seconds: float = 0.0
    rows: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    node_id: str | None = None
    asr_clips: dict[str, int] = field(default_factory=dict)  # model -> clips whose text is its ASR output

    def fail(self, row: ErrorRow) -> None:
        self.errors.append(row.as_dict())

    def to_stats(self) -> dict[str, Any]:
        stats = dict(self.__dict__)
        stats["failures"] = dict(Counter(e["stage"] for e in self.errors))
        return stats


def _given_spans(entry: VideoEntry, probe: ProbeInfo, cfg: PipelineConfig,
                 report: ShardReport) -> list[PlannedClip]:
    planned = []
    for index, given in enumerate(entry.clips or ()):
        try:
            try:
                start_s, end_s = parse_timestamp(given.start), parse_timestamp(given.end)
            except ValueError as exc:
                raise StageError("span", f"unreadable span time: {exc}") from None
            span = validate_span(start_s, end_s, probe.duration_s, cfg.span_tolerance_s)
        except StageError as exc:
            report.clips_failed += 1
            report.fail(exc.to_row(video_id=entry.video_id, clip_id=given.clip_id, source=entry.path,
                                   line=entry.line))
            continue
        planned.append(PlannedClip(index, given.clip_id, span))
    return planned


def _plan(entry: VideoEntry, cues: list[Cue], probe: ProbeInfo, cfg: PipelineConfig,
          report: ShardReport) -> list[PlannedClip]:
    if entry.clips is not None:
        return _given_spans(entry, probe, cfg, report)
    if entry.captions is not None:  # a retrieval video without a span: the whole video, one clip
        return [PlannedClip(0, entry.video_id, Span(0.0, probe.duration_s))]
    spans = plan_clips(cues, ClipPlanSpec(cfg.min_clip_s, cfg.max_clip_s), probe.duration_s)
    return [PlannedClip(k, f"{entry.video_id}.{k}", span) for k, span in enumerate(spans)]


def _clip_meta(entry: VideoEntry, clip: PlannedClip, text: str, out) -> dict[str, Any]:
    meta = {
        "clip_id": clip.clip_id, "video_id": entry.video_id,
        "span": [round(clip.span.start_s, 3), round(clip.span.end_s, 3)],
        "subtitle": text, "duration": round(out.duration_s, 3), "fps": out.fps,
        "width": out.width, "height": out.height, "num_frames": out.num_frames,
        "source": entry.path,
    }
    if entry.captions is not None:  # a retrieval set's reference sentences
        meta[CLIP_CAPTIONS_FIELD] = list(entry.captions)
    if entry.subtitle_source is not None:  # the subtitle is speech recognition output (vipstream transcribe)
        meta[CLIP_SUBTITLE_SOURCE_FIELD] = entry.subtitle_source
    return meta


def _build_video(entry: VideoEntry, shard: int, cfg: PipelineConfig, spec: TranscodeSpec,
                 writer: ShardWriter, report: ShardReport, clip_texts: dict[str, ClipText] | None = None) -> None:
    if entry.path is None:
        raise StageError("input", entry.missing_reason or "video file not found")
    if clip_texts is not None and entry.clips is None:
        raise StageError("subtitles", NO_SPANS_REASON)
    # A remote (fsspec URI) source is copied locally for the time of its cuts: ffmpeg reads local files only.
    with local_copy(entry.path, cfg.remote_protocols, cfg.max_source_bytes,
                    cfg.source_fetch_timeout_s) as video_path:
        probe = probe_video(video_path, timeout_s=cfg.probe_timeout_s)
        if entry.captions is not None:  # a retrieval video: its text is its captions, not subtitles
            report.video_seconds += probe.duration_s
            _cut_clips(entry, video_path, probe, [], shard, cfg, spec, writer, report)
            return
        if clip_texts is not None:  # --subtitle-db: texts per clip_id, no subtitle file read
            report.video_seconds += probe.duration_s
            _cut_clips(entry, video_path, probe, [], shard, cfg, spec, writer, report, clip_texts)
            return
        if not entry.subtitles and entry.subtitle_source and entry.subtitle_source.get("error"):
            raise StageError("subtitles", f"no subtitles: speech recognition with {entry.subtitle_source.get('model')} "
                                          f"made none ({entry.subtitle_source['error']})")
        if not entry.subtitles:  # every clip would lack text and be dropped: say so, once, here
            raise StageError("subtitles", "no subtitle file for this video (looked beside it for the same "
                                          "stem + .vtt/.srt/.json3, e.g. ID.en.vtt): its clips would have no text")
        with local_copy(entry.subtitles, cfg.remote_protocols, cfg.max_source_bytes,
                        cfg.source_fetch_timeout_s) as subtitles_path:
            cues = load_subtitles(subtitles_path)
        report.video_seconds += probe.duration_s
        _cut_clips(entry, video_path, probe, cues, shard, cfg, spec, writer, report)


def _cut_clips(entry: VideoEntry, video_path: str, probe: ProbeInfo, cues: list[Cue], shard: int,
               cfg: PipelineConfig, spec: TranscodeSpec, writer: ShardWriter, report: ShardReport,
               clip_texts: dict[str, ClipText] | None = None) -> None:
    """Plan, transcode and write the clips of one probed video; a failed clip is an error row.
    With `clip_texts` (--subtitle-db), a clip's text is its clip_id's, and a clip without one fails."""
    context = {"video_id": entry.video_id, "source": entry.path, "line": entry.line}
    for clip in _plan(entry, cues, probe, cfg, report):
        try:
            text = (clip_subtitle(cues, clip.span.start_s, clip.span.end_s) if clip_texts is None
                    else text_from_db(clip_texts, clip.clip_id))
        except StageError as exc:
            report.clips_failed += 1
            report.fail(exc.to_row(**context, clip_id=clip.clip_id))
            continue
        if not text and entry.captions is None:
            report.clips_without_text += 1
            continue
        if len(text) > cfg.max_subtitle_chars:
            text = cut_text(text, cfg.max_subtitle_chars)
            report.subtitles_cut += 1
        try:
            out = transcode_clip(video_path, clip.span.start_s, clip.span.end_s, spec, probe)
        except StageError as exc:
            report.clips_failed += 1
            report.fail(exc.to_row(**context, clip_id=clip.clip_id))
            continue
        except Exception as exc:  # e.g. OSError from the temp dir: costs this clip, not the video
            log.exception("unexpected failure on clip %s", clip.clip_id)
            report.clips_failed += 1
            report.fail(ErrorRow(entry.video_id, clip.clip_id, "internal", f"{type(exc).__name__}: {exc}",
                                 source=entry.path, line=entry.line))
            continue
        key = clip_key(entry.video_id, clip.clip_index)
        meta = _clip_meta(entry, clip, text, out)
        writer.write(key, out.data, meta)
        report.clips += 1
        if entry.subtitle_source is not None:
            model = str(entry.subtitle_source.get("model"))
            report.asr_clips[model] = report.asr_clips.get(model, 0) + 1
        report.bytes += len(out.data)
        report.clip_seconds += out.duration_s
        report.rows.append({
            "key": key, "shard": shard_stem(shard), "video_id": entry.video_id,
            "clip_id": clip.clip_id, "clip_index": clip.clip_index,
            "start_s": meta["span"][0], "end_s": meta["span"][1], "subtitle": text,
            "duration": meta["duration"], "fps": out.fps, "width": out.width, "height": out.height,
            "num_frames": out.num_frames, "bytes": len(out.data),
        })


def build_shard(entries: list[VideoEntry], shard: int, out_dir: str, cfg: PipelineConfig,
                node_id: str | None = None, clip_texts: dict[str, ClipText] | None = None) -> dict[str, Any]:
    """Write shard `shard` from `entries`; returns its stats (also committed beside the tar).

    clip_texts: the clips' texts by clip_id (--subtitle-db, pipeline/builder/subtitle_db.py),
    used instead of subtitle files."""
    started = time.perf_counter()
    report = ShardReport(shard=shard, node_id=node_id)
    spec = TranscodeSpec.from_config(cfg)
    with ShardWriter(out_dir, shard) as writer:
        for entry in entries:
            report.videos += 1
            clips_before, failed_before = report.clips, report.clips_failed
            try:
                _build_video(entry, shard, cfg, spec, writer, report, clip_texts)
            except StageError as exc:
                report.videos_failed += 1
                report.fail(exc.to_row(video_id=entry.video_id, source=entry.path, line=entry.line))
            except Exception as exc:  # a bug or an unforeseen input: record it, keep the neighbours
                log.exception("unexpected failure on video %s", entry.video_id)
                report.videos_failed += 1
                report.fail(ErrorRow(entry.video_id, None, "internal", f"{type(exc).__name__}: {exc}",
                                     source=entry.path, line=entry.line))
            else:
                if report.clips == clips_before and report.clips_failed > failed_before:
                    report.videos_failed += 1  # every clip of it failed
        report.seconds = round(time.perf_counter() - started, 3)
        stats = report.to_stats()
        writer.commit(stats)
    return stats
