"""pipeline/builder/clips.py: timestamps, given-span validation and span planning from cues."""

from __future__ import annotations

import random

import pytest

from pipeline.builder.clips import ClipPlanSpec, Span, plan_clips, validate_span
from pipeline.builder.subtitles import Cue, clip_subtitle, parse_vtt
from pipeline.builder.timestamps import parse_timestamp
from pipeline.errors import StageError

# ---------------------------------------------------------------- parse_timestamp


@pytest.mark.parametrize("value, seconds", [
    (12.5, 12.5), (7, 7.0), ("12.5", 12.5), (" 12 ", 12.0),
    ("00:00:04.004", 4.004), ("00:04.004", 4.004), ("00:00:04,004", 4.004),
    ("1:02:03.5", 3723.5), ("100:00:00.000", 360000.0), ("0:05", 5.0),
])
def test_timestamp_forms_hdvila_and_subtitles_use(value, seconds):
    assert parse_timestamp(value) == pytest.approx(seconds, abs=1e-9)


@pytest.mark.parametrize("value", ["", "abc", "00:61:00.000", "00:00:75", "-00:00:01", "1:2:3:4",
                                   "12.5s", float("nan"), float("inf"), True, None])
def test_bad_timestamp_raises_value_error_naming_the_text(value):
    with pytest.raises(ValueError) as info:
        parse_timestamp(value)
    assert repr(value) in str(info.value)


# ---------------------------------------------------------------- validate_span


def test_valid_span_is_returned_as_is():
    assert validate_span(4.004, 10.01, 60.0) == Span(4.004, 10.01)
    assert Span(4.0, 10.5).duration_s == 6.5


def test_end_slightly_past_the_video_is_clamped():
    assert validate_span(50.0, 60.4, 60.0) == Span(50.0, 60.0)


def test_unknown_duration_skips_end_checks():
    assert validate_span(50.0, 5000.0, None) == Span(50.0, 5000.0)


@pytest.mark.parametrize("start_s, end_s, duration_s, reason", [
    (62.0, 58.0, 100.0, "span 62.000-58.000 s is reversed (end before start)"),
    (5.0, 5.0, 100.0, "span 5.000-5.000 s is empty (expected end > start)"),
    (-1.0, 5.0, 100.0, "span -1.000-5.000 s starts before the video (expected start >= 0)"),
    (60.0, 65.0, 60.0, "span 60.000-65.000 s starts at/after the video end (video is 60.000 s long)"),
    (50.0, 61.0, 60.0, "span 50.000-61.000 s ends 1.000 s past the video end at 60.000 s (tolerance 0.5 s)"),
])
def test_bad_span_raises_stage_error_saying_what_was_found(start_s, end_s, duration_s, reason):
    with pytest.raises(StageError) as info:
        validate_span(start_s, end_s, duration_s)
    assert info.value.stage == "span" and info.value.reason == reason


def test_tolerance_is_configurable():
    assert validate_span(50.0, 61.0, 60.0, tolerance_s=2.0) == Span(50.0, 60.0)


# ---------------------------------------------------------------- plan_clips

SPEC = ClipPlanSpec()


def _cues(*items: tuple[float, float, str]) -> list[Cue]:
    return [Cue(start_s, end_s, text) for start_s, end_s, text in items]


def test_short_sentences_are_merged_up_to_the_minimum():
    cues = _cues((0, 2, "One."), (2, 4.5, "Two."), (4.5, 6, "Three."), (6, 9, "Four."), (9, 10, "Five."))
    assert plan_clips(cues, SPEC, 10.0) == [Span(0, 4.5), Span(4.5, 10.0)]


def test_clips_are_cut_at_sentence_ends_not_mid_sentence():
    cues = _cues((0, 3, "We start here"), (3, 6, "and finish here."), (6, 9, "Then a new"), (9, 12, "thought ends!"))
    assert plan_clips(cues, SPEC, 12.0) == [Span(0, 6), Span(6, 12)]


def test_a_long_pause_ends_a_sentence_in_unpunctuated_auto_captions():
    cues = _cues((0, 3, "so we begin"), (3, 6, "with the dough"), (8, 11, "then we knead"), (11, 14, "for ten minutes"))
    assert plan_clips(cues, SPEC, 20.0) == [Span(0, 6), Span(8, 14)]


def test_a_too_long_sentence_run_is_split_at_cue_boundaries():
    cues = [Cue(3.0 * k, 3.0 * (k + 1), f"word{k}") for k in range(12)]  # 36 s, no punctuation, no pause
    spans = plan_clips(cues, SPEC, 36.0)
    assert spans == [Span(0, 18), Span(18, 36)]


