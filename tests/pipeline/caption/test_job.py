"""pipeline/caption/job.py on a real local Ray with tiny random-init captioners loaded by path:
one sidecar row per clip, reruns, a second captioner, bad clips and shards, and a kill + resume of
the CLI in a subprocess."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.caption.captioner import Captioner, CaptionerConfig, CaptionerLoadError, middle_frame
from pipeline.caption.job import CAPTIONER_FILENAME, run_caption_job
from pipeline.caption.sidecars import SidecarWriter
from pipeline.caption.stages import read_and_decode_shard
from tests.captioning import make_clip_bytes, write_caption_shards
from vipstream.config import ConfigError
from vipstream.schema import CAPTION_COLUMNS, ERROR_COLUMNS, caption_sidecar_path, captions_dir, shard_tar_path

REPO_ROOT = Path(__file__).resolve().parents[3]
#: shards 0-2 finished (shard 1 holds a corrupt clip), shard 3 unfinished (no stats file).
CLIPS_PER_SHARD = [3, 4, 3, 2]
CORRUPT = {1: {2}}
UNFINISHED = 3


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _captions(out_dir: Path, captioner_id: str, shard: int) -> list[tuple[str, str, int]]:
    table = pq.read_table(caption_sidecar_path(out_dir, captioner_id, shard))
    return [(r["key"], r["caption"], r["frame_index"]) for r in table.to_pylist()]


def _shard_corpus(out_dir: Path, tmp_dir: Path, clips_per_shard: list[int], **kwargs) -> list[str]:
    """Shards alternating two real clips (different lengths, so different middle frames)."""
    short, long = make_clip_bytes(tmp_dir, "short", seconds=2.0), make_clip_bytes(tmp_dir, "long", seconds=3.0)
    extra = {(s, i): long for s, n in enumerate(clips_per_shard) for i in range(n) if i % 2}
    return write_caption_shards(out_dir, clips_per_shard, clip=short, extra_clips=extra, **kwargs)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, list[str]]:
    """A build output as the corpus builder leaves it (see CLIPS_PER_SHARD)."""
    root = tmp_path_factory.mktemp("caption_corpus")
    out_dir = root / "out"
    keys = _shard_corpus(out_dir, root, CLIPS_PER_SHARD, corrupt=CORRUPT, unfinished={UNFINISHED})
    return out_dir, keys


@pytest.fixture(scope="module")
def blip_run(corpus, tiny_blip, ray_local) -> dict:
    out_dir, _ = corpus
    cfg = CaptionerConfig(captioner=str(tiny_blip), captioner_id="blip", batch_size=2, max_new_tokens=8)
    return run_caption_job(out_dir, cfg, progress=False)


def _keys_of_shard(keys: list[str], shard: int) -> list[str]:
    start = sum(CLIPS_PER_SHARD[:shard])
    return keys[start:start + CLIPS_PER_SHARD[shard]]


def test_every_decodable_clip_of_a_finished_shard_gets_exactly_one_caption_row(corpus, blip_run):
    out_dir, keys = corpus
    for shard in (0, 1, 2):
        table = pq.read_table(caption_sidecar_path(out_dir, "blip", shard))
        assert tuple(table.column_names) == CAPTION_COLUMNS
        rows = table.to_pylist()
        expected = [k for i, k in enumerate(_keys_of_shard(keys, shard)) if i not in CORRUPT.get(shard, set())]
        assert [r["key"] for r in rows] == expected
        assert all(r["caption"] and r["captioner"] == "blip" for r in rows)
        # 2 s clips at 3 fps: 6 frames -> index 3 at 1.0 s; 3 s clips: 9 frames -> index 4 at 1.33 s
        assert {(r["frame_index"], round(r["frame_time_s"], 2)) for r in rows} == {(3, 1.0), (4, 1.33)}
    assert not caption_sidecar_path(out_dir, "blip", UNFINISHED).exists()
    assert blip_run["shards"] == 3 and blip_run["shards_captioned"] == 3
    assert blip_run["shards_skipped_as_unfinished"] == 1
    assert blip_run["captions"] == 3 + 3 + 3
    info = json.loads((captions_dir(out_dir, "blip") / CAPTIONER_FILENAME).read_text())
    assert info["generation"]["max_new_tokens"] == 8 and info["generation"]["num_beams"] == 1
    assert info["model_type"] == "blip"


def test_a_corrupt_clip_becomes_an_error_row_and_its_neighbours_are_captioned(corpus, blip_run):
    out_dir, keys = corpus
    errors = pq.read_table(captions_dir(out_dir, "blip") / "errors.parquet")
    assert tuple(errors.column_names) == ERROR_COLUMNS
    [error] = errors.to_pylist()
    bad_key = _keys_of_shard(keys, 1)[2]
    assert error["stage"] == "decode" and error["clip_id"] == bad_key
    assert error["video_id"] == "vid1x1" and error["source"] == f"shards/000001.tar#{bad_key}"
    assert "decodable mp4" in error["reason"]
    assert blip_run["errors_by_stage"] == {"decode": 1} and blip_run["shards_failed"] == 0
    assert len(_captions(out_dir, "blip", 1)) == CLIPS_PER_SHARD[1] - 1


def test_an_unreadable_tar_is_one_read_error_row_and_gets_no_sidecar(tmp_path):
    (tmp_path / "shards").mkdir()
    bad = shard_tar_path(tmp_path, 7)
    bad.write_bytes(b"this is not a tar archive" * 40)
    rows = list(read_and_decode_shard({"shard": 7, "path": str(bad)}))
    assert len(rows) == 1 and rows[0]["error_stage"] == "read" and "readable tar" in rows[0]["error_reason"]
    writer = SidecarWriter(tmp_path, "c")
    captions_dir(tmp_path, "c").mkdir(parents=True)
    writer.add([{**rows[0], "caption": ""}])
    assert writer.failed == {7} and not caption_sidecar_path(tmp_path, "c", 7).exists()
    [error] = pq.read_table(captions_dir(tmp_path, "c") / "errors.parquet").to_pylist()
    assert error["source"] == "shards/000007.tar" and error["stage"] == "read"


def test_shard_rows_are_read_from_mp4_and_json_members_only_and_counted_up_front(tmp_path, clip_mp4):
    import webdataset as wds

    (tmp_path / "shards").mkdir()
    tar = shard_tar_path(tmp_path, 0)
    with wds.TarWriter(str(tar)) as writer:
        writer.write({"__key__": "a_0000", "mp4": clip_mp4, "json": b'{"video_id": "a", "clip_id": "a.0"}',
                      "pickle": b"never unpickled"})
        writer.write({"__key__": "b_0001", "json": b"{}"})
    rows = list(read_and_decode_shard({"shard": 0, "path": str(tar)}))
    assert [(r["key"], r["shard_total"], r["sample_index"]) for r in rows] == [("a_0000", 2, 0), ("b_0001", 2, 1)]
    assert rows[0]["video_id"] == "a" and rows[0]["frame_index"] == 3 and not rows[0]["error_stage"]
    assert rows[0]["height"] == 224 and len(rows[0]["frame"]) == 224 * 398 * 3 and "mp4" not in rows[0]
    assert rows[1]["error_stage"] == "read" and "expected a mp4 member" in rows[1]["error_reason"]


def test_rerun_skips_captioned_shards_and_overwrite_regenerates_identical_captions(corpus, blip_run, tiny_blip):
    out_dir, _ = corpus
    before = {s: _captions(out_dir, "blip", s) for s in (0, 1, 2)}
    cfg = CaptionerConfig(captioner=str(tiny_blip), captioner_id="blip", batch_size=2, max_new_tokens=8)
    rerun = run_caption_job(out_dir, cfg, progress=False)
    assert rerun["shards_skipped_as_done"] == 3 and rerun["captions"] == 0 and rerun["job_s"] == 0
    redo = run_caption_job(out_dir, dataclasses.replace(cfg, overwrite=True, batch_size=3), progress=False)
    assert redo["shards_captioned"] == 3 and redo["captions"] == 9
    assert {s: _captions(out_dir, "blip", s) for s in (0, 1, 2)} == before
    errors = pq.read_table(captions_dir(out_dir, "blip") / "errors.parquet").to_pylist()
    assert len(errors) == 1, "errors of a redone shard replace its old ones"


def test_an_unreadable_or_schema_invalid_sidecar_is_not_done_and_is_redone(corpus, blip_run, tiny_blip, tmp_path):
    """Issue 15.3: a corrupt sidecar used to count as done, forever."""
    import shutil

    from tests.sidecar_damage import damage_sidecar

    source, _ = corpus
    out_dir = tmp_path / "out"
    shutil.copytree(source, out_dir)
    before = {s: _captions(out_dir, "blip", s) for s in (0, 1, 2)}
    damage_sidecar(caption_sidecar_path(out_dir, "blip", 0), "random_bytes")
    damage_sidecar(caption_sidecar_path(out_dir, "blip", 2), "frame_index_string")
    cfg = CaptionerConfig(captioner=str(tiny_blip), captioner_id="blip", batch_size=2, max_new_tokens=8)
    rerun = run_caption_job(out_dir, cfg, progress=False)
    assert rerun["shards_captioned"] == 2 and rerun["shards_skipped_as_done"] == 1
    assert {s: _captions(out_dir, "blip", s) for s in (0, 1, 2)} == before  # readable, the same rows
    for shard in (0, 2):
        assert pq.read_schema(caption_sidecar_path(out_dir, "blip", shard)).field("frame_index").type == "int32"


def test_a_second_captioner_leaves_tars_byte_identical_and_the_first_sidecars_intact(
        corpus, blip_run, tiny_vit_gpt2):
    out_dir, keys = corpus
    tars = {p: _sha256(p) for p in sorted((out_dir / "shards").iterdir())}
    first = {s: _sha256(caption_sidecar_path(out_dir, "blip", s)) for s in (0, 1, 2)}
    cfg = CaptionerConfig(captioner=str(tiny_vit_gpt2), batch_size=4, max_new_tokens=5)
    summary = run_caption_job(out_dir, cfg, progress=False)
    assert summary["captioner_id"] == "tiny-vit-gpt2-greedy-t5"
    assert summary["captions"] == 9
    assert {p: _sha256(p) for p in sorted((out_dir / "shards").iterdir())} == tars
    assert {s: _sha256(caption_sidecar_path(out_dir, "blip", s)) for s in (0, 1, 2)} == first
    second = [k for s in (0, 1, 2) for k, caption, _ in _captions(out_dir, summary["captioner_id"], s)]
    assert second == [k for s in (0, 1, 2) for k, _, _ in _captions(out_dir, "blip", s)]


def test_an_id_holding_another_captioner_is_refused_before_any_work(corpus, blip_run, tiny_vit_gpt2):
    out_dir, _ = corpus
    with pytest.raises(ConfigError, match="--captioner-id"):
        run_caption_job(out_dir, CaptionerConfig(captioner=str(tiny_vit_gpt2), captioner_id="blip"), progress=False)


def test_an_unloadable_captioner_fails_fast_naming_the_model_before_any_output(corpus, tmp_path):
    out_dir, _ = corpus
    before = sorted(p.name for p in (out_dir / "captions").iterdir())
    with pytest.raises(CaptionerLoadError, match="no-such-captioner"):
        run_caption_job(out_dir, CaptionerConfig(captioner=str(tmp_path / "no-such-captioner")), progress=False)
    assert sorted(p.name for p in (out_dir / "captions").iterdir()) == before


def test_missing_empty_and_all_unfinished_shard_dirs_are_clear_config_errors(tmp_path, tiny_blip, clip_mp4):
    cfg = CaptionerConfig(captioner=str(tiny_blip))
    with pytest.raises(ConfigError, match="does not exist"):
        run_caption_job(tmp_path / "nowhere", cfg, progress=False)
    (tmp_path / "empty" / "shards").mkdir(parents=True)
    with pytest.raises(ConfigError, match="no shards"):
        run_caption_job(tmp_path / "empty", cfg, progress=False)
    write_caption_shards(tmp_path / "building", [1], clip=clip_mp4, unfinished={0})
    with pytest.raises(ConfigError, match="unfinished"):
        run_caption_job(tmp_path / "building" / "shards", cfg, progress=False)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "vipstream.cli", "caption", *args]


def _cli_env() -> dict[str, str]:
    # A fresh local Ray for the subprocess, never a cluster someone else left in /tmp/ray.
    return {**os.environ, "RAY_ADDRESS": "local", "PYTHONPATH": str(REPO_ROOT)}


def test_cli_killed_after_the_first_sidecar_resumes_to_one_row_per_clip_as_a_clean_run(
        tmp_path, tiny_blip, ray_local):
    clips = [3] * 6
    keys = _shard_corpus(tmp_path / "out", tmp_path, clips)
    args = ["--captioner", str(tiny_blip), "--captioner-id", "blip", "--batch-size", "1",
            "--max-new-tokens", "8", "--ray-num-cpus", "2", "--no-progress"]
    proc = subprocess.Popen(_cli("--shards", str(tmp_path / "out"), *args), cwd=REPO_ROOT, env=_cli_env(),
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    sidecars = captions_dir(tmp_path / "out", "blip")
    deadline = time.monotonic() + 180
    while not list(sidecars.glob("0*.parquet")):
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "no sidecar appeared in time"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before_kill = len(list(sidecars.glob("0*.parquet")))
    assert done_before_kill < len(clips), "the job finished before it could be killed"

    cfg = CaptionerConfig(captioner=str(tiny_blip), captioner_id="blip", batch_size=1, max_new_tokens=8)
    resumed = run_caption_job(tmp_path / "out", cfg, progress=False)
    assert resumed["shards_skipped_as_done"] == done_before_kill
    assert resumed["shards_captioned"] == len(clips) - done_before_kill
    resumed_rows = [r for s in range(len(clips)) for r in _captions(tmp_path / "out", "blip", s)]
    assert [k for k, _, _ in resumed_rows] == keys  # one row per clip, none duplicated or lost
    assert not list(sidecars.glob(".tmp-*"))
    # An uninterrupted run's captions, computed without Ray (the overwrite test shows job == job).
    captioner = Captioner(cfg)
    clean = []
    for shard in range(len(clips)):
        with tarfile.open(shard_tar_path(tmp_path / "out", shard)) as handle:
            for member in (m for m in handle.getmembers() if m.name.endswith(".mp4")):
                frame, index, _ = middle_frame(handle.extractfile(member).read())
                clean.append((member.name[:-4], captioner([frame])[0], index))
    assert resumed_rows == clean


def test_cli_reports_an_unloadable_captioner_with_exit_code_2(corpus, tmp_path):
    out_dir, _ = corpus
    done = subprocess.run(_cli("--shards", str(out_dir), "--captioner", str(tmp_path / "missing-model")),
                          cwd=REPO_ROOT, env=_cli_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "cannot load captioner" in done.stderr and "missing-model" in done.stderr


def test_rows_re_emitted_by_a_retried_task_are_kept_once_and_complete_the_shard_only_when_all_are_in(
        tmp_path, clip_mp4):
    write_caption_shards(tmp_path, [3], clip=clip_mp4)
    rows = [{**r, "caption": f"caption {r['sample_index']}"}
            for r in read_and_decode_shard({"shard": 0, "path": str(shard_tar_path(tmp_path, 0))})]
    captions_dir(tmp_path, "c").mkdir(parents=True)
    writer = SidecarWriter(tmp_path, "c")
    writer.add([rows[0], rows[1], rows[0], rows[1]])  # a retried flat_map task emits again
    assert writer.incomplete() == {0: (2, 3)} and not caption_sidecar_path(tmp_path, "c", 0).exists()
    writer.add([rows[2], rows[2]])
    keys = [r["key"] for r in pq.read_table(caption_sidecar_path(tmp_path, "c", 0)).to_pylist()]
    assert keys == [r["key"] for r in rows] and len(set(keys)) == 3
