"""Launchers: they only start processes; every process runs `train.loop.run_training`.

- in process: one process, no process group (`vipstream train` without --nproc);
- torchrun: `python -m torch.distributed.run --standalone --nproc_per_node N -m train ...`
  (`vipstream train --nproc N`); multi-node users call torchrun themselves with `-m train`;
- Ray Train: `ray.train.torch.TorchTrainer` with N workers (`--launcher ray`), the process group
  made by Ray, checkpoints on the output path (shared storage on a cluster), and
  `FailureConfig(max_failures)`: a lost worker restarts the group, which resumes from `latest`.

The resolved config is written once to RUN/.launch_config.yaml and every process reads it, so
all ranks train exactly the config that was checked.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from train.config import TrainConfig, TrainSetup, data_config_class, load_setup
from vipstream.atomic import write_text_atomic

log = logging.getLogger(__name__)

LAUNCH_CONFIG_NAME = ".launch_config.yaml"
LAUNCHERS = ("local", "ray")
#: Loader key whose flag would clash with Ray's --num-workers (the issue fixes that name).
RENAMED_FLAGS = {"num_workers": "--loader-workers"}


# --------------------------------------------------------------------------------------- flags
def add_arguments(parser: argparse.ArgumentParser, *, launcher_flags: bool = True) -> None:
    """The flags of `vipstream train` (and, without the launcher flags, of `python -m train`)."""
    from vipstream.config import add_config_arguments

    parser.add_argument("--config", type=Path, default=None, help="YAML config (e.g. configs/tiny.yaml)")
    parser.add_argument("--output", type=Path, required=True, help="run folder RUN (logs, checkpoints)")
    parser.add_argument("--data", dest="shards", default=None,
                        help="build OUT folder, brace pattern or URLs (the `shards` key)")
    parser.add_argument("--captions", dest="captioner_id", default=None,
                        help="captioner id under OUT/captions/ (the `captioner_id` key)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --output from its latest checkpoint")
    parser.add_argument("--resume-weights-only", action="store_true",
                        help="start from the weights (and step) of --output's latest checkpoint under this "
                             "config; optimizer and RNG start fresh")
    if launcher_flags:
        parser.add_argument("--nproc", type=int, default=1, help="processes on this machine (torchrun, DDP)")
        parser.add_argument("--launcher", choices=LAUNCHERS, default="local",
                            help="local (in process, or torchrun with --nproc > 1) or ray (Ray Train)")
        parser.add_argument("--ray-address", default=None, help="Ray cluster to join ('auto' or host:port)")
        parser.add_argument("--num-workers", dest="ray_workers", type=int, default=2,
                            help="Ray Train workers (one process/rank each)")
        parser.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPUs per Ray Train worker")
        parser.add_argument("--max-failures", type=int, default=0,
                            help="Ray Train restarts of the worker group (each resumes from latest)")
    add_config_arguments(parser, TrainConfig)
    add_config_arguments(parser, data_config_class(), skip=("shards", "captioner_id", *RENAMED_FLAGS))
    for name, flag in RENAMED_FLAGS.items():
        parser.add_argument(flag, dest=name, default=None, help=f"the `{name}` key (DataLoader worker processes "
                                                                f"per rank)")
    # the loader's own names for --data/--captions stay available as flags too
    parser.add_argument("--shards", dest="shards", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--captioner-id", dest="captioner_id", default=None, help=argparse.SUPPRESS)


def setup_from_args(args: argparse.Namespace) -> TrainSetup:
    """Defaults < --config YAML < flags."""
    import dataclasses

    keys = {f.name for f in dataclasses.fields(TrainConfig)} | {f.name for f in dataclasses.fields(data_config_class())}
    overrides = {k: v for k, v in vars(args).items() if k in keys and v is not None}
    return load_setup(args.config, overrides)


def write_launch_config(setup: TrainSetup, output: Path) -> Path:
    output.mkdir(parents=True, exist_ok=True)
    path = output / LAUNCH_CONFIG_NAME
    flat = {k: list(v) if isinstance(v, tuple) else v for k, v in setup.to_dict().items()}
    write_text_atomic(path, yaml.safe_dump(flat, sort_keys=False))
    return path


def _resume_flags(resume: bool, weights_only: bool) -> list[str]:
    return (["--resume"] if resume else []) + (["--resume-weights-only"] if weights_only else [])


# ------------------------------------------------------------------------------------ launchers
def launch_in_process(setup: TrainSetup, output: Path, *, resume: bool, weights_only: bool) -> dict[str, Any]:
    """The run in this process, which holds the run lock already (vipstream train)."""
    from train.loop import run_training

    return run_training(setup, output, resume=resume, resume_weights_only=weights_only, lock=False)


def torchrun_command(output: Path, nproc: int, *, resume: bool, weights_only: bool) -> list[str]:
    """`torchrun --standalone` on this machine, running `python -m train` on the written config."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
            "-m", "train", "--config", str(output / LAUNCH_CONFIG_NAME), "--output", str(output),
            *_resume_flags(resume, weights_only)]


