"""`vipstream eval`: text<->video retrieval of a checkpoint on a retrieval set (R@1/5/10, MdR, MnR)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger("vipstream.eval")

#: Row labels of the table; DSL is transductive (it uses every test query at once).
PLAIN_LABEL = "plain"
DSL_LABEL = "DSL (transductive)"
_COLUMNS = ("R@1", "R@5", "R@10", "MdR", "MnR")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval", help="text<->video retrieval metrics of a checkpoint on a retrieval set",
        description="Encode every video of a retrieval set (built with `vipstream build --annotations`) "
                    "once and every caption as a query; print text->video and video->text R@1, R@5, "
                    "R@10, median rank (MdR) and mean rank (MnR), and write them to a JSON file. Ties "
                    "count against the correct item. --dsl adds the dual-softmax rows (DSL, as the CLIP-ViP "
                    "reference computes it: sim * softmax(100 sim) over the texts, both directions ranked "
                    "on that one matrix), which are transductive: they use every test query at once, so "
                    "they are reported beside the plain numbers, never instead.")
    parser.add_argument("--checkpoint", required=True, type=Path,
                        help="CLIP-ViP checkpoint folder, a reference .pt (XPretrain's, e.g. "
                             "pretrain_clipvip_base_32.pt) with --clip, or a plain CLIP folder with --baseline meanpool")
    parser.add_argument("--clip", default=None,
                        help="with a reference .pt --checkpoint: the CLIP it was trained from (hub name or local "
                             "folder: architecture, tokenizer); frames are resized as the reference does")
    parser.add_argument("--data", required=True, type=Path, help="retrieval set: a build OUT folder")
    parser.add_argument("--frames", type=int, default=12,
                        help="frames per video, eval rule linspace(0, n-1, T) truncated, as the reference (paper: 12; "
                             "32 for long videos)")
    parser.add_argument("--dsl", action="store_true",
                        help="also report the DSL (transductive) rows: softmax over the texts, as the reference")
    parser.add_argument("--baseline", choices=("meanpool",), default=None,
                        help="meanpool: a plain CLIP checkpoint, per-frame image features averaged "
                             "(the CLIP4Clip-meanP zero-shot baseline)")
    parser.add_argument("--batch-size", type=int, default=16, help="videos (and texts) per forward pass")
    parser.add_argument("--max-text-length", type=int, default=70,
                        help="tokens per caption (70 as in pretraining; the MSR-VTT fine-tuning recipe uses 50)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    parser.add_argument("--num-workers", type=int, default=0, help="loader worker processes")
    parser.add_argument("--output", type=Path, default=Path("metrics.json"),
                        help="where to write the metrics JSON (checked writable before any work; written atomically)")
    parser.add_argument("--allow-missing", action="store_true",
                        help="evaluate although videos of the set's manifest.parquet could not be read (undecodable, "
                             "truncated shard); the table and the JSON say how many videos and captions were dropped. "
                             "Without it a missing video is an error (exit 1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(handler=run)


def format_table(result: dict[str, Any], dsl: bool = True) -> str:
    """The metrics as a fixed-width table: one row per method (plain, DSL), t2v then v2t columns."""
    width = max(len(PLAIN_LABEL), len(DSL_LABEL) if dsl else 0)
    cells = " ".join(f"{c:>6}" for c in _COLUMNS)
    lines = [f"{'':<{width}}  {'text->video':^{len(cells)}}   {'video->text':^{len(cells)}}",
             f"{'':<{width}}  {cells}   {cells}"]
    rows = [(PLAIN_LABEL, result["plain"])] + ([(DSL_LABEL, result["dsl"])] if dsl else [])
    for label, metrics in rows:
        t2v = " ".join(f"{metrics['t2v'][c]:>6.1f}" for c in _COLUMNS)
        v2t = " ".join(f"{metrics['v2t'][c]:>6.1f}" for c in _COLUMNS)
        lines.append(f"{label:<{width}}  {t2v}   {v2t}")
    dropped = result.get("dropped") or {}
    if dropped.get("videos"):
        unknown = dropped.get("videos_unknown_captions", 0)
        lines.append(f"dropped (--allow-missing): {dropped['videos']} of {result.get('expected_videos')} videos and "
                     f"{dropped['captions']} captions" + (f" (+ the captions of {unknown} videos whose json is "
                                                          f"unreadable)" if unknown else "")
                     + f": these numbers are over {result['num_videos']} videos, not the whole set")
    return "\n".join(lines)


def _check_inputs(args: argparse.Namespace) -> None:
    """ConfigError, before any work, for an output that cannot be written, a checkpoint of only
    pickled weights, or a --max-text-length beyond the checkpoint's text positions."""
    from model.clip_vip import CONFIG_NAME, check_checkpoint_weights, text_positions
    from vipstream.atomic import check_writable
    from vipstream.config import ConfigError

    try:
        check_writable(args.output)
    except OSError as exc:
        raise ConfigError(f"--output {args.output}: cannot write there ({exc.strerror or exc}); nothing was "
                          f"evaluated") from None
    if (args.checkpoint / CONFIG_NAME).is_file():  # else evaluate_model says what the folder lacks
        try:
            check_checkpoint_weights(args.checkpoint)
        except (ValueError, FileNotFoundError) as exc:  # PickledWeightsError is a ValueError
            raise ConfigError(str(exc)) from None
        positions = text_positions(args.checkpoint)
        if positions is not None and args.max_text_length > positions:
            raise ConfigError(f"--max-text-length {args.max_text_length} is beyond the {positions} text positions "
                              f"of the model ({args.checkpoint / CONFIG_NAME}); use {positions} or less")


