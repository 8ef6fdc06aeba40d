"""vipstream/demo_digests.py: a stage's digest follows what the stage made, not where or when it
was written (the workdir's path in clip json, sidecar `created` times, tar headers), and the
comparison names the first stage that differs."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from vipstream.demo_digests import STAGES, main, stage_digests


def _write_shard(path: Path, source_root: str, mtime: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"clip_id": "v.0.mp4", "source": f"{source_root}/corpus/videos/v.mp4", "subtitle": "hi"}
    with tarfile.open(path, "w") as tar:
        for name, data in (("v_0000.json", json.dumps(meta).encode()), ("v_0000.mp4", b"\x00\x00\x00\x18ftypmp42")):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), mtime
            tar.addfile(info, io.BytesIO(data))


def _write_sidecar(path: Path, caption: str, created: datetime) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"key": ["v_0000"], "caption": [caption], "frame_index": pa.array([3], pa.int32()),
                             "created": [created]}), path)


def _workdir(work: Path, *, as_given: str | None = None, caption: str = "a red square", mtime: float = 0.0,
             created: datetime = datetime(2026, 1, 1, tzinfo=timezone.utc)) -> Path:
    for folder in ("corpus/videos", "models/clip", "models/captioner"):
        (work / folder).mkdir(parents=True, exist_ok=True)
    (work / "corpus/videos/v.mp4").write_bytes(b"video bytes")
    (work / "models/clip/model.safetensors").write_bytes(b"clip weights")
    (work / "models/captioner/model.safetensors").write_bytes(b"captioner weights")
    root = as_given or str(work.resolve())  # the workdir as the build was given it
    _write_shard(work / "out/shards/000000.tar", root, mtime)
    _write_sidecar(work / "out/captions/stand-in/000000.parquet", caption, created)
    pq.write_table(pa.table({"video_id": ["x"]}), work / "out/captions/stand-in/errors.parquet")  # not a sidecar
    _write_shard(work / "retrieval_out/shards/000000.tar", root, mtime)
    for loss in ("vs", "ocl"):
        step = work / "runs" / loss / "checkpoints" / "step_00000012"
        step.mkdir(parents=True)
        (step / "model.safetensors").write_bytes(f"{loss} weights".encode())
    return work


def test_the_same_stages_written_elsewhere_and_later_have_the_same_digests(tmp_path, capsys):
    first = _workdir(tmp_path / "machine_a")
    second = _workdir(tmp_path / "elsewhere" / "machine_b", as_given="machine_b", mtime=1.8e9,
                      created=datetime(2026, 12, 2, tzinfo=timezone.utc))
    digests = stage_digests(first)
    assert list(digests) == [stage for stage, _, _ in STAGES] and None not in digests.values()
    assert stage_digests(second) == digests
    assert main([str(first), str(second)]) == 0 and "DIFFERENT" not in capsys.readouterr().out


def test_a_stage_that_made_something_else_is_named(tmp_path, capsys):
    first = _workdir(tmp_path / "a")
    second = _workdir(tmp_path / "b", caption="a blue square")
    mine, theirs = stage_digests(first), stage_digests(second)
    assert [stage for stage in mine if mine[stage] != theirs[stage]] == ["caption sidecars"]
    assert main([str(first), str(second)]) == 1
    assert [line.split()[0:2] for line in capsys.readouterr().out.splitlines() if "DIFFERENT" in line] == [
        ["caption", "sidecars"]]
    shutil.rmtree(second / "runs")
    assert stage_digests(second)["ocl checkpoint"] is None
