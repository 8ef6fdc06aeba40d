"""`vipstream caption`: caption the middle frame of every clip of built shards (a Ray Data job).

Writes OUT/captions/{captioner_id}/{shard:06d}.parquet beside the shards, never touching them;
rerunning resumes, another captioner (or other settings) gets its own folder. With --import DB,
the sidecar is filled from captions keyed by clip_id instead (pipeline/caption/imports.py).
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
    parser.add_argument("--import", dest="import_db", type=Path, default=None, metavar="DB",
                        help="instead of running a captioner, import captions keyed by clip_id (with "
                             "--captioner-id): an LMDB folder such as the released hdvila_ofa_captions_db, "
                             "a JSON list of {image_id|clip_id, caption}, a JSONL or a parquet with "
                             "clip_id, caption")
    add_config_arguments(parser, CaptionerConfig, skip=("overwrite",))
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.caption.captioner import CaptionerConfig
    from vipstream.config import load_config, overrides_from_args

    cfg = load_config(CaptionerConfig, args.config, overrides_from_args(args, CaptionerConfig))
    if args.import_db is not None:
        return _import(args.shards, args.import_db, cfg, progress=not args.no_progress)
    return _caption(args.shards, cfg, args.ray_address, progress=not args.no_progress)


def _import(out_dir: Path, db: Path, cfg, *, progress: bool) -> int:
    """`--import DB`: exit 1 when a shard could not be read or no clip found its caption (the
    usual cause: the DB's keys are not the manifest's clip_ids; the summary shows both)."""
    from pipeline.caption.imports import run_caption_import

    summary = run_caption_import(out_dir, db, cfg, progress=progress)
    print(json.dumps(summary, indent=2))
    found = summary["import"]
    if summary["shards_failed"]:
        print(f"vipstream caption: some shards could not be read; see {summary['sidecars']}/errors.parquet",
              file=sys.stderr)
        return 1
    if found["clips"] and not found["keys_matched"]:
        print(f"vipstream caption: no clip_id of the corpus is a key of {db} (its keys look like "
              f"{found.get('sample_keys')}); see {summary['sidecars']}/errors.parquet", file=sys.stderr)
        return 1
    return 0


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
