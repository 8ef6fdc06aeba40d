"""`vipstream train --launcher ray`: Ray Train's TorchTrainer, 2 gloo workers on the local Ray."""

from __future__ import annotations

import json

from tests.train.test_launch import _train_args
from train.checkpoint import latest_checkpoint, load_trainer_state
from train.metrics import read_metrics
from vipstream.cli import main


def test_ray_train_launcher_trains_two_workers_and_checkpoints(captioned_corpus, stand_in_clip, ray_local, tmp_path):
    run = tmp_path / "run"
    code = main(_train_args(captioned_corpus, stand_in_clip, run, "--launcher", "ray", "--num-workers", "2",
                            "--max-steps", "4", "--save-every", "2", "--max-failures", "1"))
    assert code == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 4 and summary["samples"] == 4 * 2 * 2
    assert [row["step"] for row in read_metrics(run)] == [1, 2, 3, 4]
    checkpoint = latest_checkpoint(run)
    assert checkpoint.name == "step_00000004" and (checkpoint / "model.safetensors").is_file()
    assert len(load_trainer_state(checkpoint)["ranks"]) == 2  # each worker's RNG state
    assert (run / "ray_train").is_dir()  # Ray's run state on the output (shared) path

    # Relaunched with --resume on the same output (as after a crash of the driver): Ray Train accepts
    # its earlier run folder there, the workers load `latest` and find the run finished.
    code = main(_train_args(captioned_corpus, stand_in_clip, run, "--launcher", "ray", "--num-workers", "2",
                            "--max-steps", "4", "--save-every", "2", "--resume"))
    assert code == 0 and json.loads((run / "summary.json").read_text())["steps"] == 4


def test_a_restarted_worker_group_resumes_its_own_newer_checkpoint_in_full():
    from train.launch import restart_mode

    assert restart_mode(False, False, None, None) == (False, False)  # fresh launch
    assert restart_mode(False, False, None, "step_00000004") == (True, False)  # restarted after a failure
    assert restart_mode(True, False, "step_00000004", "step_00000004") == (True, False)  # --resume
    # --resume-weights-only applies to the checkpoint the launch started from, not to the run's own
    assert restart_mode(False, True, "step_00000004", "step_00000004") == (False, True)
    assert restart_mode(False, True, "step_00000004", "step_00000006") == (True, False)
