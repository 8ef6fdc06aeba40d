"""`vipstream transcribe` as a Ray Data job: a corpus -> WebVTT subtitles for every video that
lacks them, and a manifest `vipstream build` reads; resumable per video.

    videos without subtitles -> decode_video (flat_map, one CPU task per video: ffprobe, ffmpeg
                                 to 16 kHz mono in blocks, log-mel features per block)
                             -> AsrActor     (map_batches, actor pool: Whisper loaded once per
                                 actor, blocks of several videos per generate call)
                             -> driver: TranscriptWriter stitches each video whose blocks are all
                                 in and publishes ASR/subtitles/{id}.vtt (tmp + os.replace)

Resumable: a video is done when its .vtt exists, or when it failed (ASR/failed.jsonl, appended
as each video fails: no audio stream, no speech, undecodable...; `retry_failed` redoes those,
and failures to fetch a remote copy or internal errors are always retried). A rerun (after a
kill, a crash, or with more videos) transcribes only the others and rewrites the run-level files
(manifest.jsonl, errors.parquet, summary.json) from the whole input, so they always describe
every video. One run per ASR folder (its lock, as build and caption hold theirs).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline.atomic import remove_temporaries, write_json_atomic, write_parquet_atomic
from pipeline.builder.manifest import ManifestReadResult, VideoEntry, read_manifest
from pipeline.builder.staging import uri_protocol
from pipeline.errors import ERROR_TABLE_SCHEMA, ErrorRow, failure_counts
from pipeline.hf_models import load_error_in
from pipeline.transcribe.asr import AsrLoadError, check_asr_model, language_code
from pipeline.transcribe.config import TranscribeConfig
from pipeline.transcribe.stages import AsrActor, decode_video
from pipeline.transcribe.vtt import read_vtt_language
from pipeline.transcribe.writer import RETRIED_STAGES, FailureLog, TranscriptWriter
from vipstream.atomic import write_text_atomic
from vipstream.config import ConfigError, config_to_dict
from vipstream.errors import JobError
from vipstream.output_lock import TRANSCRIBE_LOCK_FILENAME, output_lock
from vipstream.schema import (ASR_MANIFEST_FILENAME, ASR_RECORD_FILENAME, ASR_SUBTITLES_DIRNAME,
                              CLIP_SUBTITLE_SOURCE_FIELD, ERRORS_FILENAME, SUMMARY_FILENAME, asr_subtitle_path)

log = logging.getLogger(__name__)

#: What must match for a rerun to add to an ASR folder: same model, same settings.
_IDENTITY_KEYS = ("model_identity", "revision", "generation")


# ---------------------------------------------------------------------------------------------
# The ASR folder


def _check_record(out_dir: Path, record: dict[str, Any], overwrite: bool) -> None:
    """Refuse to mix two models (or two settings) in one folder; write asr.json.

    With `overwrite`, the VTTs of the previous run go first (then the new asr.json), so a killed
    overwrite run never leaves a folder mixing two models under one asr.json."""
    path = out_dir / ASR_RECORD_FILENAME
    previous = json.loads(path.read_text()) if path.exists() else None
    same = previous is not None and {k: previous.get(k) for k in _IDENTITY_KEYS} == {k: record[k] for k in _IDENTITY_KEYS}
    if previous is not None and not same and not overwrite:
        raise ConfigError(f"{out_dir} holds transcripts of {previous.get('model')!r} with {previous.get('generation')}, "
                          f"not {record['model']!r} with {record['generation']}; use another --output or pass "
                          f"--overwrite to transcribe every video again")
    if overwrite:
        for vtt in (out_dir / ASR_SUBTITLES_DIRNAME).glob("*.vtt"):
            vtt.unlink()
        FailureLog(out_dir).path.unlink(missing_ok=True)
    if not same or overwrite:
        write_json_atomic(path, record)


def _subtitle_source(record: dict[str, Any], vtt: Path) -> dict[str, Any]:
    return {"kind": "asr", "model": record["model"], "revision": record.get("revision"),
            "language": read_vtt_language(vtt)}


def _absolute(path: str) -> str:
    """A local path as an absolute one (the manifest lives in ASR/, not where the input was read
    from, and its relative paths resolve against its own folder); URIs as they are."""
    return path if uri_protocol(path) is not None else str(Path(path).absolute())


def manifest_rows(entries: list[VideoEntry], wanted: set[str], out_dir: Path, record: dict[str, Any],
                  failures: dict[str, str]) -> list[dict[str, Any]]:
    """The input's videos as vipstream manifest rows: `subtitles` pointing at the new VTT (relative
    to the ASR folder) where one was made, the subtitles they came with otherwise; spans kept. A
    video left without either keeps its row, with the reason in its `subtitle_source`, so the
    build's error table says why it has no clips."""
    rows = []
    for entry in entries:
        if entry.path is None:
            continue  # not found: an error row, and nothing a build could read
        row: dict[str, Any] = {"video_id": entry.video_id, "path": _absolute(entry.path)}
        vtt = asr_subtitle_path(out_dir, entry.video_id)
        if entry.video_id in wanted and vtt.exists():
            row["subtitles"] = str(vtt.relative_to(out_dir))
            row[CLIP_SUBTITLE_SOURCE_FIELD] = _subtitle_source(record, vtt)
        elif entry.subtitles:  # left alone, or (with --all) its transcription failed
            row["subtitles"] = _absolute(entry.subtitles)
        elif entry.video_id in wanted:
            row["subtitles"] = None
            row[CLIP_SUBTITLE_SOURCE_FIELD] = {"kind": "asr", "model": record["model"],
                                               "error": failures.get(entry.video_id, "not transcribed")}
        if entry.clips is not None:
            row["clips"] = [{"clip_id": c.clip_id, "span": [c.start, c.end]} for c in entry.clips]
        rows.append(row)
    return rows


