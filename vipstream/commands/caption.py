"""`vipstream caption`: caption the middle frame of every clip of built shards (a Ray Data job).

Writes OUT/captions/{captioner_id}/{shard:06d}.parquet beside the shards, never touching them;
rerunning resumes, another captioner (or other settings) gets its own folder.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger("vipstream.caption")


def register(subparsers: argparse._SubParsersAction) -> None:
    from pipeline.caption.captioner import CaptionerConfig
    from vipstream.config import add_config_arguments

    parser = subparsers.add_parser(
        "caption", help="caption each clip's middle frame with a HF image-to-text model (resumable Ray job)",
        description="Read OUT/shards/*.tar (finished shards only) and write one caption sidecar per "
                    "shard to OUT/captions/{captioner_id}/. The tars are never rewritten.")
    parser.add_argument("--shards", required=True, type=Path,
                        help="build output directory (holding shards/), or its shards/ folder")
    parser.add_argument("--config", type=Path, default=None, help="YAML config (e.g. configs/caption.yaml)")
    parser.add_argument("--ray-address", default=None, help="join a running Ray cluster ('auto' or host:port)")
    parser.add_argument("--overwrite", action="store_true", default=None,
                        help="recaption shards whose sidecar already exists")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_arguments(parser, CaptionerConfig, skip=("overwrite",))
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.caption.captioner import CaptionerConfig
    from vipstream.config import load_config, overrides_from_args

    cfg = load_config(CaptionerConfig, args.config, overrides_from_args(args, CaptionerConfig))
    return _caption(args.shards, cfg, args.ray_address, progress=not args.no_progress)


def caption_after_build(out_dir: Path, captioner: str, ray_address: str | None = None) -> int:
    """`vipstream build --captioner NAME_OR_PATH`: caption the fresh build with default settings."""
    from pipeline.caption.captioner import CaptionerConfig
    from vipstream.config import load_config

    cfg = load_config(CaptionerConfig, None, {"captioner": captioner})
    return _caption(out_dir, cfg, ray_address, progress=True)


def _caption(out_dir: Path, cfg, ray_address: str | None, *, progress: bool) -> int:
    from pipeline.caption.captioner import CaptionerLoadError
    from pipeline.caption.job import run_caption_job
    from vipstream.config import ConfigError, config_to_dict

    if not cfg.captioner:
        raise ConfigError("no captioner given (--captioner NAME_OR_PATH, or `captioner:` in the config)")
    log.info("config: %s", json.dumps(config_to_dict(cfg)))
    try:
        summary = run_caption_job(out_dir, cfg, ray_address, progress=progress)
    except CaptionerLoadError as exc:
        print(f"vipstream caption: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    if summary["shards_failed"] or (summary["captions"] == 0 and summary["shards_captioned"]):
        print("vipstream caption: some shards could not be captioned; see "
              f"{summary['sidecars']}/errors.parquet", file=sys.stderr)
        return 1
    return 0
