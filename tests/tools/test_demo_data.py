"""tools/demo_data.py and the ASR subtitle style of tools/make_synthetic_corpus.py: the demo's data
makes the paper's point only if subtitles are noisy and partial, and if the retrieval set cannot be
answered from single frames. Real ffmpeg videos, read back with decord and the pipeline's parser."""

from __future__ import annotations

import json
import random
import subprocess

import decord
import numpy as np
import pytest

from pipeline.builder.subtitles import clip_subtitle, load_subtitles
from tools.demo_data import (COLOUR_RGB, DEMO_WORDS, RetrievalSet, frame_description, main, make_retrieval_set,
                             random_frame, render_frame, retrieval_captions)
from tools.make_synthetic_corpus import (COLOURS, DIRECTION_WORD, FILLERS, OFF_TOPIC, OPPOSITE, asr_speech,
                                         make_synthetic_corpus, plan_scenes)
from tools.stand_in_models import clip_tokenizer


def _scenes(count: int, seed: int = 0):
    rng, scenes = random.Random(seed), []
    while len(scenes) < count:
        scenes += plan_scenes(rng, 60.0, 15)
    return scenes[:count]


# --------------------------------------------------------------------------------------------
# ASR-style subtitles


def test_asr_speech_is_partly_about_the_picture_with_filler_and_off_topic_talk():
    rng = random.Random(0)
    scenes = _scenes(300)
    spoken = [asr_speech(scene, rng) for scene in scenes]
    assert all(s == s.lower() and s.strip() for s in spoken)

    def share(predicate) -> float:
        return sum(predicate(scene, text) for scene, text in zip(scenes, spoken)) / len(scenes)

    names_colour = share(lambda sc, t: sc.shapes[0].colour in t.split())
    names_motion = share(lambda sc, t: DIRECTION_WORD[sc.shapes[0].direction] in t.split()
                         or sc.shapes[0].direction in t)
    off_topic = share(lambda sc, t: any(remark in t for remark in OFF_TOPIC))
    filler = share(lambda sc, t: any(f" {f} " in f" {t} " for f in FILLERS))
    describes_exactly = share(lambda sc, t: t == " ".join(sc.sentences()))
    assert 0.5 < names_colour < 0.9  # partly about the picture, not always
    assert 0.4 < names_motion < 0.85
    assert 0.4 < off_topic < 0.9 and filler > 0.4
    assert describes_exactly == 0.0


def test_asr_speech_tokenises_to_whole_words_within_the_70_token_text_length():
    tokenizer = clip_tokenizer(DEMO_WORDS)
    rng = random.Random(1)
    for scene in _scenes(100, seed=1):
        text = asr_speech(scene, rng)
        ids = tokenizer(text).input_ids
        assert len(ids) == len(text.split()) + 2 <= 70, text


def test_an_asr_corpus_has_the_same_videos_as_a_describe_corpus_and_its_vtt_says_the_speech(tmp_path):
    asr = make_synthetic_corpus(tmp_path / "asr", num_videos=1, seed=5, min_duration_s=20, max_duration_s=25,
                                subtitle_style="asr")
    plain = make_synthetic_corpus(tmp_path / "plain", num_videos=1, seed=5, min_duration_s=20, max_duration_s=25)
    assert asr.video_ids == plain.video_ids and asr.scenes == plain.scenes  # the style changes words only
    (video_id,) = asr.video_ids
    assert (asr.video_root / f"{video_id}.mp4").read_bytes() == (plain.video_root / f"{video_id}.mp4").read_bytes()
    cues = load_subtitles(asr.video_root / f"{video_id}.en.vtt")  # the pipeline's own parser
    for scene, speech in zip(asr.scenes[video_id], asr.speech[video_id], strict=True):
        assert clip_subtitle(cues, scene.start_s, scene.end_s) == speech
        assert speech != " ".join(scene.sentences())
    again = make_synthetic_corpus(tmp_path / "again", num_videos=1, seed=5, min_duration_s=20, max_duration_s=25,
                                  subtitle_style="asr")
    assert again.speech == asr.speech
    with pytest.raises(ValueError, match="subtitle_style"):
        make_synthetic_corpus(tmp_path / "bad", subtitle_style="clean")


def test_reversed_neighbours_replay_the_previous_picture_with_every_shape_going_the_other_way():
    plain = [plan_scenes(random.Random(k), 60.0, 15) for k in range(20)]
    assert plain == [plan_scenes(random.Random(k), 60.0, 15, 0.0) for k in range(20)]  # 0 draws nothing extra
    reversed_pairs = total = 0
    for k in range(20):
        scenes = plan_scenes(random.Random(k), 60.0, 15, reverse_probability=0.5)
        for before, after in zip(scenes, scenes[1:]):
            total += 1
            if after.background == before.background and len(after.shapes) == len(before.shapes) and all(
                    (a.colour, a.shape, a.across, a.direction) == (b.colour, b.shape, b.across, OPPOSITE[b.direction])
                    for a, b in zip(after.shapes, before.shapes)):
                reversed_pairs += 1
    assert 0.3 < reversed_pairs / total < 0.7


