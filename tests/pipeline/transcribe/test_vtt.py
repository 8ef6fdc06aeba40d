"""pipeline/transcribe/vtt.py: the VTT we write is read back by the builder's own subtitle path
(pipeline/builder/subtitles.py) into exactly the cues we wrote, whatever the model said."""

from __future__ import annotations

from pipeline.builder.subtitles import Cue, load_subtitles, parse_vtt
from pipeline.transcribe.vtt import format_vtt, read_vtt_language, vtt_time

TRICKY = [
    Cue(0.0, 1.25, "Plain words."),
    Cue(1.25, 2.5, "Tags <i>stay</i> text & so do &amp; entities"),
    Cue(2.5, 4.0, "An arrow --> inside, 5 < 6 > 3"),
    Cue(4.0, 5.0, "Ünïcödé 日本語 ✓"),
    Cue(3725.5, 3727.125, "Past the hour."),
]


def test_format_vtt_round_trips_through_the_builders_parser(tmp_path):
    text = format_vtt(TRICKY, "en", note="made by vipstream transcribe --> test")
    assert parse_vtt(text) == TRICKY
    path = tmp_path / "x.vtt"
    path.write_text(text, encoding="utf-8")
    assert load_subtitles(path) == TRICKY
    assert read_vtt_language(path) == "en"


def test_the_header_names_the_language_only_when_known(tmp_path):
    path = tmp_path / "x.vtt"
    path.write_text(format_vtt(TRICKY[:1], None), encoding="utf-8")
    assert read_vtt_language(path) is None and path.read_text().startswith("WEBVTT\nKind: captions\n\n")
    assert read_vtt_language(tmp_path / "missing.vtt") is None


def test_times_are_milliseconds_and_cues_without_text_are_left_out():
    assert vtt_time(0) == "00:00:00.000" and vtt_time(3725.5004) == "01:02:05.500" and vtt_time(-1) == "00:00:00.000"
    assert parse_vtt(format_vtt([Cue(0, 1, "   "), Cue(1, 2, "kept")])) == [Cue(1, 2, "kept")]
