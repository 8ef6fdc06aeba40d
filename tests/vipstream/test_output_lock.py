"""vipstream/output_lock.py: one writer per output. A second `vipstream build` into a locked OUT is
refused at once naming the holder, before it touches anything; a SIGKILLed holder leaves no lock;
a caption run locks its captioner's folder; `build --overwrite` never pulls a folder from under a
running caption job."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipeline.builder.config import PipelineConfig
from pipeline.builder.jobs import run_build
from pipeline.caption.captioner import CaptionerConfig
from pipeline.caption.job import run_caption_job
from vipstream.output_lock import BUILD_LOCK_FILENAME, CAPTION_LOCK_FILENAME, OutputLockedError, output_lock
from pipeline.ray_session import AUTH_NOTE
from tests.conftest import REPO_ROOT, vipstream_cmd
from tests.media import make_video


def _hold_lock_in_another_process(lock_path: Path, job: str = "vipstream build") -> subprocess.Popen:
    """A real process holding `lock_path` (as a running job would) until it is killed."""
    code = textwrap.dedent(f"""
        import sys, time
        from vipstream.output_lock import output_lock
        with output_lock({str(lock_path)!r}, {job!r}):
            print("locked", flush=True)
            time.sleep(600)
    """)
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def _kill(holder: subprocess.Popen) -> None:
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)


def test_a_second_lock_is_refused_naming_the_holder_and_freed_on_exit(tmp_path):
    lock = tmp_path / "out" / BUILD_LOCK_FILENAME
    with output_lock(lock, "vipstream build"):
        holder = json.loads(lock.read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(OutputLockedError) as refused:  # flock is per open file: same process too
            with output_lock(lock, "vipstream build"):
                pass
        message = str(refused.value)
        assert f"pid {os.getpid()}" in message and socket.gethostname() in message
        assert holder["started"] in message and str(tmp_path / "out") in message
    with output_lock(lock, "vipstream build"):  # released on exit
        pass


def test_a_sigkilled_holder_leaves_no_lock(tmp_path):
    lock = tmp_path / CAPTION_LOCK_FILENAME
    holder = _hold_lock_in_another_process(lock, "vipstream caption")
    try:
        with pytest.raises(OutputLockedError, match=f"vipstream caption on host .*, pid {holder.pid}"):
            with output_lock(lock, "vipstream caption"):
                pass
    finally:
        _kill(holder)
    assert lock.exists()  # the file stays (naming the last holder); the flock died with its process
    with output_lock(lock, "vipstream caption"):
        assert json.loads(lock.read_text())["pid"] == os.getpid()


def _one_video_manifest(tmp_path: Path) -> Path:
    (tmp_path / "src").mkdir()
    video = make_video(tmp_path / "src" / "v.mp4", seconds=4)
    (tmp_path / "src" / "v.vtt").write_text("WEBVTT\n\n00:00:00.000 --> 00:00:03.500\nA locked clip.\n")
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text(json.dumps({"video_id": "v", "path": str(video)}) + "\n")
    return manifest


@pytest.mark.slow
def test_a_second_build_into_a_locked_output_is_refused_at_once_and_runs_once_the_holder_is_killed(tmp_path):
    manifest = _one_video_manifest(tmp_path)
    out_dir = tmp_path / "out"
    (out_dir / "shards").mkdir(parents=True)
    in_progress = out_dir / "shards" / ".000000.tar.1234abcd.tmp"  # the holder's shard being written
    in_progress.write_bytes(b"half a tar")
    command = [*vipstream_cmd(), "build", "--input", str(manifest), "--output", str(out_dir), "--no-progress",
               "--num-cpus", "2"]
    holder = _hold_lock_in_another_process(out_dir / BUILD_LOCK_FILENAME)
    try:
        refused = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert refused.returncode == 1, refused.stderr
        assert f"in use by vipstream build on host {socket.gethostname()}, pid {holder.pid}, started" in refused.stderr
        assert in_progress.exists()  # refused before the clean-up of temporaries
        assert "Traceback" not in refused.stderr and "Started a local Ray" not in refused.stderr
    finally:
        _kill(holder)
    # As a user's shell runs it: not with the RAY_AUTH_MODE an in-process Ray of this session set.
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    built = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert built.returncode == 0, built.stderr
    assert json.loads(built.stdout)["clips"] == 1
    # Ray's token-auth warning is said once in our words (pipeline/ray_session.py), not Ray's.
    assert AUTH_NOTE in built.stderr and "Token authentication is enabled" not in built.stderr
    assert not in_progress.exists()  # now a stale temporary, cleaned up by the lock's new holder


def test_a_caption_run_on_a_locked_captioner_id_is_refused(built_corpus, tiny_blip, tmp_path):
    source, _ = built_corpus
    out_dir = tmp_path / "out"
    shutil.copytree(source / "shards", out_dir / "shards")
    folder = out_dir / "captions" / "locked-id"
    holder = _hold_lock_in_another_process(folder / CAPTION_LOCK_FILENAME, "vipstream caption")
    try:
        stale = folder / ".000000.parquet.abcd1234.tmp"  # the holder's sidecar being written
        stale.write_bytes(b"rows")
        with pytest.raises(OutputLockedError, match=f"vipstream caption on host .*, pid {holder.pid}"):
            run_caption_job(out_dir, CaptionerConfig(captioner=str(tiny_blip), captioner_id="locked-id"),
                            progress=False)
        assert stale.exists()
    finally:
        _kill(holder)


def test_overwrite_refuses_to_remove_the_sidecars_a_caption_run_is_writing(built_corpus, synthetic_corpus, tmp_path):
    source, _ = built_corpus
    out_dir = tmp_path / "out"
    shutil.copytree(source, out_dir)
    holder = _hold_lock_in_another_process(out_dir / "captions" / "busy" / CAPTION_LOCK_FILENAME,
                                           "vipstream caption")
    tars = sorted(p.name for p in (out_dir / "shards").iterdir())
    try:
        with pytest.raises(OutputLockedError, match=f"captions/busy is in use by vipstream caption .*pid {holder.pid}"):
            run_build(synthetic_corpus.meta_path, out_dir, PipelineConfig(videos_per_shard=3),
                      video_root=synthetic_corpus.video_root, overwrite=True, progress=False)
        assert sorted(p.name for p in (out_dir / "shards").iterdir()) == tars  # nothing removed
    finally:
        _kill(holder)


def test_inspect_reads_an_output_whose_build_and_caption_runs_hold_their_locks(built_corpus, tmp_path):
    from pipeline.inspect_output import inspect_output

    source, summary = built_corpus
    out_dir = tmp_path / "out"
    shutil.copytree(source, out_dir)
    with output_lock(out_dir / BUILD_LOCK_FILENAME, "vipstream build"), \
            output_lock(out_dir / "captions" / "busy" / CAPTION_LOCK_FILENAME, "vipstream caption"):
        assert inspect_output(out_dir)["clips"] == summary["clips"]
