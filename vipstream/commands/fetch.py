"""`vipstream fetch`: download a URL corpus (HD-VILA-100M style) with yt-dlp, as a resumable Ray job.

Writes VIDEOS/{video_id}.mp4 + {video_id}.{lang}.vtt, VIDEOS/manifest.jsonl (the input of
`vipstream build`), VIDEOS/status.parquet (one row per video) and VIDEOS/summary.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger("vipstream.fetch")


def register(subparsers: argparse._SubParsersAction) -> None:
    from pipeline.fetch.config import FetchConfig
    from vipstream.config import add_config_arguments

    parser = subparsers.add_parser(
        "fetch", help="download videos and subtitles from a URL list with yt-dlp (resumable Ray job)",
        description="Read an HD-VILA meta JSONL as is, a vipstream manifest with 'url', a CSV/parquet with "
                    "video_id,url, or a text file of URLs; write VIDEOS/{video_id}.mp4 (at most --max-height "
                    "lines), VIDEOS/{video_id}.{lang}.vtt, VIDEOS/manifest.jsonl (ready for `vipstream build "
                    "--input VIDEOS/manifest.jsonl`), VIDEOS/status.parquet and summary.json. Rerunning the same "
                    "command resumes; earlier failures are not retried unless --retry-failed (and then only "
                    "the retryable ones: blocked, timeout, transient). Only http(s) URLs are fetched.")
    parser.add_argument("--input", required=True, type=Path, help="URL list: .jsonl, .csv, .parquet or .txt")
    parser.add_argument("--output", required=True, type=Path, help="output folder (VIDEOS/)")
    parser.add_argument("--config", type=Path, default=None, help="YAML config (e.g. configs/fetch.yaml)")
    parser.add_argument("--ray-address", default=None, help="join a running Ray cluster ('auto' or host:port)")
    parser.add_argument("--retry-failed", action="store_true",
                        help="re-attempt the retryable failures of earlier runs (blocked, timeout, transient); "
                             "permanent ones (unavailable, not_video, too_large, bad_url, error) stay")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--auto-subtitles", action=argparse.BooleanOptionalAction, default=None,
                        help="also take automatic captions when a language has no uploaded subtitles "
                             "(default: on, see configs/fetch.yaml)")
    add_config_arguments(parser, FetchConfig, skip=("auto_subtitles",))
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.fetch.config import FetchConfig, redacted_config
    from pipeline.fetch.job import run_fetch
    from vipstream.config import load_config, overrides_from_args

    cfg = load_config(FetchConfig, args.config, overrides_from_args(args, FetchConfig))
    log.info("config: %s", json.dumps(redacted_config(cfg)))
    summary = run_fetch(args.input, args.output, cfg, ray_address=args.ray_address,
                        retry_failed=args.retry_failed, progress=not args.no_progress)
    summary.pop("config", None)
    print(json.dumps(summary, indent=2))
    if summary["videos"] and not summary["by_status"].get("ok"):
        print(f"vipstream fetch: no video was fetched; see {args.output / 'status.parquet'}", file=sys.stderr)
        return 1
    return 0
