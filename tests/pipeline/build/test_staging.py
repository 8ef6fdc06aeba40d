"""pipeline/build/staging.py and remote sources in a build: fsspec URIs are copied locally for ffmpeg,
protocols outside `remote_protocols` are refused as error rows."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from pipeline.build.config import PipelineConfig
from pipeline.build.jobs import run_build
from pipeline.build.staging import local_copy, uri_protocol
from pipeline.errors import StageError
from tests.media import make_video


def test_uri_protocol_tells_uris_from_local_paths():
    assert uri_protocol("s3://bucket/a.mp4") == "s3"
    assert uri_protocol("gcs://b/x") == "gcs"
    assert uri_protocol("/data/a.mp4") is None and uri_protocol("videos/a:b.mp4") is None


def test_local_copy_fetches_a_uri_and_deletes_the_copy_afterwards(tmp_path):
    source = tmp_path / "a.b-c.mp4"
    source.write_bytes(b"video bytes")
    with local_copy(source.as_uri(), ("file",), max_bytes=100) as local:
        assert local != str(source) and open(local, "rb").read() == b"video bytes"
        assert local.endswith(".mp4")
    assert not __import__("os").path.exists(local)
    with local_copy(str(source), ("file",), max_bytes=100) as local:
        assert local == str(source)  # a local path is used in place


def test_local_copy_refuses_other_protocols_large_and_missing_files(tmp_path):
    source = tmp_path / "a.mp4"
    source.write_bytes(b"x" * 50)
    for uri, reason in [("https://example.com/a.mp4", "protocol 'https' is not allowed"),
                        (source.as_uri(), "over max_source_bytes=10"),
                        ((tmp_path / "nope.mp4").as_uri(), "not found")]:
        with pytest.raises(StageError, match=reason) as caught:
            with local_copy(uri, ("file",), max_bytes=10 if "over" in reason else 100):
                pass
        assert caught.value.stage == "fetch"


def test_a_manifest_of_uris_builds_like_local_files(ray_local, tmp_path):
    (tmp_path / "remote").mkdir()
    video = make_video(tmp_path / "remote" / "v.mp4", seconds=6)
    (tmp_path / "remote" / "v.vtt").write_text("WEBVTT\n\n00:00:00.000 --> 00:00:05.000\nA fetched clip.\n")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(json.dumps(r) for r in [
        {"video_id": "v", "path": video.as_uri(), "subtitles": (tmp_path / "remote" / "v.vtt").as_uri()},
        {"video_id": "web", "path": "https://example.com/w.mp4", "subtitles": "https://example.com/w.vtt"},
    ]) + "\n")
    summary = run_build(manifest, tmp_path / "out", PipelineConfig(), progress=False)
    rows = pq.read_table(tmp_path / "out" / "manifest.parquet").to_pylist()
    assert summary["clips"] == 1 and rows[0]["subtitle"] == "A fetched clip."
    (error,) = pq.read_table(tmp_path / "out" / "errors.parquet").to_pylist()
    assert error["video_id"] == "web" and error["stage"] == "fetch" and "https" in error["reason"]
