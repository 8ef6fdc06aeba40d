"""tools/make_synthetic_corpus.py: real videos rendered by ffmpeg, checked with ffprobe and decord,
their captions read back by the pipeline's own subtitle parser."""

from __future__ import annotations

import json
import re

import decord
import numpy as np
import pytest

from pipeline.builder.subtitles import clip_subtitle, load_subtitles
from pipeline.builder.timestamps import parse_timestamp
from tests.media import ffprobe_json
from tools.make_synthetic_corpus import SyntheticCorpus, main, make_synthetic_corpus

VTT_TIME = r"\d{2}:\d{2}:\d{2}\.\d{3}"
CUE_TIMING = re.compile(rf"^({VTT_TIME}) --> ({VTT_TIME}) align:start position:0%$")
INLINE_WORD = re.compile(rf"<{VTT_TIME}><c> [a-z]+</c>")
YOUTUBE_ID = re.compile(r"^[A-Za-z0-9_-]{11}$")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> SyntheticCorpus:
    return make_synthetic_corpus(tmp_path_factory.mktemp("synth") / "corpus", num_videos=2, seed=0)


def _cues(vtt_text: str) -> list[tuple[float, float, list[str]]]:
    """(start_s, end_s, payload lines) of every cue, read by hand (no pipeline code)."""
    blocks = vtt_text.split("\n\n")
    cues = []
    for block in blocks:
        lines = block.split("\n")
        while lines and lines[-1] == "":
            lines.pop()
        match = CUE_TIMING.match(lines[0])
        if match:
            cues.append((parse_timestamp(match[1]), parse_timestamp(match[2]), lines[1:]))
    return cues


def test_videos_last_30_to_120_s_with_video_and_audio_streams(corpus):
    assert len(corpus.video_ids) == 2
    for video_id in corpus.video_ids:
        report = ffprobe_json(corpus.video_root / f"{video_id}.mp4")
        duration_s = float(report["format"]["duration"])
        assert 30.0 - 0.1 <= duration_s <= 120.0 + 0.1
        kinds = {s["codec_type"]: s for s in report["streams"]}
        assert set(kinds) == {"video", "audio"}
        video = kinds["video"]
        assert (video["width"], video["height"], video["avg_frame_rate"]) == (320, 240, "15/1")
        assert float(kinds["audio"]["duration"]) == pytest.approx(duration_s, abs=0.1)
        assert duration_s == pytest.approx(corpus.scenes[video_id][-1].end_s, abs=0.05)


def test_meta_jsonl_is_exactly_the_hdvila_form_with_scene_aligned_spans_inside_the_video(corpus):
    lines = corpus.meta_path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    for line, video_id in zip(lines, corpus.video_ids):
        record = json.loads(line)
        assert list(record) == ["video_id", "url", "clip"]
        assert record["video_id"] == video_id and YOUTUBE_ID.match(video_id)
        assert record["url"] == f"https://www.youtube.com/watch?v={video_id}"
        duration_s = float(ffprobe_json(corpus.video_root / f"{video_id}.mp4")["format"]["duration"])
        scenes = corpus.scenes[video_id]
        assert len(record["clip"]) == len(scenes) >= 2
        for k, (clip, scene) in enumerate(zip(record["clip"], scenes)):
            assert list(clip) == ["clip_id", "span"] and clip["clip_id"] == f"{video_id}.{k}.mp4"
            start_text, end_text = clip["span"]
            assert re.fullmatch(VTT_TIME, start_text) and re.fullmatch(VTT_TIME, end_text)
            start_s, end_s = parse_timestamp(start_text), parse_timestamp(end_text)
            assert (start_s, end_s) == (pytest.approx(scene.start_s, abs=5e-4), pytest.approx(scene.end_s, abs=5e-4))
            assert 4.0 <= end_s - start_s <= 20.0
            assert 0.0 <= start_s < end_s <= duration_s + 1e-3


def test_vtt_has_the_youtube_auto_caption_quirks(corpus):
    text = (corpus.video_root / f"{corpus.video_ids[0]}.en.vtt").read_text(encoding="utf-8")
    assert text.startswith("WEBVTT\nKind: captions\nLanguage: en\n\n")
    cues = _cues(text)
    assert len(cues) == text.count(" --> ") and len(cues) >= 4
    speaking, transitions = cues[0::2], cues[1::2]
    assert speaking[0][2][0] == " "  # the first cue has a blank line above the words
    for (start_s, end_s, lines), (t_start_s, t_end_s, t_lines) in zip(speaking, transitions):
        assert len(lines) == 2 and INLINE_WORD.search(lines[1])  # word timings on the new line
        plain = re.sub(rf"<{VTT_TIME}>|</?c>", "", lines[1])
        assert t_end_s - t_start_s == pytest.approx(0.010, abs=1e-6) and t_start_s == end_s  # 10 ms cue
        assert t_lines == [plain, " "]
    for (_, _, before), (_, _, after) in zip(speaking, speaking[1:]):  # rolling: the last line repeats
        assert after[0] == re.sub(rf"<{VTT_TIME}>|</?c>", "", before[1])


