"""`vipstream train` as a user runs it, on real shards + caption sidecars and the tiny CLIP:
torchrun DDP (gloo, 2 processes) under the launcher's run lock, SIGKILL + --resume, and the errors
raised before any process starts."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, vipstream_cmd
from train.metrics import read_metrics
from train.run_lock import run_lock
from vipstream.cli import main
from vipstream.output_lock import OutputLockedError

TINY = str(REPO_ROOT / "configs" / "tiny.yaml")


def _train_args(corpus, init: Path, output: Path, *extra: str) -> list[str]:
    out_dir, captioner = corpus
    return ["train", "--config", TINY, "--init", str(init), "--data", str(out_dir), "--captions", captioner,
            "--output", str(output), "--log-every", "1", "--progress", "false", "--loader-workers", "1",
            "--batch-size", "2", "--lr", "2e-3", "--warmup-fraction", "0.1", *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO_ROOT)}


def _losses(run: Path) -> dict[int, float]:
    return {row["step"]: row["loss"] for row in read_metrics(run) if "loss" in row}


def test_nproc_2_trains_with_ddp_and_a_sigkilled_run_resumes_to_the_same_losses(captioned_corpus, stand_in_clip,
                                                                                tmp_path):
    steps = 14
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    args = _train_args(captioned_corpus, stand_in_clip, whole, "--nproc", "2", "--max-steps", str(steps),
                       "--save-every", "4")
    done = subprocess.run(vipstream_cmd() + args, env=_env(), capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "metrics" in done.stderr and str(whole / "metrics.jsonl") in done.stderr
    losses = _losses(whole)
    assert sorted(losses) == list(range(1, steps + 1))
    first, last = sum(losses[s] for s in (1, 2, 3)) / 3, sum(losses[s] for s in (steps - 2, steps - 1, steps)) / 3
    assert last < first, losses  # a repeated tiny set is learned
    summary = (whole / "summary.json").read_text()
    assert '"world_size": 2' in summary and (whole / "checkpoints" / "step_00000014").is_dir()

    # The same run, SIGKILLed (with its torchrun and ranks) once the step-4 checkpoint exists.
    args = _train_args(captioned_corpus, stand_in_clip, killed, "--nproc", "2", "--max-steps", str(steps),
                       "--save-every", "4")
    process = subprocess.Popen(vipstream_cmd() + args, env=_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not (killed / "checkpoints" / "latest").is_file():
            assert process.poll() is None and time.monotonic() < deadline, "no checkpoint before the run ended"
            time.sleep(0.05)
        # The launcher holds the run lock for its torchrun and ranks: a second run is refused at once.
        with pytest.raises(OutputLockedError, match=f"in use by vipstream train on host .*, pid {process.pid},"):
            with run_lock(killed):
                pass
        assert main(args + ["--resume"]) == 1
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert not (killed / "summary.json").exists()
    resumed = subprocess.run(vipstream_cmd() + args + ["--resume"], env=_env(), capture_output=True, text=True,
                             timeout=400)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stderr
    assert _losses(killed) == pytest.approx(losses, rel=1e-6, abs=1e-7)


@pytest.fixture()
def unfinished_out(tmp_path) -> Path:
    """A build output whose only shard has no stats file (killed mid-build)."""
    shards = tmp_path / "unfinished" / "shards"
    shards.mkdir(parents=True)
    (shards / "000000.tar").write_bytes(b"\0" * 1024)
    return shards.parent


def test_bad_input_is_refused_before_any_process_starts(captioned_corpus, stand_in_clip, unfinished_out, tmp_path,
                                                        capsys):
    out_dir, captioner = captioned_corpus
    cases = [
        (["--data", str(tmp_path / "nowhere")], "no such folder"),
        (["--captions", "blip-large"], f"captioners present: ['{captioner}']"),
        (["--batch-size", "500"], "holds only"),
        (["--data", str(unfinished_out)], "no finished shard"),
        (["--init", str(tmp_path / "no_clip")], "--init"),
        (["--init", "tiny_clip"], "no such folder"),
        (["--loss", "infonce"], "needs one text per clip"),
    ]
    for extra, message in cases:
        code = main(_train_args(captioned_corpus, stand_in_clip, tmp_path / "run", *extra))
        err = capsys.readouterr().err
        assert code == 2 and message in err, (extra, err)
        assert not (tmp_path / "run" / "checkpoints").exists()
