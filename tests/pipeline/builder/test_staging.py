"""pipeline/builder/staging.py and remote sources in a build: fsspec URIs are copied locally for ffmpeg,
protocols outside `remote_protocols` are refused as error rows."""

from __future__ import annotations

import json
import threading
import time

import fsspec
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.local import LocalFileSystem

from pipeline.builder.build_shard import build_shard
from pipeline.builder.config import PipelineConfig
from pipeline.builder.jobs import run_build
from pipeline.builder.manifest import VideoEntry
from pipeline.builder.staging import local_copy, uri_protocol
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


# ---------------------------------------------------------------- a stalled object store

class _StallingFileSystem(LocalFileSystem):
    """A real fsspec filesystem ("stalltest://" over local files) whose reads of any file named
    stalled* block until `released` is set: an object store that accepted the request and then
    went silent. Metadata calls answer at once, as a store's HEAD would."""

    protocol = ("stalltest",)
    released = threading.Event()

    def _open(self, path, mode="rb", block_size=None, **kwargs):
        handle = super()._open(path, mode, block_size, **kwargs)
        if not str(path).rsplit("/", 1)[-1].startswith("stalled"):
            return handle
        released = self.released

        class _Stalled:
            def read(self, size=-1):
                released.wait()
                return handle.read(size)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                handle.close()

        return _Stalled()


@pytest.fixture
def stalling_store():
    fsspec.register_implementation("stalltest", _StallingFileSystem, clobber=True)
    _StallingFileSystem.released.clear()
    yield "stalltest"
    _StallingFileSystem.released.set()  # let the abandoned copy threads finish


def test_a_stalled_remote_copy_hits_its_deadline(tmp_path, stalling_store):
    (tmp_path / "stalled.mp4").write_bytes(b"video bytes")
    (tmp_path / "fine.mp4").write_bytes(b"video bytes")
    started = time.monotonic()
    with pytest.raises(StageError, match=r"did not finish within source_fetch_timeout_s=1 s") as caught:
        with local_copy(f"stalltest://{tmp_path}/stalled.mp4", ("stalltest",), max_bytes=100, timeout_s=1):
            pass
    assert time.monotonic() - started < 10 and caught.value.stage == "fetch"
    with local_copy(f"stalltest://{tmp_path}/fine.mp4", ("stalltest",), max_bytes=100, timeout_s=5) as local:
        assert open(local, "rb").read() == b"video bytes"


def test_a_video_on_a_stalled_store_becomes_an_error_row_and_its_neighbour_is_built(tmp_path, stalling_store):
    (tmp_path / "remote").mkdir()
    for name in ("stalled", "fine"):
        make_video(tmp_path / "remote" / f"{name}.mp4", seconds=5)
        (tmp_path / "remote" / f"{name}.vtt").write_text("WEBVTT\n\n00:00:00.000 --> 00:00:04.500\nA clip.\n")
    entries = [VideoEntry(name, f"stalltest://{tmp_path}/remote/{name}.mp4",
                          subtitles=f"stalltest://{tmp_path}/remote/{name}.vtt") for name in ("stalled", "fine")]
    cfg = PipelineConfig(remote_protocols=("stalltest",), source_fetch_timeout_s=2)
    started = time.monotonic()
    stats = build_shard(entries, 0, str(tmp_path / "out"), cfg)  # the shard task's body, as Ray runs it
    assert time.monotonic() - started < 60
    (error,) = stats["errors"]
    assert error["video_id"] == "stalled" and error["stage"] == "fetch"
    assert "source_fetch_timeout_s=2" in error["reason"] and error["source"].endswith("stalled.mp4")
    assert stats["clips"] == 1 and stats["rows"][0]["video_id"] == "fine"


def test_the_fetch_deadline_is_a_documented_config_key():
    assert PipelineConfig().source_fetch_timeout_s == 1800
    with pytest.raises(Exception, match="source_fetch_timeout_s must be > 0"):
        PipelineConfig(source_fetch_timeout_s=0).validate()
