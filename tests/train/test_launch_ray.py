"""`vipstream train --launcher ray`: Ray Train's TorchTrainer, 2 gloo workers on the local Ray."""

from __future__ import annotations

import json

from tests.train.test_launch import _train_args
from train.checkpoint import latest_checkpoint, load_trainer_state
from train.metrics import read_metrics
from vipstream.cli import main


def test_a_restarted_worker_group_resumes_its_own_newer_checkpoint_in_full():
    from train.launch import restart_mode

    assert restart_mode(False, False, None, None) == (False, False)  # fresh launch
    assert restart_mode(False, False, None, "step_00000004") == (True, False)  # restarted after a failure
    assert restart_mode(True, False, "step_00000004", "step_00000004") == (True, False)  # --resume
    # --resume-weights-only applies to the checkpoint the launch started from, not to the run's own
    assert restart_mode(False, True, "step_00000004", "step_00000004") == (False, True)
    assert restart_mode(False, True, "step_00000004", "step_00000006") == (True, False)


def _descendants_running(name: str) -> list[int]:
    """PIDs of this process's descendants whose command line contains `name` (from /proc), leaving
    out their own children of the same title (a Ray worker's forked DataLoader workers)."""
    import os
    from pathlib import Path

    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue

    def descends(pid: int) -> bool:
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == os.getpid():
                return True
        return False

    found = []
    for pid in parents:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if name in cmdline and descends(pid):
            found.append(pid)
    return [pid for pid in found if parents.get(pid) not in found]


def test_ray_train_launcher_trains_two_workers_checkpoints_and_restarts_a_killed_worker_from_latest(
        captioned_corpus, stand_in_clip, ray_local, tmp_path):
    import os
    import signal
    import threading
    import time

    run = tmp_path / "run"
    args = _train_args(captioned_corpus, stand_in_clip, run, "--launcher", "ray", "--num-workers", "2",
                       "--max-steps", "10", "--save-every", "3", "--max-failures", "1")
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("code", main(args)))
    thread.start()
    deadline = time.monotonic() + 300
    while not (run / "checkpoints" / "latest").is_file():
        assert thread.is_alive() and time.monotonic() < deadline, "no checkpoint before the run ended"
        time.sleep(0.05)
    workers = _descendants_running("RayTrainWorker")
    assert len(workers) == 2, workers
    assert main(args) == 1  # the driver holds the run lock: a second run is refused at once
    os.kill(workers[0], signal.SIGKILL)  # a lost worker: FailureConfig restarts the group
    thread.join(timeout=400)
    assert result.get("code") == 0

    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 10 and summary["samples"] == 10 * 2 * 2
    assert summary["start_step"] >= 3  # the restarted group resumed from a checkpoint, not from scratch
    assert [row["step"] for row in read_metrics(run)] == list(range(1, 11))
    checkpoint = latest_checkpoint(run)
    assert checkpoint.name == "step_00000010" and (checkpoint / "model.safetensors").is_file()
    assert len(load_trainer_state(checkpoint)["ranks"]) == 2  # each worker's RNG state
    assert (run / "ray_train").is_dir()  # Ray's run state on the output (shared) path

    # Relaunched with --resume on the same output (as after a crash of the driver): Ray Train accepts
    # its earlier run folder there, the workers load `latest` and find the run finished.
    code = main(_train_args(captioned_corpus, stand_in_clip, run, "--launcher", "ray", "--num-workers", "2",
                            "--max-steps", "10", "--save-every", "3", "--max-failures", "1", "--resume"))
    assert code == 0 and json.loads((run / "summary.json").read_text())["steps"] == 10
