"""`vipstream build --captioner`: the corpus builder's real shards captioned in one go."""

from __future__ import annotations

import json
import subprocess

import pyarrow.parquet as pq
import pytest

from tests.conftest import vipstream_cmd


def _build(corpus, out_dir, *extra):
    return subprocess.run([*vipstream_cmd(), "build", "--input", str(corpus.meta_path), "--video-root",
                           str(corpus.video_root), "--output", str(out_dir), "--no-progress",
                           "--videos-per-shard", "2", *extra], capture_output=True, text=True, timeout=600)


def test_a_captioner_that_cannot_load_fails_the_build_before_any_work(synthetic_corpus, tmp_path):
    result = _build(synthetic_corpus, tmp_path / "out", "--captioner", str(tmp_path / "no-such-model"))
    assert result.returncode == 2
    assert "no-such-model" in result.stderr
    assert not list((tmp_path / "out").glob("shards/*.tar"))


@pytest.mark.slow
def test_build_with_captioner_captions_every_clip_and_inspect_reports_full_coverage(
        synthetic_corpus, tiny_blip, tmp_path):
    out_dir = tmp_path / "out"
    result = _build(synthetic_corpus, out_dir, "--captioner", str(tiny_blip))
    assert result.returncode == 0, result.stderr
    keys = [r["key"] for r in pq.read_table(out_dir / "manifest.parquet").to_pylist()]
    sidecars = sorted((out_dir / "captions").glob("*/*[0-9].parquet"))
    assert len(sidecars) == 2
    rows = [r for path in sidecars for r in pq.read_table(path).to_pylist()]
    assert sorted(r["key"] for r in rows) == sorted(keys)
    assert all(isinstance(r["caption"], str) for r in rows)
    report = subprocess.run([*vipstream_cmd(), "inspect", str(out_dir), "--json"],
                            capture_output=True, text=True, check=True)
    captioners = json.loads(report.stdout)["captioners"]
    assert len(captioners) == 1
    (entry,) = captioners.values() if isinstance(captioners, dict) else captioners
    assert entry["captions"] == len(keys) and entry["coverage"] == pytest.approx(1.0)
