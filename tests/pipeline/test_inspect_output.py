"""pipeline/inspect_output.py and `vipstream inspect`: shards, clips, errors and each captioner's
coverage, from metadata only. Sidecars are written by the job's own SidecarWriter (no Ray)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.caption.job import CAPTIONER_FILENAME
from pipeline.caption.sidecars import SidecarWriter
from pipeline.caption.stages import SAMPLE
from pipeline.inspect_output import format_report, inspect_output
from tests.captioning import write_caption_shards
from vipstream.config import ConfigError
from vipstream.schema import caption_sidecar_path, captions_dir, shard_stats_path

REPO_ROOT = Path(__file__).resolve().parents[2]


def _caption_rows(shard: int, keys: list[str], bad: set[int] = frozenset()) -> list[dict]:
    return [{"shard": shard, "shard_total": len(keys), "sample_index": i, "kind": SAMPLE, "key": k,
             "video_id": k.rsplit("_", 1)[0], "clip_id": k, "caption": f"caption of {k}", "frame_index": 3,
             "frame_time_s": 1.0, "error_stage": "decode" if i in bad else "",
             "error_reason": "expected a decodable mp4 clip" if i in bad else ""}
            for i, k in enumerate(keys)]


@pytest.fixture
def output(tmp_path) -> Path:
    """4 finished shards of 2 clips + 1 unfinished; captioner 'full' covers all, 'half' shards 0-1
    with one decode error."""
    out = tmp_path / "out"
    keys = write_caption_shards(out, [2, 2, 2, 2, 1], clip=b"unused", unfinished={4})
    by_shard = [keys[i * 2:i * 2 + 2] for i in range(4)]
    for captioner_id, shards, bad in (("full", range(4), {}), ("half", range(2), {1: {0}})):
        captions_dir(out, captioner_id).mkdir(parents=True)
        (captions_dir(out, captioner_id) / CAPTIONER_FILENAME).write_text(
            json.dumps({"model": f"models/{captioner_id}", "generation": {"num_beams": 1}}))
        writer = SidecarWriter(out, captioner_id)
        for shard in shards:
            writer.add(_caption_rows(shard, by_shard[shard], bad.get(shard, set())))
    pq.write_table(pa.Table.from_pylist([{"video_id": "x", "clip_id": None, "stage": "probe", "reason": "r",
                                          "source": None, "line": None}] * 2), out / "errors.parquet")
    return out


def test_report_counts_shards_clips_errors_and_captioner_coverage(output):
    report = inspect_output(output)
    assert report["shards_finished"] == 4 and report["shards_unfinished"] == [4]
    assert report["clips"] == 8 and report["clips_source"] == "stats"
    assert report["errors_by_stage"] == {"probe": 2}
    full, half = report["captioners"]
    assert (full["captioner_id"], full["captions"], full["coverage"], full["shards_covered"]) == ("full", 8, 1.0, 4)
    assert (half["captioner_id"], half["captions"], half["coverage"], half["shards_covered"]) == ("half", 3, 0.375, 2)
    assert half["shards_missing"] == [2, 3] and half["errors_by_stage"] == {"decode": 1}
    assert full["model"] == "models/full"
    text = format_report(report)
    assert "4 finished, 1 unfinished" in text
    assert any(line.split()[:3] == ["half", "models/half", "3"] and "37.5%" in line and "2/4" in line
               for line in text.splitlines())


def test_clips_come_from_the_manifest_when_present_and_stale_sidecars_are_flagged(output):
    pq.write_table(pa.table({"key": [f"k{i}" for i in range(10)]}), output / "manifest.parquet")
    later = time.time() + 10
    os.utime(shard_stats_path(output, 1), (later, later))  # shard 1 rebuilt after captioning
    report = inspect_output(output)
    assert report["clips"] == 10 and report["clips_source"] == "manifest.parquet"
    assert report["captioners"][0]["coverage"] == 0.8
    assert report["captioners"][0]["stale_sidecars"] == [1]
    assert "rebuilt since" in format_report(report)


@pytest.mark.parametrize("damage", ["random_bytes", "zero_bytes", "frame_index_null", "invalid_utf8"])
def test_a_broken_sidecar_is_reported_not_counted_and_does_not_crash(output, damage):
    """Issue 15.3: inspect crashed on a corrupt sidecar."""
    from tests.sidecar_damage import DAMAGES, damage_sidecar

    damage_sidecar(caption_sidecar_path(output, "full", 1), damage)
    report = inspect_output(output)
    full = report["captioners"][0]
    assert full["captions"] == 6 and full["shards_covered"] == 3
    assert list(full["bad_sidecars"]) == ["000001"] and DAMAGES[damage] in full["bad_sidecars"]["000001"]
    assert any(line.startswith("warning: full: sidecar 000001 is unusable") for line in format_report(report).splitlines())


def test_an_output_without_captions_or_shards(tmp_path, output):
    for path in (captions_dir(output, "full"), captions_dir(output, "half")):
        for child in path.iterdir():
            child.unlink()
        path.rmdir()
    assert "captions   none" in format_report(inspect_output(output))
    with pytest.raises(ConfigError, match="does not exist"):
        inspect_output(tmp_path / "nowhere")
    (tmp_path / "not_a_build").mkdir()
    with pytest.raises(ConfigError, match="shards/"):
        inspect_output(tmp_path / "not_a_build")


def test_cli_inspect_prints_the_table_and_json(output):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    table = subprocess.run([sys.executable, "-m", "vipstream.cli", "inspect", str(output)], cwd=REPO_ROOT,
                           env=env, capture_output=True, text=True, timeout=60)
    assert table.returncode == 0, table.stderr
    assert "coverage" in table.stdout and "100.0%" in table.stdout
    as_json = subprocess.run([sys.executable, "-m", "vipstream.cli", "inspect", str(output), "--json"],
                             cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert json.loads(as_json.stdout)["captioners"][1]["captions"] == 3
    assert caption_sidecar_path(output, "half", 0).exists()
