"""The transcribe job as a user runs it (the CLI in a subprocess): SIGKILLed mid-job and rerun,
and on a Ray cluster of two nodes; both end with exactly the VTTs of a clean run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from pipeline.transcribe.job import run_transcribe_job
from tests.conftest import vipstream_cmd
from tests.transcription import make_av, tiny_config

VIDEOS = 6


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    """Six 3 s tone videos (each its own pitch) and one silent one."""
    folder = tmp_path_factory.mktemp("asr_small_corpus")
    for k in range(VIDEOS):
        make_av(folder / f"v{k}.mp4", 3.0, audio=f"sine=frequency={300 + 150 * k}")
    make_av(folder / "quiet.mp4", 3.0, audio="anullsrc")
    return folder


@pytest.fixture(scope="module")
def clean_run(small_corpus, tiny_whisper, ray_local, tmp_path_factory):
    """An uninterrupted run, in process: {vtt name: bytes}."""
    out = tmp_path_factory.mktemp("asr_clean") / "asr"
    summary = run_transcribe_job(small_corpus, out, tiny_config(tiny_whisper, batch_size=1), progress=False)
    assert summary["videos_transcribed"] == VIDEOS and summary["videos_failed"] == 1
    return {p.name: p.read_bytes() for p in sorted((out / "subtitles").glob("*.vtt"))}


def _config_file(folder: Path, model: Path, **overrides) -> Path:
    cfg = tiny_config(model, batch_size=1, **overrides)
    values = {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.__dict__.items()}
    path = folder / "transcribe.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def _vtts(out: Path) -> list[Path]:
    return sorted((out / "subtitles").glob("*.vtt")) if (out / "subtitles").is_dir() else []


def _cli(corpus: Path, out: Path, config: Path, *extra: str) -> list[str]:
    return [*vipstream_cmd(), "transcribe", "--input", str(corpus), "--output", str(out), "--config", str(config),
            "--no-progress", *extra]


@pytest.mark.slow
def test_killed_mid_job_and_rerun_it_ends_with_the_vtts_of_a_clean_run_and_no_duplicates(
        small_corpus, tiny_whisper, clean_run, tmp_path):
    out = tmp_path / "asr"
    config = _config_file(tmp_path, tiny_whisper)
    proc = subprocess.Popen(_cli(small_corpus, out, config, "--ray-num-cpus", "2"), start_new_session=True,
                            env={**os.environ, "RAY_ADDRESS": "local"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not _vtts(out):
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "no VTT appeared in time"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before_kill = {p.name for p in (out / "subtitles").glob("*.vtt")}
    assert len(done_before_kill) < VIDEOS, "the job finished before it could be killed"
    assert not (out / "manifest.jsonl").exists()  # written at the end of a run only
    for name in done_before_kill:  # what is visible is whole
        assert (out / "subtitles" / name).read_bytes() == clean_run[name]

    rerun = subprocess.run(_cli(small_corpus, out, config), capture_output=True, text=True, timeout=600,
                           env={**os.environ, "RAY_ADDRESS": "local"})
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    summary = json.loads(rerun.stdout)
    assert summary["videos_skipped_as_done"] == len(done_before_kill)
    assert summary["videos_transcribed"] + summary["videos_skipped_as_done"] == VIDEOS
    assert {p.name: p.read_bytes() for p in (out / "subtitles").glob("*.vtt")} == clean_run
    assert not list(out.rglob(".*.tmp"))
    ids = [json.loads(line)["video_id"] for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted(ids) == sorted({*(f"v{k}" for k in range(VIDEOS)), "quiet"})  # each video once
    assert summary["videos_failed"] == 1


@pytest.mark.slow
def test_transcribe_runs_on_a_two_node_ray_cluster(small_corpus, tiny_whisper, clean_run, tmp_path):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        out = tmp_path / "asr"
        done = subprocess.run(_cli(small_corpus, out, _config_file(tmp_path, tiny_whisper), "--ray-address",
                                   cluster.address), capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    finally:
        cluster.shutdown()
    summary = json.loads(done.stdout)
    # one ASR actor holds one node's only CPU, so every decode task ran on the other node
    assert summary["ray_nodes"] == {"decode": 1, "asr": 1, "all": 2}
    assert {p.name: p.read_bytes() for p in (out / "subtitles").glob("*.vtt")} == clean_run
