"""`vipstream demo`: the main job end to end on the embedded synthetic corpus.

synthetic corpus -> `vipstream build` (a local Ray job) -> summary. Later stages (captions with a
real captioner, training, evaluation) join here as they land.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

log = logging.getLogger("vipstream.demo")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="build the synthetic corpus and run the pipeline on it")
    parser.add_argument("--workdir", type=Path, default=Path("demo_out"))
    parser.add_argument("--num-videos", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", type=Path, default=None, help="pipeline YAML config")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.build.config import PipelineConfig
    from pipeline.build.jobs import run_build
    from tools.make_synthetic_corpus import make_synthetic_corpus
    from vipstream.config import load_config

    corpus_dir = args.workdir / "corpus"
    if (corpus_dir / "meta.jsonl").exists():
        log.info("reusing synthetic corpus at %s", corpus_dir)
        meta, video_root = corpus_dir / "meta.jsonl", corpus_dir / "videos"
    else:
        log.info("writing synthetic corpus (%d videos) to %s", args.num_videos, corpus_dir)
        corpus = make_synthetic_corpus(corpus_dir, num_videos=args.num_videos, seed=args.seed)
        meta, video_root = corpus.meta_path, corpus.video_root
    # One video per shard unless configured: a four-video demo then keeps every CPU busy.
    cfg = load_config(PipelineConfig, args.config, None if args.config else {"videos_per_shard": 1})
    summary = run_build(meta, args.workdir / "out", cfg, video_root=video_root)
    summary.pop("config", None)
    print(json.dumps(summary, indent=2))
    _show_output(args.workdir / "out")
    return 0 if summary["clips"] > 0 else 1


def _show_output(out_dir: Path, examples: int = 3) -> None:
    """What a newcomer wants to see next: the output's inventory and a few clips' texts."""
    import pyarrow.parquet as pq

    from pipeline.inspect_output import format_report, inspect_output

    print(format_report(inspect_output(out_dir)))
    for row in pq.read_table(out_dir / "manifest.parquet").slice(0, examples).to_pylist():
        print(f"  {row['key']}  {row['start_s']:7.2f}-{row['end_s']:7.2f} s  {row['subtitle']!r}")
