"""The build job as a user runs it (the CLI in a subprocess): killed and resumed, and on a Ray
cluster of two nodes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import webdataset as wds

from tests.conftest import vipstream_cmd


def _build_cmd(corpus, out_dir: Path, *extra: str) -> list[str]:
    return [*vipstream_cmd(), "build", "--input", str(corpus.meta_path), "--video-root",
            str(corpus.video_root), "--output", str(out_dir), "--no-progress", *extra]


def _keys_in_shards(out_dir: Path) -> list[str]:
    tars = sorted(str(p) for p in (out_dir / "shards").glob("*.tar"))
    return [s["__key__"] for s in wds.WebDataset(tars, shardshuffle=False)]


@pytest.mark.slow
def test_build_killed_mid_way_and_rerun_ends_with_exactly_the_keys_of_a_clean_run(
        synthetic_corpus, built_corpus, tmp_path):
    clean_keys = [r["key"] for r in pq.read_table(built_corpus[0] / "manifest.parquet").to_pylist()]
    out_dir = tmp_path / "out"
    cmd = _build_cmd(synthetic_corpus, out_dir, "--videos-per-shard", "1", "--num-cpus", "1")
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not list((out_dir / "shards").glob("*.stats.json")):
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "no shard finished in time"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = list((out_dir / "shards").glob("*.stats.json"))
    assert len(finished) < 3, "the job finished before it could be killed"
    for tar in (out_dir / "shards").glob("*.tar"):  # whatever is visible is a whole tar
        with tarfile.open(tar) as handle:
            assert handle.getmembers()
    assert not (out_dir / "manifest.parquet").exists()

    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert summary["shards_skipped_as_finished"] >= 1
    assert _keys_in_shards(out_dir) == clean_keys
    assert [r["key"] for r in pq.read_table(out_dir / "manifest.parquet").to_pylist()] == clean_keys
    assert not list((out_dir / "shards").glob(".*.tmp"))


@pytest.mark.slow
def test_build_runs_on_a_two_node_ray_cluster(synthetic_corpus, built_corpus, tmp_path):
    from ray.cluster_utils import Cluster

    clean_keys = [r["key"] for r in pq.read_table(built_corpus[0] / "manifest.parquet").to_pylist()]
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        out_dir = tmp_path / "out"
        result = subprocess.run(_build_cmd(synthetic_corpus, out_dir, "--videos-per-shard", "1",
                                           "--ray-address", cluster.address),
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr
    finally:
        cluster.shutdown()
    stats = [json.loads(p.read_text()) for p in sorted((out_dir / "shards").glob("*.stats.json"))]
    assert len(stats) == 3
    assert len({s["node_id"] for s in stats}) == 2, "shards did not spread over both nodes"
    assert _keys_in_shards(out_dir) == clean_keys


def test_cli_exit_codes_say_config_error_and_nothing_succeeded(tmp_path):
    bad_config = subprocess.run([*vipstream_cmd(), "build", "--input", str(tmp_path), "--output",
                                 str(tmp_path / "o"), "--fps", "-1"], capture_output=True, text=True)
    assert bad_config.returncode == 2 and "fps must be > 0" in bad_config.stderr
    missing_input = subprocess.run([*vipstream_cmd(), "build", "--input", str(tmp_path / "nope.jsonl"),
                                    "--output", str(tmp_path / "o")], capture_output=True, text=True)
    assert missing_input.returncode == 2 and "nope.jsonl" in missing_input.stderr
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "broken.mp4").write_bytes(b"not a video")
    (tmp_path / "in" / "broken.vtt").write_text("WEBVTT\n\n00:00:00.000 --> 00:00:05.000\nhello\n")
    nothing = subprocess.run([*vipstream_cmd(), "build", "--input", str(tmp_path / "in"), "--output",
                              str(tmp_path / "o"), "--no-progress", "--num-cpus", "1"],
                             capture_output=True, text=True, timeout=300)
    assert nothing.returncode == 1, nothing.stderr
    assert json.loads(nothing.stdout)["failures_by_stage"] == {"probe": 1}