# --------------------------------------------------------------------------------------------
# frames


def test_colour_table_matches_what_ffmpeg_draws():
    """Up to ffmpeg's round trip through YUV (red comes back as 253, 0, 0)."""
    for name, rgb in COLOUR_RGB.items():
        raw = subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"color=c={name}:s=2x2", "-frames:v", "1",
                              "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
        assert np.abs(np.array(list(raw[:3])) - rgb).max() <= 4, (name, tuple(raw[:3]))
    assert set(COLOUR_RGB) == set(COLOURS)


def test_a_rendered_frame_shows_its_described_colours_and_nothing_else():
    rng = random.Random(0)
    for _ in range(50):
        frame, text = random_frame(rng)
        assert frame.shape == (72, 96, 3) and frame.dtype == np.uint8
        words = text.split()
        background = words[-2]
        shape_colours = [words[i + 1] for i, w in enumerate(words[:-3]) if w == "a" and words[i + 1] in COLOUR_RGB]
        colours_seen = {tuple(c) for c in np.unique(frame.reshape(-1, 3), axis=0)}
        assert tuple(COLOUR_RGB[background]) in colours_seen
        assert colours_seen <= {COLOUR_RGB[c] for c in [background, *shape_colours]}
        assert COLOUR_RGB[shape_colours[-1]] in colours_seen  # the shape drawn last is never hidden


def test_frame_description_and_render_frame_place_boxes_as_the_video_filtergraph_does():
    assert frame_description("green", [("red", "square"), ("blue", "tall rectangle")]) == \
        "a red square and a blue tall rectangle on a green background"
    frame = render_frame("black", [("white", "square", 0.0, 1.0)], size=(96, 72))
    ys, xs = np.nonzero(frame[..., 0] == 255)
    side = int(72 * 0.25)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (0, side - 1, 72 - side, 71)


# --------------------------------------------------------------------------------------------
# the retrieval set


@pytest.fixture(scope="module")
def retrieval(tmp_path_factory) -> RetrievalSet:
    return make_retrieval_set(tmp_path_factory.mktemp("retrieval"), num_pairs=3, seed=0)


def test_retrieval_jsonl_rows_name_a_video_and_several_captions_of_appearance_and_direction(retrieval):
    rows = [json.loads(line) for line in retrieval.annotations_path.read_text().splitlines()]
    assert len(rows) == len(retrieval.videos) == 6
    assert len({r["video_id"] for r in rows}) == 6
    for row, video in zip(rows, retrieval.videos):
        assert list(row) == ["video_id", "path", "captions"]
        assert (retrieval.annotations_path.parent / row["path"]).is_file()
        assert len(row["captions"]) >= 3 and row["captions"] == list(retrieval_captions(video.scene))
        for caption in row["captions"]:
            for moving in video.scene.shapes:
                assert moving.colour in caption
                assert moving.direction in caption or DIRECTION_WORD[moving.direction] in caption.split()
            assert video.scene.background in caption


def test_twins_show_the_same_frames_in_reverse_order_and_their_captions_differ(retrieval):
    by_id = {v.video_id: v for v in retrieval.videos}
    checked = set()
    for video in retrieval.videos:
        if video.video_id in checked:
            continue
        twin = by_id[video.twin_id]
        assert twin.twin_id == video.video_id
        checked |= {video.video_id, twin.video_id}
        assert set(video.captions).isdisjoint(twin.captions)
        a = decord.VideoReader(str(video.path)).get_batch(list(range(90))).asnumpy().astype(np.float32)
        b = decord.VideoReader(str(twin.path)).get_batch(list(range(90))).asnumpy().astype(np.float32)
        forward = np.abs(a - b).mean()
        reversed_ = np.abs(a - b[::-1]).mean()
        assert reversed_ < 2.0 < forward  # the same frames, backwards (up to the encoder)
        assert np.abs(a.mean(axis=0) - b.mean(axis=0)).mean() < 2.0  # mean-pooled frames: indistinguishable
    assert len(checked) == 6


def test_retrieval_videos_are_not_corpus_videos_and_the_set_is_deterministic(retrieval, tmp_path):
    corpus = make_synthetic_corpus(tmp_path / "corpus", num_videos=1, seed=0, min_duration_s=8, max_duration_s=10)
    assert set(corpus.video_ids).isdisjoint(v.video_id for v in retrieval.videos)
    assert main(["--output", str(tmp_path / "again"), "--num-pairs", "3", "--seed", "0"]) == 0
    assert (tmp_path / "again" / "retrieval.jsonl").read_text() == retrieval.annotations_path.read_text()