def test_captions_tile_each_scene_and_say_what_is_on_screen(corpus):
    for video_id in corpus.video_ids:
        path = corpus.video_root / f"{video_id}.en.vtt"
        raw = _cues(path.read_text(encoding="utf-8"))
        scenes = corpus.scenes[video_id]
        assert raw[0][0] == 0.0 and raw[-1][1] == pytest.approx(scenes[-1].end_s, abs=5e-4)
        assert all(a[1] == b[0] for a, b in zip(raw, raw[1:]))  # no gaps, no overlaps
        cues = load_subtitles(path)  # the pipeline's own parser de-duplicates the rolling lines
        for scene in scenes:
            text = clip_subtitle(cues, scene.start_s, scene.end_s)
            assert text == " ".join(scene.sentences())
            first = scene.shapes[0]
            assert f"a {first.colour} {first.shape} moves from {first.direction} on a {scene.background} background" in text


def test_single_shape_scenes_move_the_shape_in_the_captioned_direction(corpus):
    checked = 0
    for video_id in corpus.video_ids:
        reader = decord.VideoReader(str(corpus.video_root / f"{video_id}.mp4"))
        fps = reader.get_avg_fps()
        for scene in corpus.scenes[video_id]:
            if len(scene.shapes) != 1:
                continue
            early = _shape_centre(reader[int((scene.start_s + 0.15 * scene.duration_s) * fps)].asnumpy())
            late = _shape_centre(reader[int((scene.start_s + 0.85 * scene.duration_s) * fps)].asnumpy())
            dx, dy = late[0] - early[0], late[1] - early[1]
            expected = {"left to right": dx > 50, "right to left": dx < -50,
                        "top to bottom": dy > 30, "bottom to top": dy < -30}[scene.shapes[0].direction]
            assert expected, (video_id, scene, dx, dy)
            checked += 1
    assert checked >= 2


def _shape_centre(frame: np.ndarray) -> tuple[float, float]:
    """(x, y) centre of the pixels that differ from the background (the frame's corner colour)."""
    background = np.median(frame.reshape(-1, 3)[:: 97], axis=0)
    mask = np.abs(frame.astype(np.int16) - background).sum(axis=2) > 60
    ys, xs = np.nonzero(mask)
    assert len(xs) > 50, "no shape found on the frame"
    return float(xs.mean()), float(ys.mean())


def test_same_seed_gives_the_same_meta_vtt_and_plan_and_another_seed_does_not(corpus, tmp_path):
    again = make_synthetic_corpus(tmp_path / "again", num_videos=2, seed=0)
    assert again.video_ids == corpus.video_ids and again.scenes == corpus.scenes
    assert again.meta_path.read_bytes() == corpus.meta_path.read_bytes()
    for video_id in corpus.video_ids:
        name = f"{video_id}.en.vtt"
        assert (again.video_root / name).read_bytes() == (corpus.video_root / name).read_bytes()
    other = make_synthetic_corpus(tmp_path / "other", num_videos=1, seed=1, min_duration_s=8, max_duration_s=10)
    assert set(other.video_ids).isdisjoint(corpus.video_ids)
    assert other.meta_path.read_bytes() != corpus.meta_path.read_bytes()


def test_cli_writes_the_corpus_and_prints_a_json_summary(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["--output", str(out), "--num-videos", "1", "--seed", "3",
                 "--min-duration-s", "8", "--max-duration-s", "10"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["videos"] == 1 and summary["clips"] >= 1 and 8 <= summary["video_seconds"] <= 10
    video_id = summary["video_ids"][0]
    assert (out / "videos" / f"{video_id}.mp4").stat().st_size > 0
    assert (out / "videos" / f"{video_id}.en.vtt").exists() and (out / "meta.jsonl").exists()


def test_bad_arguments_are_refused_before_writing_anything(tmp_path):
    with pytest.raises(ValueError, match="min_duration_s <= max_duration_s"):
        make_synthetic_corpus(tmp_path / "bad", min_duration_s=50, max_duration_s=40)
    assert not (tmp_path / "bad").exists()
