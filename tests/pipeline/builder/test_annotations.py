"""Retrieval-set annotations (pipeline/builder/annotations.py): every accepted form read into
manifest entries with captions, and an MSR-VTT-form set built into real shards by the real job."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import webdataset as wds

from pipeline.builder.annotations import (AnnotationFormatError, AnnotationOptions, detect_form, read_annotations,
                                        read_video_list)
from tests.retrieval_sets import COLOURS, colour_captions, make_colour_video, write_msrvtt_set
from vipstream.schema import CLIP_CAPTIONS_FIELD, CLIP_META_FIELDS, CLIP_META_OPTIONAL_FIELDS, clip_key


def _write_msrvtt(path: Path, videos: list[str], sentences: list[tuple[str, str]]) -> Path:
    path.write_text(json.dumps({
        "videos": [{"video_id": v, "split": "test"} for v in videos],
        "sentences": [{"video_id": v, "caption": c, "sen_id": i} for i, (v, c) in enumerate(sentences)]}))
    return path


def _touch_videos(folder: Path, *names: str) -> None:
    for name in names:
        (folder / name).write_bytes(b"not probed while listing")


def test_msrvtt_json_groups_captions_by_video_and_a_caption_for_an_unknown_video_is_an_error_row(tmp_path):
    _touch_videos(tmp_path, "video1.mp4", "video2.mp4", "video3.mp4")
    path = _write_msrvtt(tmp_path / "MSRVTT_data.json", ["video1", "video2", "video3"],
                         [("video1", "a red square"), ("video2", "a blue circle"), ("video1", "red things"),
                          ("video9", "a caption for a video nobody listed"), ("video2", "  ")])
    assert detect_form(path) == "msrvtt-json"
    result = read_annotations(path)
    assert [(e.video_id, e.captions) for e in result.entries] == [
        ("video1", ("a red square", "red things")), ("video2", ("a blue circle",))]
    assert all(e.path == str(tmp_path / f"{e.video_id}.mp4") and e.subtitles is None for e in result.entries)
    by_video = {e.video_id: e for e in result.errors}
    assert set(by_video) == {"video9", "video2", "video3"}
    assert by_video["video9"].stage == "annotations" and by_video["video9"].line == 4
    assert "not in 'videos'" in by_video["video9"].reason
    assert "non-empty 'caption'" in by_video["video2"].reason and by_video["video2"].line == 5
    assert "no caption" in by_video["video3"].reason


def test_jsfusion_csv_and_a_missing_video_file(tmp_path):
    _touch_videos(tmp_path, "video7020.mp4", "video7021.webm")
    path = tmp_path / "MSRVTT_JSFUSION_test.csv"
    path.write_text("key,vid_key,video_id,sentence\n"
                    "ret0,msr7020,video7020,a family is having coversation\n"
                    "ret1,msr7021,video7021,people are dancing\n"
                    "ret2,msr7022,video7022,a man talks\n"
                    "ret3,msr7020,video7020,a second sentence\n")
    result = read_annotations(path)
    assert [(e.video_id, e.captions, e.line) for e in result.entries] == [
        ("video7020", ("a family is having coversation", "a second sentence"), 2),
        ("video7021", ("people are dancing",), 3), ("video7022", ("a man talks",), 4)]
    assert result.entries[1].path.endswith("video7021.webm")
    missing = result.entries[2]
    assert missing.path is None and "video7022" in missing.missing_reason  # an error row at build time
    bad = tmp_path / "bad.csv"
    bad.write_text("id,text\nvideo1,hello\n")
    with pytest.raises(AnnotationFormatError, match="'video_id' and 'sentence'"):
        read_annotations(bad)


def test_activitynet_form_is_one_paragraph_per_video_and_paragraph_joins_any_form(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    _touch_videos(videos, "v_a.mp4", "v_b.mp4")
    anet = tmp_path / "val_1.json"
    anet.write_text(json.dumps({
        "v_a": {"duration": 10.0, "timestamps": [[0, 4], [4, 10]],
                "sentences": ["A man enters the room.", " He sits down. "]},
        "v_b": {"duration": 5.0, "timestamps": [[0, 5]], "sentences": ["A dog runs."]}}))
    result = read_annotations(anet, video_root=videos)
    assert detect_form(anet) == "activitynet"
    assert [(e.video_id, e.captions) for e in result.entries] == [
        ("v_a", ("A man enters the room. He sits down.",)), ("v_b", ("A dog runs.",))]
    msrvtt = _write_msrvtt(tmp_path / "data.json", ["v_a"], [("v_a", "one."), ("v_a", "two.")])
    paragraph = read_annotations(msrvtt, video_root=videos, options=AnnotationOptions(paragraph=True))
    assert [e.captions for e in paragraph.entries] == [("one. two.",)]


def test_video_lists_carve_train_and_validation_sets_from_one_annotation_file(tmp_path):
    _touch_videos(tmp_path, "video0.mp4", "video1.mp4", "video2.mp4", "video3.mp4")
    path = _write_msrvtt(tmp_path / "MSRVTT_data.json", ["video0", "video1", "video2", "video3"],
                         [("video0", "zero"), ("video1", "one"), ("video2", "two"), ("video9", "unknown")])
    train_list = tmp_path / "MSRVTT_train.9k.csv"
    train_list.write_text("video_id\nvideo0\nvideo1\nvideo2\n")  # MSR-VTT's own list form
    val_list = tmp_path / "val.txt"
    val_list.write_text("video2\n")  # one id per line
    assert read_video_list(train_list) == {"video0", "video1", "video2"}
    train = read_annotations(path, options=AnnotationOptions(videos=read_video_list(train_list),
                                                             exclude_videos=read_video_list(val_list)))
    val = read_annotations(path, options=AnnotationOptions(videos=read_video_list(val_list)))
    assert [e.video_id for e in train.entries] == ["video0", "video1"]
    assert [e.video_id for e in val.entries] == ["video2"]
    # captions of videos outside the selection (video3 has none, video9 is unknown) are not its errors
    assert train.errors == [] and val.errors == []


def test_jsonl_rows_with_paths_and_spans(tmp_path):
    _touch_videos(tmp_path, "a.mp4", "b.mp4")
    path = tmp_path / "retrieval.jsonl"
    path.write_text("\n".join([
        json.dumps({"video_id": "a", "path": "a.mp4", "captions": ["first", "second"], "span": [1.0, "00:00:03.500"]}),
        json.dumps({"video_id": "b", "path": "b.mp4", "captions": []}),
        "{not json",
        json.dumps({"video_id": "c", "path": "b.mp4", "captions": "a string, not a list"}),
        json.dumps({"video_id": "a", "path": "a.mp4", "captions": ["duplicate id"]}),
    ]) + "\n")
    result = read_annotations(path)
    [entry] = result.entries
    assert entry.captions == ("first", "second") and entry.path == str(tmp_path / "a.mp4")
    assert [(c.clip_id, c.start, c.end) for c in entry.clips] == [("a", 1.0, "00:00:03.500")]
    lines = sorted(e.line for e in result.errors)
    assert lines == [2, 3, 4, 5]
    assert all(e.stage in ("annotations", "manifest") for e in result.errors)


def _samples(out_dir: Path) -> list[dict]:
    shards = sorted(str(p) for p in (out_dir / "shards").glob("*.tar"))
    return list(wds.WebDataset(shards, shardshuffle=False))  # raw bytes: no .decode()


def test_msrvtt_form_builds_into_shards_whose_captions_match(retrieval_set):
    out_dir, annotations = retrieval_set
    samples = _samples(out_dir)
    assert [s["__key__"] for s in samples] == [clip_key(f"video{k}", 0) for k in range(len(COLOURS))]
    for k, (sample, colour) in enumerate(zip(samples, COLOURS)):
        meta = json.loads(sample["json"])
        assert set(meta) == set(CLIP_META_FIELDS) | set(CLIP_META_OPTIONAL_FIELDS)
        assert meta[CLIP_CAPTIONS_FIELD] == colour_captions(colour)
        assert meta["video_id"] == f"video{k}" and meta["subtitle"] == ""
        assert meta["span"][0] == 0.0 and meta["span"][1] == pytest.approx(2.0, abs=0.25)  # the whole video
    errors = pq.read_table(out_dir / "errors.parquet").to_pylist()
    assert [(e["video_id"], e["stage"]) for e in errors] == [("video99", "annotations")]
    assert "not in 'videos'" in errors[0]["reason"] and errors[0]["source"] == str(annotations)
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["clips"] == len(COLOURS) and summary["clips_without_text"] == 0


def test_a_retrieval_row_given_as_a_corpus_manifest_says_to_use_annotations(tmp_path):
    from pipeline.builder.manifest import read_manifest

    _touch_videos(tmp_path, "a.mp4")
    path = tmp_path / "retrieval.jsonl"
    path.write_text(json.dumps({"video_id": "a", "path": "a.mp4", "captions": ["a red square"]}) + "\n")
    result = read_manifest(path)
    assert result.entries == []
    [error] = result.errors
    assert error.line == 1 and "--annotations" in error.reason
