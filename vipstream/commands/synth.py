"""`vipstream synth`: write the embedded synthetic corpus (videos, YouTube-style VTT, HD-VILA meta)
and, with --retrieval-pairs, the demo's held-out retrieval set (tools/demo_data.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("synth", help="generate the synthetic demo/test corpus",
                                   description="Long videos of moving coloured shapes, subtitles that "
                                               "describe them (or talk like ASR) and an HD-VILA-style "
                                               "meta.jsonl; optionally a held-out retrieval set.")
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--num-videos", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-duration-s", type=float, default=30.0)
    parser.add_argument("--max-duration-s", type=float, default=120.0)
    parser.add_argument("--subtitle-style", choices=("describe", "asr"), default="describe",
                        help="describe: subtitles say what is on screen; asr: spoken, partial, with filler "
                             "and off-topic talk (as real ASR subtitles are)")
    parser.add_argument("--reverse-probability", type=float, default=0.0,
                        help="chance that a scene replays the previous one with every shape moving the other "
                             "way (neighbouring clips that differ only in motion)")
    parser.add_argument("--retrieval-pairs", type=int, default=0,
                        help="also write OUTPUT/retrieval/: this many time-reversed video pairs and "
                             "retrieval.jsonl ({video_id, path, captions}) for `vipstream build --annotations`")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tools.make_synthetic_corpus import make_synthetic_corpus

    corpus = make_synthetic_corpus(args.output, num_videos=args.num_videos, seed=args.seed,
                                   min_duration_s=args.min_duration_s, max_duration_s=args.max_duration_s,
                                   subtitle_style=args.subtitle_style,
                                   reverse_probability=args.reverse_probability)
    listing = {"meta": str(corpus.meta_path), "video_root": str(corpus.video_root),
               "videos": list(corpus.video_ids)}
    if args.retrieval_pairs > 0:
        from tools.demo_data import make_retrieval_set

        retrieval = make_retrieval_set(args.output / "retrieval", num_pairs=args.retrieval_pairs, seed=args.seed)
        listing["retrieval"] = retrieval.summary()
    print(json.dumps(listing, indent=2))
    return 0
