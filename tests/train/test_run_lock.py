"""train/run_lock.py: one run per run folder. A second `vipstream train` on a running --output is
refused at once (exit 1) naming the holder; a SIGKILLed run leaves no lock; `python -m train`
locks on rank 0 only, and goes on under the lock of the `vipstream train --nproc` that launched it.
(torchrun and Ray Train launchers: tests/train/test_launch.py, test_launch_ray.py.)"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from tests.conftest import REPO_ROOT, vipstream_cmd
from tests.train.test_launch import _env, _train_args
from tests.train.test_trainer import _setup
from tests.train.trainer_helpers import memory_loader
from train.checkpoint import latest_checkpoint
from train.loop import run_training
from train.run_lock import HOLDER_ENV, RUN_LOCK_FILENAME, rank_lock, run_lock
from vipstream.cli import main
from vipstream.output_lock import OutputLockedError


def test_a_second_train_on_a_running_output_is_refused_at_once_and_a_killed_run_frees_it(
        captioned_corpus, stand_in_clip, tmp_path, capsys):
    run = tmp_path / "run"
    args = _train_args(captioned_corpus, stand_in_clip, run, "--max-steps", "500", "--save-every", "1")
    first = subprocess.Popen(vipstream_cmd() + args, env=_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not (run / "checkpoints" / "latest").is_file():
            assert first.poll() is None and time.monotonic() < deadline, "no checkpoint before the run ended"
            time.sleep(0.05)
        holder = json.loads((run / RUN_LOCK_FILENAME).read_text())
        assert holder["pid"] == first.pid and holder["job"] == "vipstream train"
        metrics_before = (run / "metrics.jsonl").stat().st_ino
        for extra in ([], ["--resume"], ["--resume-weights-only"]):
            started = time.monotonic()
            assert main(args + extra) == 1, extra
            err = capsys.readouterr().err
            assert time.monotonic() - started < 20  # at once: before preflight, model or data
            assert (f"{run} is in use by vipstream train on host {socket.gethostname()}, pid {first.pid}"
                    in err), err
            assert "Traceback" not in err and "already holds checkpoints" not in err
        assert first.poll() is None and (run / "metrics.jsonl").stat().st_ino == metrics_before
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    step = int(latest_checkpoint(run).name.split("_")[1])
    # The kill released the lock: the run goes on from its weights (a short run: one more step).
    code = main(_train_args(captioned_corpus, stand_in_clip, run, "--max-steps", str(step + 1),
                            "--save-every", "1", "--resume-weights-only"))
    assert code == 0, capsys.readouterr().err[-3000:]
    assert latest_checkpoint(run).name == f"step_{step + 1:08d}"


def test_run_training_holds_the_lock_on_rank_0_for_the_whole_run(stand_in_clip, tmp_path):
    run = tmp_path / "run"
    with run_lock(run):
        with pytest.raises(OutputLockedError, match=f"pid {os.getpid()}"):
            run_training(_setup(stand_in_clip, max_steps=1), run, make_loader=memory_loader())
    assert not (run / "checkpoints").exists()  # refused before anything was written

    seen = []

    def make_loader(data_cfg, **kwargs):  # runs inside the run: the lock must be held then
        try:
            with run_lock(run):
                seen.append("free")
        except OutputLockedError:
            seen.append("held")
        return memory_loader()(data_cfg, **kwargs)

    run_training(_setup(stand_in_clip, max_steps=1), run, make_loader=make_loader)
    assert seen == ["held"]
    with run_lock(run):  # released at the end
        pass


def _rank_lock_in_child(run, rank: int, env: dict[str, str]) -> subprocess.CompletedProcess:
    code = textwrap.dedent(f"""
        from train.run_lock import rank_lock
        with rank_lock({str(run)!r}, {rank}):
            print("running", flush=True)
    """)
    return subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **env})


def test_python_m_train_locks_on_rank_0_only_and_runs_under_its_launchers_lock(tmp_path):
    run = tmp_path / "run"
    with rank_lock(run, 1):  # other ranks take nothing
        with run_lock(run):
            pass
    with rank_lock(run, 0):
        with pytest.raises(OutputLockedError):
            rank_lock(run, 0)
    with run_lock(run):  # this test process plays `vipstream train --nproc`, the ancestor of rank 0
        assert _rank_lock_in_child(run, 0, {HOLDER_ENV: str(os.getpid())}).stdout.strip() == "running"
        refused = _rank_lock_in_child(run, 0, {})  # a user's own torchrun on a locked folder
        assert refused.returncode != 0 and f"is in use by vipstream train" in refused.stderr
        claims = _rank_lock_in_child(run, 0, {HOLDER_ENV: "1"})  # a holder it does not descend from
        assert claims.returncode != 0 and "OutputLockedError" in claims.stderr


def test_a_forked_child_of_a_killed_holder_does_not_keep_the_lock(tmp_path):
    """DataLoader workers are forked from the trainer: were the lock's descriptor theirs too, a
    SIGKILLed run would stay locked until its workers noticed. The holder is killed, its forked
    child lives on, and the lock is free at once."""
    run = tmp_path / "run"
    code = textwrap.dedent(f"""
        import os, sys, time
        from train.run_lock import run_lock
        with run_lock({str(run)!r}):
            child = os.fork()
            if child == 0:
                time.sleep(120)
                os._exit(0)
            print(child, flush=True)
            time.sleep(120)
    """)
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    child = int(holder.stdout.readline())
    try:
        with pytest.raises(OutputLockedError, match=f"pid {holder.pid},"):
            with run_lock(run):
                pass
        holder.kill()
        holder.wait(timeout=30)
        os.kill(child, 0)  # the forked child is still alive
        with run_lock(run):  # and the lock is free
            pass
    finally:
        os.kill(child, signal.SIGKILL)
