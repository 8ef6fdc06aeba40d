"""The transcribe job's driver side: buffer block rows per video; once every block of a video is
in, stitch its cues and publish `subtitles/{video_id}.vtt` atomically, or record why not.

A video is complete when its last block (`is_last`) and every block before it have arrived;
rows are keyed by (video, block index), so a block re-emitted by a retried Ray task counts once.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from pipeline.errors import ErrorRow
from pipeline.transcribe.config import TranscribeConfig
from pipeline.transcribe.stitch import BlockTranscript, RepeatRules, Segment, drop_repeats, stitch_blocks
from pipeline.transcribe.vtt import format_vtt
from vipstream.atomic import write_text_atomic
from vipstream.schema import ASR_FAILED_FILENAME, asr_subtitle_path

log = logging.getLogger(__name__)

STAGE = "asr"
#: Failures a rerun retries without --retry-failed: they may not happen again (a remote store, a bug).
RETRIED_STAGES = frozenset({"fetch", "internal"})


class FailureLog:
    """ASR/failed.jsonl: one error row per failed video, appended (and fsynced) as it fails, so a
    rerun after a kill knows it too; the last line of a video wins, a torn last line is ignored."""

    def __init__(self, out_dir: Path):
        self.path = out_dir / ASR_FAILED_FILENAME

    def read(self) -> dict[str, dict[str, Any]]:
        failures: dict[str, dict[str, Any]] = {}
        if not self.path.exists():
            return failures
        for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a line torn by a kill mid-write
            if isinstance(row, dict) and row.get("video_id"):
                failures[str(row["video_id"])] = row
        return failures

    def append(self, row: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def rewrite(self, rows: list[dict[str, Any]]) -> None:
        """Keep exactly `rows` (the videos still failed at the end of a run)."""
        write_text_atomic(self.path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def _block(row: dict[str, Any]) -> BlockTranscript:
    start_s = float(row["start_s"])
    segments = tuple(Segment(start_s + float(a), start_s + float(b), str(text))
                     for a, b, text in json.loads(row.get("segments") or "[]"))
    return BlockTranscript(int(row["block_index"]), start_s, start_s + float(row["audio_s"]), segments,
                           row.get("language") or None)


def video_language(blocks: list[BlockTranscript], given: str | None) -> str | None:
    """The language given, else the one detected on most of the video's (non-silent) audio."""
    if given:
        return given
    seconds: Counter[str] = Counter()
    for block in blocks:
        if block.language:
            seconds[block.language] += block.end_s - block.start_s
    return seconds.most_common(1)[0][0] if seconds else None


class TranscriptWriter:
    """Collects the job's rows and writes each video's VTT once all its blocks are in."""

    def __init__(self, out_dir: Path, cfg: TranscribeConfig, language: str | None):
        self.out_dir = out_dir
        self.cfg = cfg
        self.language = language  # the config's, as a code (None: detect)
        self.rules = RepeatRules(cfg.cue_compression_ratio_threshold, cfg.max_ngram_repeats, cfg.drop_repeated_cues)
        self.note = (f"vipstream transcribe: {cfg.asr}" + (f" (revision {cfg.revision})" if cfg.revision else "")
                     + (", language given" if language else ", language detected"))
        self.pending: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
        self.totals: dict[str, int] = {}
        self.done: dict[str, dict[str, Any]] = {}  # video_id -> what its VTT holds
        self.errors: list[dict[str, Any]] = []
        self.failed: set[str] = set()
        self.audio_s = 0.0
        self.nodes: dict[str, set[str]] = {"decode": set(), "asr": set()}  # Ray node ids that did the work
        self.failure_log = FailureLog(out_dir)

    def add(self, rows: list[dict[str, Any]]) -> int:
        """Buffer rows; finish every video they complete. Returns how many videos finished."""
        finished = 0
        for row in rows:
            video_id, index = str(row["video_id"]), int(row["block_index"])
            if video_id in self.done or video_id in self.failed or index in self.pending[video_id]:
                log.warning("video %s: block %d arrived twice (a retried task); kept once", video_id, index)
                continue
            self.pending[video_id][index] = row
            for stage in ("decode", "asr"):
                if row.get(f"{stage}_node"):
                    self.nodes[stage].add(row[f"{stage}_node"])
            if row["is_last"]:
                self.totals[video_id] = index + 1
            if len(self.pending[video_id]) == self.totals.get(video_id):
                self._finish(video_id, [self.pending[video_id][k] for k in range(self.totals[video_id])])
                del self.pending[video_id]
                finished += 1
        return finished

    def incomplete(self) -> dict[str, tuple[int, int | None]]:
        return {v: (len(rows), self.totals.get(v)) for v, rows in self.pending.items() if rows}

    def _fail(self, row: dict[str, Any], stage: str, reason: str) -> None:
        error = ErrorRow(str(row["video_id"]), None, stage, reason, source=str(row["source"]),
                         line=int(row["line"]) or None).as_dict()
        self.errors.append(error)
        self.failed.add(str(row["video_id"]))
        self.failure_log.append(error)
        log.info("video %s: %s: %s", row["video_id"], stage, reason)

    def _finish(self, video_id: str, rows: list[dict[str, Any]]) -> None:
        failed = next((r for r in rows if r["error_stage"]), None)
        if failed is not None:
            self._fail(failed, failed["error_stage"], failed["error_reason"])
            return
        audio_s = float(rows[-1]["start_s"]) + float(rows[-1]["audio_s"])  # blocks overlap: the end
        self.audio_s += audio_s
        blocks = [_block(r) for r in rows]
        stitched = stitch_blocks(blocks)
        cues, dropped = drop_repeats(stitched, self.rules)
        if not cues:
            self._fail(rows[-1], STAGE, self._no_speech_reason(rows, stitched, dropped))
            return
        language = video_language([b for b, r in zip(blocks, rows) if not r["silent"]], self.language)
        path = asr_subtitle_path(self.out_dir, video_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, format_vtt(cues, language, self.note))
        self.done[video_id] = {"cues": len(cues), "audio_s": round(audio_s, 3), "language": language,
                               "cues_dropped_as_repeats": dropped.total}

    def _no_speech_reason(self, rows: list[dict[str, Any]], stitched: list, dropped) -> str:
        silent = sum(bool(r["silent"]) for r in rows)
        if silent == len(rows):
            loudest = max(float(r["level_dbfs"]) for r in rows)
            return (f"no speech: the audio is silent (every block below silence_dbfs={self.cfg.silence_dbfs:g} "
                    f"dBFS; loudest {loudest:.1f} dBFS)")
        if not stitched:
            return (f"no speech: the model found no speech in {len(rows) - silent} non-silent block(s) "
                    f"(windows skipped as no-speech, or empty text)")
        return (f"no speech kept: all {len(stitched)} cues repeat (compression ratio: {dropped.compression}, "
                f"n-gram loops: {dropped.ngram_loop}, repeated cues: {dropped.repeated_cue})")
