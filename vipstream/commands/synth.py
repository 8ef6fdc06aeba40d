"""`vipstream synth`: write the embedded synthetic corpus (videos, YouTube-style VTT, HD-VILA meta)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("synth", help="generate the synthetic demo/test corpus",
                                   description="Long videos of moving coloured shapes, subtitles that "
                                               "describe them and an HD-VILA-style meta.jsonl.")
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--num-videos", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-duration-s", type=float, default=30.0)
    parser.add_argument("--max-duration-s", type=float, default=120.0)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tools.make_synthetic_corpus import make_synthetic_corpus

    corpus = make_synthetic_corpus(args.output, num_videos=args.num_videos, seed=args.seed,
                                   min_duration_s=args.min_duration_s, max_duration_s=args.max_duration_s)
    print(json.dumps({"meta": str(corpus.meta_path), "video_root": str(corpus.video_root),
                      "videos": list(corpus.video_ids)}, indent=2))
    return 0
