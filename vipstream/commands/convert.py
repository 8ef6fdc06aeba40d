"""`vipstream convert`: the reference implementation's `.pt` checkpoints <-> our checkpoint folders.

    vipstream convert --from-xpretrain pretrain_clipvip_base_32.pt --clip openai/clip-vit-base-patch32 --output DIR
    vipstream convert --to-xpretrain DIR --output CKPT.pt

The first writes a `CLIPViPModel.from_pretrained` folder (model, the CLIP's tokenizer, and an image
processor doing the reference's 224x224 bicubic resize); the second writes the reference's
`VidCLIP.state_dict()` layout, which the reference code loads. Layout and checks: model/xpretrain.py.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger("vipstream.convert")

_DTYPES = ("float32", "float16")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert", help="convert the reference's (XPretrain) CLIP-ViP .pt checkpoints to and from our folders",
        description="--from-xpretrain CKPT.pt --clip CLIP --output DIR: a released CLIP-ViP checkpoint "
                    "(pretrain_clipvip_base_32.pt / _16.pt, a torch.save of XPretrain's VidCLIP.state_dict()) "
                    "as a checkpoint folder for `vipstream eval` / `vipstream train --init`, preprocessing "
                    "frames as the reference does (bicubic resize to the model's square size). "
                    "--to-xpretrain DIR --output CKPT.pt: one of our checkpoint folders in the reference's "
                    "layout. Loading is strict: a missing, unexpected or mis-shaped key is an error naming it.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-xpretrain", type=Path, metavar="CKPT.pt",
                        help="a reference checkpoint (.pt, loaded with torch.load(weights_only=True))")
    source.add_argument("--to-xpretrain", type=Path, metavar="DIR", help="a CLIP-ViP checkpoint folder of ours")
    parser.add_argument("--clip", default=None,
                        help="with --from-xpretrain: the CLIP the checkpoint was trained from (hub name or local "
                             "folder), e.g. openai/clip-vit-base-patch32 or openai/clip-vit-base-patch16; gives "
                             "the architecture, tokenizer and image processor")
    parser.add_argument("--output", type=Path, required=True,
                        help="the folder to write (--from-xpretrain) or the .pt file (--to-xpretrain); must not exist")
    parser.add_argument("--num-proxies", type=int, default=None,
                        help="video proxies M of the reference checkpoint (default 4: add_cls_num 3 + the class token)")
    parser.add_argument("--temporal-size", type=int, default=None,
                        help="rows of its temporal embedding (default 12, the reference's)")
    parser.add_argument("--dtype", choices=_DTYPES, default="float32",
                        help="with --to-xpretrain: float dtype of the written tensors (the released files are float16)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from vipstream.config import ConfigError

    if args.output.exists():
        raise ConfigError(f"--output {args.output} already exists; choose a new path (nothing is overwritten)")
    if args.from_xpretrain is not None:
        if not args.clip:
            raise ConfigError("--from-xpretrain needs --clip: the CLIP the checkpoint was trained from "
                              "(e.g. openai/clip-vit-base-patch32 for pretrain_clipvip_base_32.pt)")
        return _from_xpretrain(args)
    if args.clip or args.num_proxies is not None or args.temporal_size is not None:
        raise ConfigError("--clip, --num-proxies and --temporal-size go with --from-xpretrain; a checkpoint "
                          "folder carries its own")
    return _to_xpretrain(args)


def _from_xpretrain(args: argparse.Namespace) -> int:
    from model.clip_vip import CLIPViPModel
    from model.xpretrain import REFERENCE_NUM_PROXIES, REFERENCE_TEMPORAL_SIZE
    from vipstream.atomic import temporary_path_for
    from vipstream.config import ConfigError

    if not args.from_xpretrain.is_file():
        raise ConfigError(f"--from-xpretrain {args.from_xpretrain}: no such file")
    try:
        model = CLIPViPModel.from_xpretrain(
            args.from_xpretrain, args.clip,
            num_proxies=args.num_proxies if args.num_proxies is not None else REFERENCE_NUM_PROXIES,
            temporal_size=args.temporal_size if args.temporal_size is not None else REFERENCE_TEMPORAL_SIZE)
    except (ValueError, OSError) as exc:  # XPretrainCheckpointError naming the keys, an unknown --clip
        raise ConfigError(str(exc)) from exc
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path_for(args.output)
    try:
        model.save_pretrained(tmp)
        os.replace(tmp, args.output)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{args.from_xpretrain} -> {args.output} (CLIP-ViP folder: {model.config.num_proxies} proxies, "
          f"temporal size {model.config.temporal_size}, log logit scale {model.clip.logit_scale.item():.4f}, "
          f"reference pixels: bicubic resize to {model.clip.config.vision_config.image_size} square)")
    return 0


def _to_xpretrain(args: argparse.Namespace) -> int:
    import torch

    from model.clip_vip import CLIPViPModel, is_clip_vip_checkpoint
    from vipstream.atomic import fsync_and_replace, temporary_path_for
    from vipstream.config import ConfigError

    if not is_clip_vip_checkpoint(args.to_xpretrain):
        raise ConfigError(f"--to-xpretrain {args.to_xpretrain}: expected a CLIP-ViP checkpoint folder (config.json "
                          f"with a 'clip_vip' section, written by save_pretrained), found none")
    model = CLIPViPModel.from_pretrained(args.to_xpretrain)
    state = model.to_xpretrain_state_dict(dtype=getattr(torch, args.dtype))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path_for(args.output)
    try:
        torch.save(state, tmp)
        fsync_and_replace(tmp, args.output)
    finally:
        tmp.unlink(missing_ok=True)
    print(f"{args.to_xpretrain} -> {args.output} (reference VidCLIP.state_dict() layout, {len(state)} tensors, "
          f"{args.dtype})")
    return 0
