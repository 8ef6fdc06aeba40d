"""What `vipstream inspect OUT` reports: shards, clips, errors, ASR coverage and each captioner's coverage.

Reads only metadata (stats files, parquet footers, captioner.json), never a tar's video bytes,
so inspecting a large corpus is instant. `inspect_output(out)` returns a dict (the `--json` form);
`format_report(report)` renders it as a table for people.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from pipeline.caption.job import CAPTIONER_FILENAME
from vipstream.caption_sidecar import SidecarError, read_sidecar
from vipstream.config import ConfigError
from vipstream.schema import (ASR_DIRNAME, CAPTIONS_DIRNAME, ERRORS_FILENAME, MANIFEST_FILENAME, SHARDS_DIRNAME,
                              SUMMARY_FILENAME, shard_stats_path)

_SHARD_TAR = re.compile(r"^(\d{6})\.tar$")
_SIDECAR = re.compile(r"^(\d{6})\.parquet$")


def _num_rows(path: Path) -> int:
    return pq.ParquetFile(path).metadata.num_rows


def _read_stats(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _shards(out_dir: Path) -> tuple[dict[int, dict[str, Any]], list[int]]:
    """({finished shard: its stats}, unfinished shard indices)."""
    shards_dir = out_dir / SHARDS_DIRNAME
    found = sorted(int(m.group(1)) for p in shards_dir.iterdir() if (m := _SHARD_TAR.match(p.name))) \
        if shards_dir.is_dir() else []
    finished, unfinished = {}, []
    for shard in found:
        stats = _read_stats(shard_stats_path(out_dir, shard))
        if stats is None:
            unfinished.append(shard)
        else:
            finished[shard] = stats
    return finished, unfinished


def _errors_by_stage(path: Path, fallback: list[dict[str, Any]]) -> dict[str, int]:
    if path.exists():
        return dict(Counter(pq.read_table(path, columns=["stage"]).column("stage").to_pylist()))
    return dict(Counter(e.get("stage", "?") for e in fallback))


def _captioner_report(folder: Path, out_dir: Path, finished: dict[int, dict[str, Any]],
                      clips: int) -> dict[str, Any]:
    info = _read_stats(folder / CAPTIONER_FILENAME) or {}
    sidecars = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := _SIDECAR.match(p.name)))
    captions = covered = 0
    stale, orphan, bad = [], [], {}
    for shard, path in sidecars:
        try:  # the trainer's check: a sidecar it would skip is reported, not counted
            rows = read_sidecar(path).rows
        except SidecarError as exc:
            bad[shard] = exc.reason
            continue
        if shard not in finished:
            orphan.append(shard)  # its shard is gone or being rebuilt
            continue
        captions += rows
        covered += 1
        if path.stat().st_mtime < shard_stats_path(out_dir, shard).stat().st_mtime:
            stale.append(shard)  # the shard was rebuilt after it was captioned
    return {
        "captioner_id": folder.name,
        "model": info.get("model"),
        "generation": info.get("generation"),
        "captions": captions,
        "coverage": round(captions / clips, 4) if clips else None,
        "shards_covered": covered,
        "shards_missing": sorted(set(finished) - {s for s, _ in sidecars}),
        "stale_sidecars": stale,
        "orphan_sidecars": orphan,
        "bad_sidecars": {f"{shard:06d}": reason for shard, reason in bad.items()},
        "errors_by_stage": _errors_by_stage(folder / ERRORS_FILENAME, []),
    }


def _asr_report(out_dir: Path, finished: dict[int, dict[str, Any]], clips: int) -> dict[str, Any]:
    """Clips whose subtitle is speech recognition output (per model, from the stats files), and
    the video-level coverage of `build --asr`'s OUT/asr/ transcription when there is one."""
    by_model: Counter[str] = Counter()
    for stats in finished.values():
        by_model.update(stats.get("asr_clips") or {})
    asr_clips = sum(by_model.values())
    transcribe = _read_stats(out_dir / ASR_DIRNAME / SUMMARY_FILENAME)
    return {
        "clips": asr_clips,
        "coverage": round(asr_clips / clips, 4) if clips else None,
        "models": dict(by_model),
        "transcribe": None if transcribe is None else {
            k: transcribe.get(k) for k in ("model", "videos_to_transcribe", "videos_with_asr_subtitles",
                                           "videos_failed", "coverage", "audio_hours")},
    }