def run(args: argparse.Namespace) -> int:
    import torch

    from train.evaluate import evaluate_model
    from vipstream.atomic import write_text_atomic
    from vipstream.config import ConfigError

    if args.frames < 1 or args.batch_size < 1 or args.max_text_length < 2:
        raise ConfigError(f"expected --frames >= 1, --batch-size >= 1, --max-text-length >= 2; found "
                          f"{args.frames}, {args.batch_size}, {args.max_text_length}")
    if not args.data.is_dir():
        raise ConfigError(f"--data {args.data} is not a folder (expected a build OUT folder)")
    _check_inputs(args)
    model = _model_source(args)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        result = evaluate_model(model, args.data, None, num_frames=args.frames,
                                batch_size=args.batch_size, device=device, baseline=args.baseline,
                                max_text_length=args.max_text_length, num_workers=args.num_workers,
                                progress=not args.no_progress, allow_missing=args.allow_missing)
    except ValueError as exc:  # a plain CLIP without --baseline, a set without captions, duplicate keys, ...
        print(f"vipstream eval: {exc}", file=sys.stderr)
        return 2
    if not args.dsl:
        result.pop("dsl")
    result = {"checkpoint": str(args.checkpoint), "data": str(args.data), **result}
    kind = f"baseline {args.baseline}" if args.baseline else "CLIP-ViP"
    print(f"{args.checkpoint} ({kind}) on {args.data}: {result['num_videos']} videos, "
          f"{result['num_texts']} captions, {args.frames} frames")
    print(format_table(result, dsl=args.dsl), flush=True)  # shown even if the write below fails
    try:
        write_text_atomic(args.output, json.dumps(result, indent=2) + "\n")
    except OSError as exc:
        print(f"vipstream eval: the metrics above could not be written to {args.output}: {exc}", file=sys.stderr)
        return 1
    print(f"metrics written to {args.output}")
    return 0


def _model_source(args: argparse.Namespace) -> Any:
    """What evaluate_model gets: a checkpoint folder (path string), or the model of a reference .pt
    (`CLIPViPModel.from_xpretrain`, which needs --clip)."""
    from vipstream.config import ConfigError

    if args.checkpoint.is_dir():
        if args.clip is not None:
            raise ConfigError("--clip goes with a reference .pt --checkpoint; a checkpoint folder carries its own")
        return str(args.checkpoint)
    if not args.checkpoint.is_file():
        raise ConfigError(f"--checkpoint {args.checkpoint}: no such folder or file")
    if args.clip is None:
        raise ConfigError(f"--checkpoint {args.checkpoint} is a file: a reference .pt needs --clip (the CLIP it was "
                          f"trained from, e.g. openai/clip-vit-base-patch32)")
    from model.clip_vip import CLIPViPModel

    try:
        return CLIPViPModel.from_xpretrain(args.checkpoint, args.clip)
    except (ValueError, OSError) as exc:  # XPretrainCheckpointError naming the keys, an unknown --clip
        raise ConfigError(str(exc)) from exc