def launch_torchrun(setup: TrainSetup, output: Path, nproc: int, *, resume: bool, weights_only: bool,
                    lock_fd: int | None = None) -> int:
    """Run torchrun as a child; its exit code (0 when every rank finished).

    `lock_fd`: the run lock this process holds (train/run_lock.py): torchrun inherits it, and its
    rank 0 is told (HOLDER_ENV) that the lock is its launcher's."""
    from train.run_lock import holder_env

    write_launch_config(setup, output)
    command = torchrun_command(output, nproc, resume=resume, weights_only=weights_only)
    log.info("launching: %s", " ".join(command))
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    if lock_fd is not None:
        env.update(holder_env())
    return subprocess.run(command, env=env, pass_fds=() if lock_fd is None else (lock_fd,)).returncode


def launch_ray(setup: TrainSetup, output: Path, *, num_workers: int, gpus_per_worker: float, max_failures: int,
               ray_address: str | None, resume: bool, weights_only: bool, start_checkpoint: Path | None) -> Any:
    """Ray Train's TorchTrainer over `num_workers` workers running `ray_worker_loop`; the Result."""
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train import TrainingFailedError  # Ray Train v2 (ray.train.base_trainer's in v1)
    from ray.train.torch import TorchConfig, TorchTrainer

    output = output.resolve()
    write_launch_config(setup, output)
    started_ray = False
    if not ray.is_initialized():
        ray.init(address=ray_address or "local", include_dashboard=False, logging_level=logging.WARNING)
        started_ray = True
    try:
        use_gpu = gpus_per_worker > 0
        trainer = TorchTrainer(
            ray_worker_loop,
            train_loop_config={"output": str(output), "resume": resume, "weights_only": weights_only,
                               "start_checkpoint": start_checkpoint.name if start_checkpoint else None},
            torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
            scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                         resources_per_worker={"CPU": 1, "GPU": gpus_per_worker} if use_gpu else None),
            run_config=RunConfig(name="ray_train", storage_path=str(output),
                                 failure_config=FailureConfig(max_failures=max_failures)),
        )
        try:
            return trainer.fit()
        except TrainingFailedError as exc:  # say what failed in the worker, not Ray's wrapper
            raise _worker_error(exc) from None
    finally:
        if started_ray:
            ray.shutdown()


def _worker_error(exc: BaseException) -> Exception:
    """The error a Ray Train worker raised, unwrapped: our ConfigError / JobError (exit 2 / 1) as
    it was, anything else as a JobError naming it."""
    from vipstream.config import ConfigError
    from vipstream.errors import JobError

    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:  # Ray Train v2 keeps them in worker_failures {rank: exception}, v1 in cause chains
        cause = pending.pop(0)
        if id(cause) in seen:
            continue
        seen.add(id(cause))
        if isinstance(cause, (ConfigError, JobError)):
            return cause
        pending += [e for _, e in sorted((getattr(cause, "worker_failures", None) or {}).items())]
        pending += [e for e in (getattr(cause, "cause", None), cause.__cause__) if isinstance(e, BaseException)]
    return JobError(f"Ray Train failed: {exc}")


def restart_mode(resume: bool, weights_only: bool, start_checkpoint: str | None,
                 latest: str | None) -> tuple[bool, bool]:
    """(resume, weights_only) for a Ray worker group's (re)start: the launch's own flags while
    `latest` is still the checkpoint the launch started from (or none); a full resume once the run
    has written a newer one (the group was restarted after a failure)."""
    restarted = latest is not None and latest != start_checkpoint
    return resume or restarted, weights_only and not restarted


def ray_worker_loop(config: dict[str, Any]) -> None:
    """One Ray Train worker: the training loop on Ray's process group and device.

    A worker group restarted after a failure finds its own newer checkpoint in `latest` and
    resumes it in full (also under --resume-weights-only, which applies only to the checkpoint
    the launch started from). Every worker reports at the same points (each checkpoint).
    """
    import ray.train
    import ray.train.torch

    from train.checkpoint import latest_checkpoint
    from train.loop import run_training

    output = Path(config["output"])
    setup = load_setup(output / LAUNCH_CONFIG_NAME)
    latest = latest_checkpoint(output)
    resume, weights_only = restart_mode(config["resume"], config["weights_only"], config["start_checkpoint"],
                                        latest.name if latest else None)

    def report(metrics: dict[str, Any], checkpoint: Path | None) -> None:
        ray.train.report({**metrics, "checkpoint": str(checkpoint) if checkpoint else ""})

    run_training(setup, output, resume=resume, resume_weights_only=weights_only, report=report,
                 device=ray.train.torch.get_device(), lock=False)  # the driver holds the run lock