def inspect_output(out_dir: str | Path) -> dict[str, Any]:
    """Everything `vipstream inspect` shows, as a JSON-ready dict."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise ConfigError(f"output directory {out_dir} does not exist")
    if not (out_dir / SHARDS_DIRNAME).is_dir():
        raise ConfigError(f"{out_dir} holds no {SHARDS_DIRNAME}/ folder: not a `vipstream build` output")
    finished, unfinished = _shards(out_dir)
    manifest = out_dir / MANIFEST_FILENAME
    if manifest.exists():
        clips, clips_source = _num_rows(manifest), MANIFEST_FILENAME
    else:
        clips, clips_source = sum(int(s.get("clips", 0)) for s in finished.values()), "stats"
    stats_errors = [e for s in finished.values() for e in s.get("errors", [])]
    captions_root = out_dir / CAPTIONS_DIRNAME
    captioners = [_captioner_report(folder, out_dir, finished, clips)
                  for folder in sorted(captions_root.iterdir() if captions_root.is_dir() else [])
                  if folder.is_dir()]
    return {
        "output": str(out_dir),
        "shards_finished": len(finished),
        "shards_unfinished": unfinished,
        "clips": clips,
        "clips_source": clips_source,
        "errors_by_stage": _errors_by_stage(out_dir / ERRORS_FILENAME, stats_errors),
        "captioners": captioners,
        "asr": _asr_report(out_dir, finished, clips),
    }


def _shard_list(shards: list[int], limit: int = 8) -> str:
    text = ", ".join(f"{s:06d}" for s in shards[:limit])
    return text + (f", ... ({len(shards)} in all)" if len(shards) > limit else "")


def _asr_line(asr: dict[str, Any] | None) -> str:
    """"asr        12 clips with ASR text (40.0%: openai/whisper-large-v3); OUT/asr: 9/10 videos ..."."""
    if not asr or (not asr["clips"] and not asr["transcribe"]):
        return "asr        none (subtitle files only; `vipstream build --asr MODEL` transcribes videos without)"
    models = ", ".join(f"{m}: {n}" for m, n in sorted(asr["models"].items())) or "-"
    line = (f"asr        {asr['clips']} clips with ASR text"
            + (f" ({100 * asr['coverage']:.1f}% of clips; {models})" if asr["coverage"] is not None else ""))
    done = asr["transcribe"]
    if done:
        line += (f"; {ASR_DIRNAME}/: {done['videos_with_asr_subtitles']}/{done['videos_to_transcribe']} videos "
                 f"without subtitles transcribed, {done['videos_failed']} failed")
    return line


def format_report(report: dict[str, Any]) -> str:
    """A readable summary plus one table row per captioner."""
    errors = ", ".join(f"{k}: {v}" for k, v in sorted(report["errors_by_stage"].items())) or "none"
    lines = [
        f"output     {report['output']}",
        f"shards     {report['shards_finished']} finished, {len(report['shards_unfinished'])} unfinished"
        + (f" ({_shard_list(report['shards_unfinished'])})" if report["shards_unfinished"] else ""),
        f"clips      {report['clips']} (from {report['clips_source']})",
        f"errors     {errors}",
    ]
    lines.append(_asr_line(report.get("asr")))
    captioners = report["captioners"]
    if not captioners:
        lines.append("captions   none (run `vipstream caption --shards OUT --captioner NAME_OR_PATH`)")
        return "\n".join(lines)
    header = ("captioner", "model", "captions", "coverage", "shards", "errors")
    rows = [(c["captioner_id"], str(c["model"] or "?"), str(c["captions"]),
             f"{100 * c['coverage']:.1f}%" if c["coverage"] is not None else "-",
             f"{c['shards_covered']}/{report['shards_finished']}",
             str(sum(c["errors_by_stage"].values()))) for c in captioners]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines += ["", "  ".join(h.ljust(w) for h, w in zip(header, widths)),
              "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in rows]
    for c in captioners:
        if c["stale_sidecars"]:
            lines.append(f"warning: {c['captioner_id']}: sidecars older than their shard "
                         f"(rebuilt since): {_shard_list(c['stale_sidecars'])}")
        if c["orphan_sidecars"]:
            lines.append(f"warning: {c['captioner_id']}: sidecars without a finished shard: "
                         f"{_shard_list(c['orphan_sidecars'])}")
        for shard, reason in c.get("bad_sidecars", {}).items():
            lines.append(f"warning: {c['captioner_id']}: sidecar {shard} is unusable ({reason}): training "
                         f"skips it, `vipstream caption` redoes it")
    return "\n".join(lines)
