"""`python -m train`: one training process, as torchrun (or any launcher setting RANK/WORLD_SIZE)
starts it on every node:

    torchrun --nnodes 4 --nproc_per_node 8 --rdzv_endpoint HOST:29400 -m train \\
        --config configs/pretrain_b16.yaml --data s3://bucket/out --captions blip --output runs/b16

Same flags as `vipstream train` minus the launcher ones. Every rank checks the inputs (cheap)
before joining the process group, so a bad path fails with exit 2 on every rank alike.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from vipstream.config import ConfigError
from vipstream.errors import JobError


def main(argv: list[str] | None = None) -> int:
    from train.launch import add_arguments, setup_from_args

    parser = argparse.ArgumentParser(prog="python -m train", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    add_arguments(parser, launcher_flags=False)
    args = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.DEBUG if args.verbose else (logging.INFO if rank == 0 else logging.WARNING),
                        format=f"%(asctime)s %(levelname)s [rank {rank}] %(name)s: %(message)s")
    try:
        from train.loop import run_training
        from train.preflight import check_inputs
        from train.run_lock import rank_lock

        setup = setup_from_args(args)
        world = int(os.environ.get("WORLD_SIZE", "1"))
        with rank_lock(args.output, rank):  # rank 0, unless `vipstream train --nproc` holds it
            check_inputs(setup, args.output, world, resume=args.resume, weights_only=args.resume_weights_only)
            run_training(setup, args.output, resume=args.resume, resume_weights_only=args.resume_weights_only,
                         lock=False)
    except ConfigError as exc:
        print(f"python -m train: configuration error: {exc}", file=sys.stderr)
        return 2
    except JobError as exc:  # e.g. stopped by non-finite steps, run folder in use
        print(f"python -m train: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
