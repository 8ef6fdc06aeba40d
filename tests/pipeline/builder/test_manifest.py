"""pipeline/builder/manifest.py: the three input forms, malformed lines, duplicates, unsafe paths."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.builder.manifest import VideoEntry, read_manifest


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _write_jsonl(path: Path, lines: list) -> Path:
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def test_hdvila_meta_is_read_as_is_and_videos_found_by_id_with_any_extension(tmp_path):
    root = tmp_path / "videos"
    _touch(root / "abcDEF12345.mkv")
    _touch(root / "abcDEF12345.en.vtt")
    _touch(root / "zzzzzzzzzzz.webm")
    meta = _write_jsonl(tmp_path / "meta.jsonl", [
        {"video_id": "abcDEF12345", "url": "https://www.youtube.com/watch?v=abcDEF12345",
         "clip": [{"clip_id": "abcDEF12345.1.mp4", "span": ["00:00:04.004", "00:00:10.010"]}]},
        {"video_id": "zzzzzzzzzzz", "url": "u", "clip": []},
    ])
    result = read_manifest(meta, video_root=root)
    assert result.errors == []
    first, second = result.entries
    assert first.path == str(root / "abcDEF12345.mkv")
    assert first.subtitles == str(root / "abcDEF12345.en.vtt")
    assert first.clips[0].clip_id == "abcDEF12345.1.mp4"
    assert (first.clips[0].start, first.clips[0].end) == ("00:00:04.004", "00:00:10.010")
    assert first.line == 1
    assert second.path == str(root / "zzzzzzzzzzz.webm") and second.subtitles is None


def test_hdvila_video_missing_on_disk_keeps_its_entry_with_a_reason(tmp_path):
    meta = _write_jsonl(tmp_path / "meta.jsonl", [{"video_id": "nothere0000", "url": "u", "clip": []}])
    (entry,) = read_manifest(meta).entries
    assert entry.path is None and "no video file named nothere0000" in entry.missing_reason


def test_own_jsonl_manifest_resolves_relative_paths_and_subtitles(tmp_path):
    _touch(tmp_path / "media" / "a.mp4")
    _touch(tmp_path / "media" / "a.srt")
    _touch(tmp_path / "media" / "b.mp4")
    _touch(tmp_path / "subs" / "b_custom.vtt")
    meta = _write_jsonl(tmp_path / "manifest.jsonl", [
        {"video_id": "a", "path": "media/a.mp4"},
        {"video_id": "b", "path": str(tmp_path / "media" / "b.mp4"), "subtitles": "subs/b_custom.vtt",
         "clips": [{"clip_id": "b.0", "span": [1, 5.5]}]},
    ])
    a, b = read_manifest(meta).entries
    assert a.path == str(tmp_path / "media" / "a.mp4") and a.subtitles == str(tmp_path / "media" / "a.srt")
    assert a.clips is None
    assert b.subtitles == str(tmp_path / "subs" / "b_custom.vtt")
    assert b.clips[0].start == 1 and b.clips[0].end == 5.5


def test_parquet_manifest_is_read_like_jsonl(tmp_path):
    _touch(tmp_path / "a.mp4")
    pq.write_table(pa.Table.from_pylist([
        {"video_id": "a", "path": "a.mp4", "subtitles": None,
         "clips": [{"clip_id": "a.0", "span": ["0", "4"]}]},
    ]), tmp_path / "m.parquet")
    result = read_manifest(tmp_path / "m.parquet")
    assert result.form == "parquet"
    (entry,) = result.entries
    assert entry.path == str(tmp_path / "a.mp4") and entry.clips[0].end == "4"


def test_folder_of_videos_pairs_each_with_same_stem_subtitles(tmp_path):
    _touch(tmp_path / "x.mp4")
    _touch(tmp_path / "x.en.vtt")
    _touch(tmp_path / "y.mov")
    _touch(tmp_path / "y.srt")
    _touch(tmp_path / "z.avi")
    _touch(tmp_path / "notes.txt")
    result = read_manifest(tmp_path)
    assert result.form == "folder"
    assert [(Path(e.path).name, e.subtitles and Path(e.subtitles).name) for e in result.entries] == [
        ("x.mp4", "x.en.vtt"), ("y.mov", "y.srt"), ("z.avi", None)]


def test_malformed_lines_become_error_rows_with_line_numbers_and_the_rest_is_read(tmp_path):
    _touch(tmp_path / "ok.mp4")
    meta = _write_jsonl(tmp_path / "m.jsonl", [
        {"video_id": "ok", "path": "ok.mp4"},
        "{not json",
        "[1, 2]",
        {"path": "ok.mp4"},
        {"video_id": "badclips", "path": "ok.mp4", "clips": [{"clip_id": "c", "span": [1]}]},
        {"video_id": "ok2", "path": "ok.mp4"},
    ])
    result = read_manifest(meta)
    assert [e.video_id for e in result.entries] == ["ok", "ok2"]
    assert [(e.line, e.stage) for e in result.errors] == [(2, "manifest"), (3, "manifest"), (4, "manifest"),
                                                         (5, "manifest")]
    assert "not valid JSON" in result.errors[0].reason
    assert "video_id" in result.errors[2].reason
    assert result.errors[3].video_id == "badclips" and "span" in result.errors[3].reason


def test_duplicate_video_id_keeps_the_first_and_reports_the_second(tmp_path):
    _touch(tmp_path / "a.mp4")
    meta = _write_jsonl(tmp_path / "m.jsonl", [
        {"video_id": "a.b", "path": "a.mp4"}, {"video_id": "a.b", "path": "a.mp4"},
        {"video_id": "a_b", "path": "a.mp4"},  # same sample key once sanitised
    ])
    result = read_manifest(meta)
    assert [e.line for e in result.entries] == [1]
    assert [(e.video_id, e.line) for e in result.errors] == [("a.b", 2), ("a_b", 3)]
    assert all("duplicate video_id" in e.reason and "line 1" in e.reason for e in result.errors)


def test_uris_are_kept_for_the_shard_task_and_no_path_is_built_from_an_id(tmp_path):
    _touch(tmp_path / "videos" / "safe.mp4")
    meta = _write_jsonl(tmp_path / "m.jsonl", [
        {"video_id": "remote", "path": "http://example.com/v.mp4"},
        {"video_id": "../videos/safe", "url": "u"},
    ])
    remote, traversal = read_manifest(meta, video_root=tmp_path / "videos").entries
    assert remote.path == "http://example.com/v.mp4" and remote.subtitles is None  # checked when fetched
    assert traversal.path is None  # ids are matched against a listing, never joined into a path


def test_video_entry_round_trips_through_a_dict():
    entry = VideoEntry("v", "/p.mp4", "/p.vtt", None, 3)
    assert VideoEntry.from_dict(entry.as_dict()) == entry


def test_a_video_never_takes_the_subtitles_of_another_video_whose_name_extends_its_own(tmp_path):
    for name in ("talk.mp4", "talk.2.mp4", "talk.2.en.vtt", "talk.en.mp4", "talk.en.vtt",
                 "clip.mp4", "clip.pt-BR.srt", "clip.notes.vtt", "yt.mp4", "yt.en.json3"):
        _touch(tmp_path / name)
    subtitles = {Path(e.path).name: e.subtitles and Path(e.subtitles).name for e in read_manifest(tmp_path).entries}
    assert subtitles == {"talk.mp4": None, "talk.2.mp4": "talk.2.en.vtt", "talk.en.mp4": "talk.en.vtt",
                         "clip.mp4": "clip.pt-BR.srt", "yt.mp4": "yt.en.json3"}


def test_json3_and_info_files_are_not_taken_for_a_missing_video(tmp_path):
    _touch(tmp_path / "abc.en.json3")
    _touch(tmp_path / "abc.description")
    meta = _write_jsonl(tmp_path / "m.jsonl", [{"video_id": "abc", "url": "u"}])
    (entry,) = read_manifest(meta).entries
    assert entry.path is None and "no video file named abc" in entry.missing_reason
