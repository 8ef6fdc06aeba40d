"""`vipstream transcribe`: WebVTT subtitles by speech recognition for the videos of a corpus that
have none (a Ray Data job), and a manifest `vipstream build --input` reads.

Writes ASR/subtitles/{video_id}.vtt, ASR/manifest.jsonl, ASR/errors.parquet, ASR/asr.json and
ASR/summary.json; nothing next to the videos. Rerunning resumes: only videos with neither a .vtt
nor a recorded failure are transcribed (--retry-failed redoes the failures).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger("vipstream.transcribe")


def register(subparsers: argparse._SubParsersAction) -> None:
    from pipeline.transcribe.config import TranscribeConfig
    from vipstream.config import add_config_arguments

    parser = subparsers.add_parser(
        "transcribe", help="speech recognition (Whisper) for videos without subtitles (resumable Ray job)",
        description="Read a corpus in any form `vipstream build --input` takes (HD-VILA meta JSONL + "
                    "--video-root, a vipstream manifest, a folder of videos); write ASR/subtitles/{video_id}.vtt "
                    "for every video without a subtitle file (all of them with --all) and ASR/manifest.jsonl, "
                    "the input's rows with `subtitles` pointing at them, for `vipstream build --input`. "
                    "Decoding is Whisper's sequential long-form with its guards (no-speech, compression-ratio "
                    "and log-prob thresholds, temperature fallback) on blocks of audio stitched by time.")
    parser.add_argument("--input", required=True, type=Path, help="manifest file or folder of videos")
    parser.add_argument("--output", required=True, type=Path, help="ASR output folder")
    parser.add_argument("--video-root", type=Path, default=None,
                        help="where HD-VILA videos live, found by video_id (default: the manifest's folder)")
    parser.add_argument("--config", type=Path, default=None, help="YAML config (e.g. configs/transcribe.yaml)")
    parser.add_argument("--ray-address", default=None, help="join a running Ray cluster ('auto' or host:port)")
    parser.add_argument("--all", action="store_true", default=None,
                        help="also transcribe videos that already have a subtitle file")
    parser.add_argument("--overwrite", action="store_true", default=None,
                        help="transcribe every video again, also those whose .vtt exists")
    parser.add_argument("--retry-failed", action="store_true", default=None,
                        help="transcribe again the videos an earlier run could not (no speech, no audio, ...)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_arguments(parser, TranscribeConfig, skip=("all", "overwrite", "retry_failed"))
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.transcribe.config import TranscribeConfig
    from vipstream.config import load_config, overrides_from_args

    cfg = load_config(TranscribeConfig, args.config, overrides_from_args(args, TranscribeConfig))
    return transcribe(args.input, args.output, cfg, video_root=args.video_root, ray_address=args.ray_address,
                      progress=not args.no_progress)


def transcribe(input_path: Path, out_dir: Path, cfg, *, video_root: Path | None = None,
               ray_address: str | None = None, progress: bool = True, quiet: bool = False) -> int:
    """Run the job; print its summary (to stderr with `quiet`, for `build --asr`). Exit code."""
    from pipeline.transcribe.asr import AsrLoadError
    from pipeline.transcribe.job import run_transcribe_job
    from vipstream.config import ConfigError, config_to_dict

    if not cfg.asr:
        raise ConfigError("no speech recognition model given (--asr NAME_OR_PATH, or `asr:` in the config)")
    log.info("config: %s", json.dumps(config_to_dict(cfg)))
    try:
        summary = run_transcribe_job(input_path, out_dir, cfg, video_root=video_root, ray_address=ray_address,
                                     progress=progress)
    except AsrLoadError as exc:
        print(f"vipstream transcribe: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2), file=sys.stderr if quiet else sys.stdout)
    if summary["videos_to_transcribe"] and not summary["videos_with_asr_subtitles"]:
        print(f"vipstream transcribe: no video could be transcribed; see {out_dir}/errors.parquet", file=sys.stderr)
        return 1
    return 0