def _write_manifest(path: Path, rows: list[dict[str, Any]]) -> None:
    write_text_atomic(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


# ---------------------------------------------------------------------------------------------
# Ray Data


def _set_data_context(row_bytes: int) -> dict[str, Any]:
    """No Ray Data bars (the driver's own counts videos); output blocks of about two block rows,
    so a decode task hands each block on as soon as it is made instead of collecting 128 MB.
    With Ray's streaming-generator buffer (2 blocks) a decode task then runs only a few audio
    blocks ahead of the model, however long its video."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    saved = {"enable_progress_bars": ctx.enable_progress_bars, "target_max_block_size": ctx.target_max_block_size}
    ctx.enable_progress_bars = False
    ctx.target_max_block_size = max(2 * row_bytes, 1024 * 1024)
    return saved


def _restore_data_context(saved: dict[str, Any]) -> None:
    from ray.data import DataContext

    ctx = DataContext.get_current()
    for key, value in saved.items():
        setattr(ctx, key, value)


def build_dataset(pending: list[VideoEntry], cfg: TranscribeConfig):
    """The Ray Data pipeline, top to bottom (see the module docstring)."""
    import ray

    # Absolute paths: a worker on another node, or started elsewhere, does not share our cwd.
    items = [{"video_id": e.video_id, "path": _absolute(e.path), "line": e.line or 0} for e in pending]
    return (ray.data.from_items(items, override_num_blocks=len(items))
            .flat_map(decode_video, fn_kwargs={"cfg": cfg}, num_cpus=cfg.decode_cpus)
            .map_batches(AsrActor, fn_constructor_kwargs={"cfg": cfg}, batch_size=cfg.batch_size,
                         batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=cfg.concurrency),
                         num_gpus=cfg.num_gpus, num_cpus=cfg.num_cpus))


def _check_resources(cfg: TranscribeConfig) -> None:
    """ASR actors hold their CPUs (and GPUs) for the whole job; if they took every CPU no decode
    task could run, and actors asking for GPUs the cluster lacks never start: the job would wait
    forever. Say so instead."""
    import ray

    resources = ray.cluster_resources()
    cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    needed = cfg.concurrency * cfg.num_cpus + cfg.decode_cpus
    if needed > cpus:
        raise ConfigError(f"{cfg.concurrency} ASR actors x {cfg.num_cpus} CPUs + {cfg.decode_cpus} CPU for "
                          f"decoding need {needed:g} CPUs, the Ray cluster has {cpus:g}; lower concurrency or num_cpus")
    if cfg.concurrency * cfg.num_gpus > gpus:
        raise ConfigError(f"{cfg.concurrency} ASR actors x {cfg.num_gpus} GPUs need {cfg.concurrency * cfg.num_gpus:g} "
                          f"GPUs, the Ray cluster has {gpus:g}; lower concurrency or num_gpus (0: CPU)")


def _source_bytes(entry: VideoEntry) -> int:
    try:
        return os.stat(entry.path).st_size if entry.path else 0
    except OSError:
        return 0


def _run(pending: list[VideoEntry], cfg: TranscribeConfig, writer: TranscriptWriter, row_bytes: int,
         progress: bool) -> float:
    """Stream the pending videos through the dataset into `writer`; returns the job's seconds."""
    from tqdm import tqdm

    _check_resources(cfg)
    saved = _set_data_context(row_bytes)
    started = time.perf_counter()
    try:
        # Largest files first: the run's tail is then short videos, not one long one.
        dataset = build_dataset(sorted(pending, key=lambda e: -_source_bytes(e)), cfg)
        with tqdm(total=len(pending), desc=f"transcribe [{Path(str(cfg.asr)).name}]", unit="video",
                  disable=not progress, smoothing=0.1) as bar:
            for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
                bar.update(writer.add(batch.to_pylist()))
                elapsed = max(time.perf_counter() - started, 1e-9)
                bar.set_postfix(audio_h=f"{writer.audio_s / 3600:.2f}", x_realtime=f"{writer.audio_s / elapsed:.1f}",
                                failed=len(writer.failed))
    except Exception as exc:
        load_error = load_error_in(exc, AsrLoadError, r"cannot load ASR model .*")
        if load_error is not None:
            raise AsrLoadError(load_error) from None
        raise
    finally:
        _restore_data_context(saved)
    return time.perf_counter() - started


# ---------------------------------------------------------------------------------------------
# The job


def plan_pending(wanted: list[VideoEntry], out_dir: Path, failed_before: dict[str, dict[str, Any]],
                 retry_failed: bool) -> tuple[list[VideoEntry], dict[str, dict[str, Any]]]:
    """(videos to transcribe, {video: its earlier failure} for the failed ones skipped).

    Done: a .vtt exists. Skipped: an earlier run recorded a failure that would recur (not a
    fetch or internal one), unless `retry_failed`. The rest is pending."""
    pending, kept = [], {}
    for entry in wanted:
        if asr_subtitle_path(out_dir, entry.video_id).exists():
            continue
        failure = failed_before.get(entry.video_id)
        if failure is not None and not retry_failed and failure.get("stage") not in RETRIED_STAGES:
            kept[entry.video_id] = failure
        else:
            pending.append(entry)
    return pending, kept


def run_transcribe_job(input_path: str | Path, out_dir: str | Path, cfg: TranscribeConfig, *,
                       video_root: str | Path | None = None, ray_address: str | None = None,
                       progress: bool = True) -> dict[str, Any]:
    """Transcribe every video of the corpus at `input_path` that lacks subtitles (all of them with
    `cfg.all`) and has no VTT in `out_dir` yet (with `cfg.overwrite`: every one); returns the
    summary also saved as summary.json.

    Raises ConfigError (bad input, a folder of another model) or AsrLoadError (the model cannot
    be loaded) before any Ray work starts; OutputLockedError if another run holds `out_dir`.
    """
    import transformers

    started = time.perf_counter()
    out_dir = Path(out_dir)
    try:
        listing = read_manifest(input_path, video_root)
    except FileNotFoundError as exc:
        raise ConfigError(str(exc)) from None
    model_record = check_asr_model(cfg)
    record = {**model_record, "model_identity": model_record["model_path"] or model_record["model"],
              "generation": cfg.generation_settings(), "config": config_to_dict(cfg),
              "transformers_version": transformers.__version__,
              "created": datetime.now(timezone.utc).isoformat()}
    (out_dir / ASR_SUBTITLES_DIRNAME).mkdir(parents=True, exist_ok=True)
    with output_lock(out_dir / TRANSCRIBE_LOCK_FILENAME, "vipstream transcribe"):
        return _transcribe_locked(input_path, out_dir, cfg, listing, record, ray_address, progress, started)


def _transcribe_locked(input_path: str | Path, out_dir: Path, cfg: TranscribeConfig, listing: ManifestReadResult,
                       record: dict[str, Any], ray_address: str | None, progress: bool,
                       started: float) -> dict[str, Any]:
    from pipeline.ray_session import ray_session

    _check_record(out_dir, record, cfg.overwrite)
    removed = remove_temporaries(out_dir, out_dir / ASR_SUBTITLES_DIRNAME)
    if removed:
        log.info("removed %d temporaries of an interrupted run", removed)
    missing = [e for e in listing.entries if e.path is None]
    wanted = [e for e in listing.entries if e.path is not None and (cfg.all or not e.subtitles)]
    pending, kept_failures = plan_pending(wanted, out_dir, FailureLog(out_dir).read(), cfg.retry_failed)
    log.info("%d videos (%s form): %d to transcribe, %d done before, %d failed before (skipped; retry_failed "
             "redoes them), %d with subtitles left alone, %d not found", len(listing.entries), listing.form,
             len(pending), len(wanted) - len(pending) - len(kept_failures), len(kept_failures),
             len(listing.entries) - len(wanted) - len(missing), len(missing))
    writer = TranscriptWriter(out_dir, cfg, language_code(cfg.language) if cfg.language else None)
    job_s = 0.0
    if pending:
        row_bytes = int(record["num_mel_bins"] * cfg.block_s * 100 * 4)
        with ray_session(ray_address, num_cpus=cfg.ray_num_cpus or None):
            job_s = _run(pending, cfg, writer, row_bytes, progress)
        if writer.incomplete():
            raise JobError(f"videos ended incomplete (blocks received, expected): {writer.incomplete()}; the "
                           f"finished ones are kept: rerun to finish these")
    order = {e.video_id: i for i, e in enumerate(wanted)}  # input order, whatever finished first
    failures = sorted(list(kept_failures.values()) + writer.errors, key=lambda e: order.get(e["video_id"], -1))
    writer.failure_log.rewrite(failures)
    errors = ([e.as_dict() for e in listing.errors]
              + [ErrorRow(e.video_id, None, "input", e.missing_reason or "video file not found",
                          source=str(input_path), line=e.line).as_dict() for e in missing]
              + failures)
    write_parquet_atomic(pa.Table.from_pylist(errors, schema=ERROR_TABLE_SCHEMA), out_dir / ERRORS_FILENAME)
    wanted_ids = {e.video_id for e in wanted}
    reasons = {e["video_id"]: f"{e['stage']}: {e['reason']}" for e in failures}
    _write_manifest(out_dir / ASR_MANIFEST_FILENAME,
                    manifest_rows(listing.entries, wanted_ids, out_dir, record, reasons))
    summary = _summarise(out_dir, input_path, cfg, listing, wanted, pending, missing, kept_failures, writer, errors,
                         job_s, time.perf_counter() - started)
    write_json_atomic(out_dir / SUMMARY_FILENAME, summary)
    return summary


def _summarise(out_dir: Path, input_path: str | Path, cfg: TranscribeConfig, listing: ManifestReadResult,
               wanted: list, pending: list, missing: list, kept_failures: dict, writer: TranscriptWriter,
               errors: list, job_s: float, wall_s: float) -> dict[str, Any]:
    by_stage, by_reason = failure_counts(errors)
    with_vtt = sum(asr_subtitle_path(out_dir, e.video_id).exists() for e in wanted)
    return {
        "output": str(out_dir),
        "input": str(input_path),
        "model": cfg.asr,
        "manifest": str(out_dir / ASR_MANIFEST_FILENAME),
        "videos": len(listing.entries),
        "videos_with_subtitles_left_alone": len(listing.entries) - len(wanted) - len(missing),
        "videos_to_transcribe": len(wanted),
        "videos_with_asr_subtitles": with_vtt,
        "videos_transcribed": len(writer.done),
        "videos_skipped_as_done": len(wanted) - len(pending) - len(kept_failures),
        "videos_skipped_as_failed": len(kept_failures),
        "videos_failed": len(writer.failed) + len(kept_failures),
        "videos_failed_this_run": len(writer.failed),
        "videos_not_found": len(missing),
        "manifest_errors": len(listing.errors),
        "coverage": round(with_vtt / len(wanted), 4) if wanted else None,
        "cues": sum(v["cues"] for v in writer.done.values()),
        "cues_dropped_as_repeats": sum(v["cues_dropped_as_repeats"] for v in writer.done.values()),
        "languages": dict(Counter(v["language"] or "unknown" for v in writer.done.values())),
        "audio_hours": round(writer.audio_s / 3600, 4),
        "audio_s_per_s": round(writer.audio_s / job_s, 3) if job_s > 0 else None,
        "ray_nodes": {**{stage: len(ids) for stage, ids in writer.nodes.items()},
                      "all": len(set().union(*writer.nodes.values()))},
        "errors": len(errors),
        "errors_by_stage": by_stage,
        "errors_by_reason": by_reason,
        "job_s": round(job_s, 3),
        "wall_s": round(wall_s, 3),
    }
