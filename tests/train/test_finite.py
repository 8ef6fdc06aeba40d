"""Non-finite steps (train/finite.py): a NaN/inf loss or gradient norm skips that update (counted,
logged as null in strict JSON), too many in a row stop the run with exit 1 naming the step and the
last good checkpoint, no checkpoint is ever written from non-finite weights, pruning keeps the last
good one, and under DDP every rank takes the same decision."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import REPO_ROOT
from tests.train.test_launch import _train_args
from tests.train.test_trainer import _setup
from tests.train.trainer_helpers import memory_loader
from train.checkpoint import STATE_NAME, latest_checkpoint, step_checkpoints
from train.finite import NonFiniteTrainingError, json_safe
from train.loop import run_training
from vipstream.cli import main


def _strict_rows(path: Path) -> list[dict]:
    """Every line of a JSONL file parsed as strict JSON (bare NaN/Infinity rejected)."""
    def refuse(constant: str):
        raise ValueError(f"{path} holds a bare {constant}: not JSON")

    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines() if line.strip()]


def _poisoning_loader(bad_batches):
    """The memory loader, with NaN pixels in the batches whose number (0-based, this rank) is in
    `bad_batches` (a set, or a callable number -> bool): a corrupt decode, a broken augmentation."""
    inner = memory_loader()
    is_bad = bad_batches if callable(bad_batches) else bad_batches.__contains__

    def make(data_cfg, **kwargs):
        for number, batch in enumerate(inner(data_cfg, **kwargs), start=kwargs["start_batch"]):
            if is_bad(number):
                batch.video = torch.full_like(batch.video, math.nan)
            yield batch

    return make


def _weights_finite(checkpoint: Path) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in load_file(str(checkpoint / "model.safetensors")).values()
               if t.is_floating_point())


def test_a_nan_batch_skips_its_update_counted_and_logged_as_null_and_training_goes_on(stand_in_clip, tmp_path):
    run = tmp_path / "run"
    setup = _setup(stand_in_clip, max_steps=6, save_every=3, keep_checkpoints=3, log_every=2)
    summary = run_training(setup, run, make_loader=_poisoning_loader({2}))  # batch 2 = step 3

    rows = _strict_rows(run / "metrics.jsonl")
    by_step = {row["step"]: row for row in rows}
    assert sorted(by_step) == [2, 3, 4, 6]  # the skipped step is logged although log_every is 2
    assert by_step[3]["loss"] is None and by_step[3]["grad_norm"] is None
    assert {"loss", "grad_norm"} <= set(by_step[3]["nonfinite"]) and by_step[3]["nonfinite_steps"] == 1
    for step in (4, 6):  # the weights were not poisoned: training goes on
        assert math.isfinite(by_step[step]["loss"]) and "nonfinite" not in by_step[step]
        assert by_step[step]["nonfinite_steps"] == 1
    assert summary["nonfinite_steps"] == 1 and summary["nonfinite_steps_this_session"] == [3]
    json.loads((run / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(f"bare {c}"))

    # The checkpoint due at step 3 (skipped) waited for step 4; every one holds finite weights.
    assert [step for step, _ in step_checkpoints(run)] == [4, 6]
    assert all(_weights_finite(path) for _, path in step_checkpoints(run))
    state = torch.load(latest_checkpoint(run) / STATE_NAME, weights_only=True)
    assert state["nonfinite_steps"] == 1
    adam_steps = {float(s["step"]) for s in state["optimizer"]["state"].values()}
    assert adam_steps == {5.0}  # 6 steps, one update skipped: AdamW stepped 5 times


def test_persistent_nonfinite_steps_stop_the_run_naming_the_step_and_the_last_good_checkpoint(stand_in_clip,
                                                                                            tmp_path):
    run = tmp_path / "run"
    setup = _setup(stand_in_clip, max_steps=20, save_every=2, keep_checkpoints=2, max_nonfinite_steps=3)
    with pytest.raises(NonFiniteTrainingError) as stopped:  # a JobError: the CLI exits 1
        run_training(setup, run, make_loader=_poisoning_loader(lambda number: number >= 4))  # steps 5.. NaN
    message = str(stopped.value)
    assert "stopped at step 7" in message and "from step 5" in message
    # The weights of step 4 failed on three batches: the way back is the checkpoint before them.
    assert f"last good checkpoint is {run / 'checkpoints' / 'step_00000002'}" in message
    assert [step for step, _ in step_checkpoints(run)] == [2, 4]  # none written during the streak
    assert not (run / "summary.json").exists()
    rows = _strict_rows(run / "metrics.jsonl")
    assert [row["step"] for row in rows if row.get("loss") is None] == [5, 6, 7]


def test_lr_1e6_exits_1_without_nan_checkpoints_keeping_the_last_good_one(captioned_corpus, stand_in_clip,
                                                                         tmp_path, capsys):
    """The issue's case as a user meets it: `vipstream train --lr 1e6` on real shards."""
    run = tmp_path / "run"
    code = main(_train_args(captioned_corpus, stand_in_clip, run, "--lr", "1e6", "--warmup-fraction", "0",
                            "--max-steps", "12", "--save-every", "1", "--keep-checkpoints", "1",
                            "--max-nonfinite-steps", "3"))
    err = capsys.readouterr().err
    assert code == 1, err[-3000:]
    # Step 1's update (lr 1e6) ruined the weights: step 2 on is NaN, and no checkpoint predates step 1.
    assert "training stopped at step 4: 3 consecutive steps (from step 2)" in err and "Traceback" not in err
    assert "No checkpoint from before step 1 is left: start again from --init with a lower lr" in err
    assert [step for step, _ in step_checkpoints(run)] == [1]
    for _, path in step_checkpoints(run):
        assert _weights_finite(path), path
        assert json.loads((path / "checkpoint.json").read_text())["loss_finite"] is True
    _strict_rows(run / "metrics.jsonl")


