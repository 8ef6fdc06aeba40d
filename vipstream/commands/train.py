"""`vipstream train`: CLIP-ViP post-pretraining (or fine-tuning) on built shards, resumable,
in this process, on local DDP (--nproc N, via torchrun) or on a Ray cluster (--launcher ray)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger("vipstream.train")


def register(subparsers: argparse._SubParsersAction) -> None:
    from train.launch import add_arguments

    parser = subparsers.add_parser(
        "train", help="train CLIP-ViP on built shards + caption sidecars (DDP, torchrun or Ray Train; resumable)",
        description="Stream OUT/shards/*.tar (+ OUT/captions/ID/) into CLIP-ViP training. Writes RUN/config.yaml, "
                    "RUN/metrics.jsonl, RUN/tensorboard/, RUN/checkpoints/step_N/ (+ latest), RUN/summary.json. "
                    "Every YAML key is also a flag (the loader's num_workers is --loader-workers; "
                    "--num-workers counts Ray Train workers).")
    add_arguments(parser, launcher_flags=True)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from train.launch import setup_from_args
    from train.run_lock import run_lock
    from vipstream.config import ConfigError

    setup = setup_from_args(args)
    if args.nproc < 1 or args.ray_workers < 1:
        raise ConfigError(f"--nproc and --num-workers must be >= 1, found {args.nproc} and {args.ray_workers}")
    if args.launcher == "ray" and args.nproc > 1:
        raise ConfigError("--nproc starts torchrun; with --launcher ray use --num-workers")
    world = args.ray_workers if args.launcher == "ray" else args.nproc
    # One run per run folder (train/run_lock.py): refused at once, exit 1, naming the holder.
    with run_lock(args.output) as lock:
        return _run_locked(args, setup, world, lock.fileno())


def _run_locked(args: argparse.Namespace, setup, world: int, lock_fd: int) -> int:
    from train.launch import launch_in_process, launch_ray, launch_torchrun
    from train.preflight import check_inputs

    found = check_inputs(setup, args.output, world, resume=args.resume, weights_only=args.resume_weights_only)
    log.info("data: %d finished shards, %s clips; config: %s", found["shards"], found["clips"],
             json.dumps(setup.to_dict()))
    if found["start_checkpoint"] is not None:
        log.info("starting from %s", found["start_checkpoint"])
    output: Path = args.output
    _print_locations(output, "will write")
    if args.launcher == "ray":
        launch_ray(setup, output, num_workers=args.ray_workers, gpus_per_worker=args.gpus_per_worker,
                   max_failures=args.max_failures, ray_address=args.ray_address, resume=args.resume,
                   weights_only=args.resume_weights_only, start_checkpoint=found["start_checkpoint"])
        code = 0
    elif args.nproc > 1:
        code = launch_torchrun(setup, output, args.nproc, resume=args.resume, weights_only=args.resume_weights_only,
                               lock_fd=lock_fd)
    else:
        launch_in_process(setup, output, resume=args.resume, weights_only=args.resume_weights_only)
        code = 0
    if code != 0:
        print(f"vipstream train: the training processes exited with code {code}; logs above. Rerun with "
              f"--resume to continue from {output}/checkpoints/latest", file=sys.stderr)
        return 1
    summary_path = output / "summary.json"
    if summary_path.is_file():
        print(summary_path.read_text())
    _print_locations(output, "wrote")
    return 0


def _print_locations(output: Path, verb: str) -> None:
    print(f"vipstream train {verb}: config {output / 'config.yaml'}, metrics {output / 'metrics.jsonl'}, "
          f"TensorBoard `tensorboard --logdir {output / 'tensorboard'}`, checkpoints {output / 'checkpoints'} "
          f"(latest: {output / 'checkpoints' / 'latest'}), summary {output / 'summary.json'}", file=sys.stderr)
