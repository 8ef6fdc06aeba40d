"""`vipstream build`: raw corpus -> subtitle-aligned clips -> WebDataset shards (a Ray job)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger("vipstream.build")


def register(subparsers: argparse._SubParsersAction) -> None:
    from pipeline.builder.config import PipelineConfig
    from vipstream.config import add_config_arguments

    parser = subparsers.add_parser(
        "build", help="cut, transcode and shard a raw video corpus (resumable Ray job)",
        description="Read an HD-VILA meta JSONL, a vipstream manifest (JSONL/parquet) or a folder of "
                    "videos; write OUT/shards/*.tar, OUT/manifest.parquet, OUT/errors.parquet. "
                    "Rerunning the same command resumes. With --annotations instead of --input, build a "
                    "retrieval set: one clip per video (its span, else the whole video) whose json "
                    "carries 'captions'. Annotation forms, detected from the file: MSR-VTT's "
                    "MSRVTT_data.json ('videos' + 'sentences'), a CSV with video_id and sentence columns "
                    "(the JSFusion 1k-A test list), ActivityNet-style JSON {video_id: {'sentences': [...]}} "
                    "(joined into one paragraph), or JSONL {video_id, path?, captions: [...], span?}. "
                    "Videos without a path are found by id under --video-root; a caption for an unknown "
                    "video is an error row.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", type=Path, help="manifest file or folder of videos")
    source.add_argument("--annotations", type=Path,
                        help="retrieval-set annotation file (.json MSR-VTT or ActivityNet form, .csv, .jsonl)")
    parser.add_argument("--paragraph", action="store_true",
                        help="with --annotations: join each video's captions into one paragraph "
                             "(DiDeMo/ActivityNet paragraph-to-video retrieval)")
    parser.add_argument("--videos", type=Path, default=None,
                        help="with --annotations: keep only the videos of this list (a CSV with a video_id "
                             "column such as MSRVTT_train.9k.csv, or one id per line)")
    parser.add_argument("--exclude-videos", type=Path, default=None,
                        help="with --annotations: leave out the videos of this list (e.g. the validation "
                             "split carved from the training videos)")
    parser.add_argument("--subtitle-db", type=Path, default=None, metavar="DB",
                        help="with --input: take each clip's text from this DB keyed by clip_id instead of "
                             "subtitle files (an LMDB folder such as the reference's hdvila_subtitles_92m_db, "
                             "or a JSONL/parquet of {clip_id, text}); the clips need given spans (HD-VILA "
                             "meta JSONL); a clip without a text is an error row")
    parser.add_argument("--output", required=True, type=Path, help="output directory")
    parser.add_argument("--config", type=Path, default=None, help="YAML config (e.g. configs/pipeline.yaml)")
    parser.add_argument("--video-root", type=Path, default=None,
                        help="where HD-VILA (or annotated) videos live, found by video_id (default: the "
                             "manifest's folder)")
    parser.add_argument("--ray-address", default=None, help="join a running Ray cluster ('auto' or host:port)")
    parser.add_argument("--overwrite", action="store_true", help="rebuild every shard instead of resuming")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--captioner", default=None,
                        help="after building, caption the clips with this HF image-to-text model (name or path)")
    parser.add_argument("--asr", default=None, metavar="MODEL",
                        help="first transcribe the videos without subtitles with this Whisper model (name or "
                             "path) into OUT/asr/ (`vipstream transcribe`), then build from OUT/asr/manifest.jsonl")
    parser.add_argument("--asr-config", type=Path, default=None,
                        help="with --asr: the transcribe settings (YAML as configs/transcribe.yaml; default: its values)")
    add_config_arguments(parser, PipelineConfig)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.builder.config import PipelineConfig
    from pipeline.builder.jobs import run_build
    from vipstream.config import config_to_dict, load_config, overrides_from_args

    cfg = load_config(PipelineConfig, args.config, overrides_from_args(args, PipelineConfig))
    try:
        annotations = _annotation_options(args)
    except (OSError, ValueError) as exc:
        print(f"vipstream build: {exc}", file=sys.stderr)
        return 2
    if args.captioner:  # fail fast: a captioner that cannot load must not cost a whole build
        from pipeline.caption.captioner import CaptionerConfig, CaptionerLoadError, check_captioner

        try:
            check_captioner(load_config(CaptionerConfig, None, {"captioner": args.captioner}))
        except CaptionerLoadError as exc:
            print(f"vipstream build: {exc}", file=sys.stderr)
            return 2
    log.info("config: %s", json.dumps(config_to_dict(cfg)))
    build_input, video_root = args.annotations or args.input, args.video_root
    if args.asr:
        transcribed = _transcribe_first(args)
        if isinstance(transcribed, int):
            return transcribed
        build_input, video_root = transcribed, None
    summary = run_build(build_input, args.output, cfg, video_root=video_root,
                        ray_address=args.ray_address, overwrite=args.overwrite,
                        progress=not args.no_progress, annotations=annotations,
                        subtitle_db=args.subtitle_db)
    summary.pop("config", None)
    print(json.dumps(summary, indent=2))
    if summary["clips"] == 0:
        print("vipstream build: no clip was written; see errors.parquet", file=sys.stderr)
        return 1
    if args.captioner:
        from vipstream.commands.caption import caption_after_build

        return caption_after_build(args.output, args.captioner, args.ray_address)
    return 0


def _transcribe_first(args: argparse.Namespace) -> Path | int:
    """`build --asr MODEL`: transcribe into OUT/asr/ -> its manifest, or the exit code of a failure."""
    from pipeline.transcribe.config import TranscribeConfig
    from vipstream.commands.transcribe import transcribe
    from vipstream.config import ConfigError, load_config
    from vipstream.schema import ASR_DIRNAME, ASR_MANIFEST_FILENAME

    if args.annotations is not None:
        raise ConfigError("--asr transcribes a corpus (--input); a retrieval set (--annotations) needs no subtitles")
    asr_dir = args.output / ASR_DIRNAME
    code = transcribe(args.input, asr_dir, load_config(TranscribeConfig, args.asr_config, {"asr": args.asr}),
                      video_root=args.video_root, ray_address=args.ray_address, progress=not args.no_progress,
                      quiet=True)
    if code == 2 or not (asr_dir / ASR_MANIFEST_FILENAME).exists():
        return code or 1
    return asr_dir / ASR_MANIFEST_FILENAME


def _annotation_options(args: argparse.Namespace):
    """AnnotationOptions from the flags (None without --annotations, whose options need it)."""
    from pipeline.builder.annotations import AnnotationOptions, read_video_list

    if args.annotations is None:
        given = [flag for flag, value in (("--paragraph", args.paragraph), ("--videos", args.videos),
                                          ("--exclude-videos", args.exclude_videos)) if value]
        if given:
            raise ValueError(f"{', '.join(given)}: only with --annotations (a retrieval set), not with --input")
        return None
    return AnnotationOptions(
        paragraph=args.paragraph,
        videos=read_video_list(args.videos) if args.videos else None,
        exclude_videos=read_video_list(args.exclude_videos) if args.exclude_videos else frozenset())