@pytest.mark.parametrize("value", ["nan", "inf", "1e999"])
def test_a_non_finite_lr_is_refused_with_exit_2(captioned_corpus, stand_in_clip, tmp_path, capsys, value):
    code = main(_train_args(captioned_corpus, stand_in_clip, tmp_path / "run", "--lr", value))
    err = capsys.readouterr().err
    assert code == 2 and "lr must be a finite number" in err, err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_only_an_fp16_scalers_gradient_overflow_on_a_finite_loss_is_not_counted_toward_the_stop():
    from train.finite import StepHealth

    assert not StepHealth(loss_finite=True, grad_finite=False).counts_toward_stop(loss_scaled=True)
    assert StepHealth(loss_finite=True, grad_finite=False).counts_toward_stop(loss_scaled=False)
    assert StepHealth(loss_finite=False, grad_finite=False).counts_toward_stop(loss_scaled=True)
    assert not StepHealth(loss_finite=True, grad_finite=True).counts_toward_stop(loss_scaled=False)


def test_json_safe_nulls_non_finite_values_and_names_them():
    row = json_safe({"loss": math.nan, "lr": 1e-3, "val": {"t2v": {"R@1": math.inf}}, "skipped": {"x": 1}})
    assert row == {"loss": None, "lr": 1e-3, "val": {"t2v": {"R@1": None}}, "skipped": {"x": 1},
                   "nonfinite": ["loss", "val/t2v/R@1"]}
    assert json_safe({"loss": 1.0}) == {"loss": 1.0}


def test_under_ddp_every_rank_takes_the_same_decision(stand_in_clip, tmp_path):
    """Two gloo ranks (torchrun): the flags are reduced, and a NaN batch on rank 1 only skips the
    same step on both ranks, whose replicas stay identical."""
    worker = Path(__file__).with_name("dist_finite_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(worker), str(stand_in_clip), str(tmp_path)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for result in ranks:
        assert result["health_when_rank1_loss_is_nan"] == [False, True]  # (loss finite, grad finite)
        assert result["health_when_rank0_grad_is_inf"] == [True, False]
        assert result["adam_steps"] == [3.0]  # 4 steps, step 2 skipped on both ranks
        assert result["nonfinite_steps"] == 1
    assert ranks[0]["weights_checksum"] == ranks[1]["weights_checksum"]