def test_a_single_cue_longer_than_max_is_split_evenly():
    spans = plan_clips(_cues((0, 50, "a very long monologue.")), SPEC, 60.0)
    assert spans == [Span(0, pytest.approx(50 / 3)), Span(pytest.approx(50 / 3), pytest.approx(100 / 3)),
                     Span(pytest.approx(100 / 3), 50)]


def test_a_short_leftover_at_the_end_joins_the_previous_clip():
    cues = _cues((0, 10, "Long enough sentence."), (10, 12, "Bye."))
    assert plan_clips(cues, SPEC, 12.0) == [Span(0, 12)]


def test_a_short_leftover_that_cannot_join_is_padded_into_silence():
    cues = _cues((0, 19, "A nearly maximal sentence."), (25, 27, "Bye."))
    assert plan_clips(cues, SPEC, 40.0) == [Span(0, 19), Span(24, 28)]


def test_padding_stays_inside_the_video_and_off_the_neighbours():
    cues = _cues((0, 19, "A nearly maximal sentence."), (19.5, 21, "Bye."))
    assert plan_clips(cues, SPEC, 22.0) == [Span(0, 19), Span(19, 22)]


def test_a_short_leftover_that_cannot_grow_to_min_keep_is_dropped():
    cues = _cues((0, 19.8, "A nearly maximal sentence."), (19.8, 20.3, "Oh."), (20.3, 40, "Another long one."))
    assert plan_clips(cues, SPEC, 40.3) == [Span(0, 19.8), Span(20.3, 40)]


def test_a_short_leftover_of_at_least_min_keep_is_kept():
    cues = _cues((0, 19, "A nearly maximal sentence."), (19, 21, "Oh well."), (21, 40, "Another long one."))
    assert plan_clips(cues, SPEC, 40.0) == [Span(0, 19), Span(19, 21), Span(21, 40)]


def test_spans_stay_within_the_video_duration():
    cues = _cues((0, 5, "Before the end."), (8, 12, "Crosses the end."), (15, 18, "After the end."))
    spans = plan_clips(cues, SPEC, 10.0)
    assert spans == [Span(0, 10)]


def test_no_cues_or_no_text_plan_no_clips():
    assert plan_clips([], SPEC, 30.0) == []
    assert plan_clips(_cues((0, 5, "  ")), SPEC, 30.0) == []


def _vtt_time(seconds: float) -> str:
    return f"00:00:{seconds:06.3f}"


def test_youtube_rolling_captions_are_deduplicated_before_planning():
    vtt, previous = "WEBVTT\nKind: captions\nLanguage: en\n\n", " "  # YouTube's first cue: a blank top line
    for k in range(10):  # 10 rolling cues of 2.5 s, each with its 10 ms repeat, no punctuation
        start, end = 2.5 * k, 2.5 * (k + 1)
        line = f"line number {k} words"
        timed = line.replace(" ", "<00:00:00.500><c> ", 1) + "</c>"
        vtt += (f"{_vtt_time(start)} --> {_vtt_time(end - 0.01)} align:start position:0%\n{previous}\n{timed}\n\n"
                f"{_vtt_time(end - 0.01)} --> {_vtt_time(end)} align:start position:0%\n{line}\n \n\n")
        previous = line
    cues = parse_vtt(vtt)
    spans = plan_clips(cues, SPEC, 25.0)
    assert spans == [Span(0, 20), Span(20, 25)]
    texts = [clip_subtitle(cues, span.start_s, span.end_s) for span in spans]
    assert texts[1] == "line number 8 words line number 9 words"
    assert " ".join(texts) == " ".join(f"line number {k} words" for k in range(10))


def test_planning_is_deterministic_and_spans_partition_the_text():
    rng = random.Random(7)
    cues, t = [], 0.0
    for k in range(400):
        t += rng.choice([0.0, 0.0, 0.3, 2.0])
        duration = rng.uniform(0.5, 7.0)
        cues.append(Cue(round(t, 3), round(t + duration, 3), f"w{k}" + rng.choice(["", "", "."])))
        t += duration
    spans = plan_clips(cues, SPEC, t)
    assert spans == plan_clips(list(cues), SPEC, t)
    assert all(0 <= a.end_s <= b.start_s for a, b in zip(spans, spans[1:]))  # sorted, no overlap
    assert all(SPEC.min_clip_s - 1e-9 <= s.duration_s <= SPEC.max_clip_s + 1e-9 for s in spans[:-1])
    words = " ".join(clip_subtitle(cues, s.start_s, s.end_s) for s in spans).split()
    assert words == [cue.text for cue in cues]  # every cue in exactly one clip, in order


def test_spec_rejects_min_above_max():
    with pytest.raises(ValueError, match="min_clip_s <= max_clip_s"):
        ClipPlanSpec(min_clip_s=30.0, max_clip_s=20.0)


def test_a_number_too_large_to_be_a_time_is_refused():
    with pytest.raises(ValueError, match="too large"):
        parse_timestamp("9" * 400)
