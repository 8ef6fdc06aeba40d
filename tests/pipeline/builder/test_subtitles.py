"""pipeline/builder/subtitles.py: VTT (YouTube auto-captions), SRT and JSON cues, encodings, broken files."""

from __future__ import annotations

import json
import random

import pytest

from pipeline.errors import StageError
from pipeline.builder.subtitles import (Cue, clip_subtitle, load_subtitles, normalise_cues, parse_json_cues,
                                parse_srt, parse_vtt, read_subtitle_text)

# A YouTube auto-caption file as youtube-dl / yt-dlp write it: every cue repeats the previous line
# and adds a new one with inline word timings; 10 ms cues in between only repeat.
YOUTUBE_VTT = """WEBVTT
Kind: captions
Language: en

00:00:00.030 --> 00:00:02.690 align:start position:0%
 
we're<00:00:00.450><c> going</c><00:00:00.840><c> to</c><00:00:01.020><c> talk</c>

00:00:02.690 --> 00:00:02.700 align:start position:0%
we're going to talk
 

00:00:02.700 --> 00:00:05.120 align:start position:0%
we're going to talk
about<00:00:03.000><c> the</c><00:00:03.300><c> red</c><00:00:03.600><c> square</c>

00:00:05.120 --> 00:00:05.130 align:start position:0%
about the red square
 

00:00:05.130 --> 00:00:08.400 align:start position:0%
about the red square
and<00:00:05.500><c.colorE5E5E5> why</c><00:00:06.000><c> it</c><00:00:06.500><c> matters</c>

00:00:08.400 --> 00:00:08.410 align:start position:0%
and why it matters
 
"""

SRT = """1
00:00:01,000 --> 00:00:03,500
<i>Hello</i> there,
<font color="#ffff00">general</font> Kenobi.

2
00:00:04,000 --> 00:00:06,000
Tom &amp; Jerry &gt; everyone&nbsp;else

7
00:00:06,500 --> 00:00:08,000
{\\an8}Numbering may jump.
"""


# ---------------------------------------------------------------- YouTube rolling captions


def test_youtube_auto_captions_give_each_sentence_once():
    cues = parse_vtt(YOUTUBE_VTT)
    assert clip_subtitle(cues, 0.0, 5.12) == "we're going to talk about the red square"
    assert clip_subtitle(cues, 0.0, 10.0) == "we're going to talk about the red square and why it matters"


def test_youtube_rolling_cues_become_one_cue_per_new_line_with_the_new_lines_timing():
    assert parse_vtt(YOUTUBE_VTT) == [
        Cue(0.03, 2.70, "we're going to talk"),
        Cue(2.70, 5.13, "about the red square"),
        Cue(5.13, 8.41, "and why it matters"),
    ]


def test_clip_starting_mid_video_does_not_repeat_the_line_spoken_before_it():
    assert clip_subtitle(parse_vtt(YOUTUBE_VTT), 5.2, 8.0) == "and why it matters"


def test_hand_built_raw_rolling_cues_once_normalised_give_each_line_once():
    raw = [Cue(0.0, 2.0, "we're going to talk"), Cue(2.0, 2.01, "we're going to talk"),
           Cue(2.01, 4.0, "we're going to talk\nabout the red square")]
    assert clip_subtitle(normalise_cues(raw), 0.0, 4.0) == "we're going to talk about the red square"


def test_captions_growing_word_by_word_keep_each_word_once():
    raw = [Cue(0.0, 1.0, "so today we"), Cue(1.0, 2.0, "so today we will cook"),
           Cue(2.0, 3.0, "so today we will cook pasta")]
    assert clip_subtitle(normalise_cues(raw), 0.0, 3.0) == "so today we will cook pasta"


def test_clip_text_keeps_words_a_speaker_really_repeats():
    # Normalising is not idempotent: a second pass would also strip the spoken "d e" repeat.
    cues = normalise_cues([Cue(0.0, 1.0, "a b c"), Cue(1.0, 2.0, "b c d e"), Cue(2.0, 3.0, "d e d e g")])
    once = " ".join(cue.text for cue in cues)
    assert clip_subtitle(cues, 0.0, 3.0) == once
    assert once.endswith("d e g") and once.count("d e") == 2


def test_a_repeat_after_a_pause_is_a_genuine_repetition_and_is_kept():
    cues = normalise_cues([Cue(0.0, 2.0, "[Music]"), Cue(10.0, 12.0, "[Music]")])
    assert [cue.text for cue in cues] == ["[Music]", "[Music]"]


def test_a_single_repeated_word_is_not_taken_for_rolling_overlap():
    cues = normalise_cues([Cue(0.0, 1.0, "I said no"), Cue(1.0, 2.0, "no way")])
    assert clip_subtitle(cues, 0.0, 2.0) == "I said no no way"


def test_normalising_twice_changes_nothing():
    once = parse_vtt(YOUTUBE_VTT) + parse_srt(SRT.replace("00:00:0", "00:01:0"))
    assert normalise_cues(once) == normalise_cues(normalise_cues(once))


def test_normalised_cues_are_sorted_and_never_overlap_in_time():
    cues = normalise_cues([Cue(5.0, 9.0, "second"), Cue(0.0, 6.0, "first"), Cue(5.0, 7.0, "together")])
    assert cues == [Cue(0.0, 5.0, "first"), Cue(5.0, 9.0, "second together")]


# ---------------------------------------------------------------- WebVTT features


def test_vtt_header_style_note_region_blocks_and_cue_identifiers_are_skipped():
    text = """WEBVTT - a title
Kind: captions
Language: en

STYLE
::cue { color: yellow }

REGION
id:fred width:40%

NOTE this is a comment
spanning lines

intro-1
00:01.000 --> 00:03.000 region:fred line:0 align:start
<v Roger>Hello <b>world</b></v>

NOTE between cues

2
00:00:03.000 --> 00:00:05.000
second cue
"""
    assert parse_vtt(text) == [Cue(1.0, 3.0, "Hello world"), Cue(3.0, 5.0, "second cue")]


def test_vtt_multiline_cue_is_single_spaced():
    text = "WEBVTT\n\n00:00:00.000 --> 00:00:02.000\n  two   lines\nof\ttext  \n"
    assert parse_vtt(text) == [Cue(0.0, 2.0, "two lines of text")]


def test_vtt_cue_with_only_markup_or_spaces_is_dropped():
    text = "WEBVTT\n\n00:00:00.000 --> 00:00:01.000\n<c> </c>\n\n00:00:01.000 --> 00:00:02.000\nkept\n"
    assert parse_vtt(text) == [Cue(1.0, 2.0, "kept")]


def test_cue_whose_end_precedes_its_start_keeps_its_text_as_a_point():
    text = "WEBVTT\n\n00:00:05.000 --> 00:00:04.000\nodd timing\n"
    assert parse_vtt(text) == [Cue(5.0, 5.0, "odd timing")]
    assert clip_subtitle(parse_vtt(text), 4.0, 6.0) == "odd timing"


# ---------------------------------------------------------------- SRT features


def test_srt_tags_entities_and_numbering_gaps():
    assert parse_srt(SRT) == [
        Cue(1.0, 3.5, "Hello there, general Kenobi."),
        Cue(4.0, 6.0, "Tom & Jerry > everyone else"),
        Cue(6.5, 8.0, "Numbering may jump."),
    ]


def test_srt_with_crlf_line_ends_and_no_trailing_blank_line_parses_the_same():
    crlf = SRT.rstrip("\n").replace("\n", "\r\n")
    assert parse_srt(crlf) == parse_srt(SRT)


def test_srt_without_blank_lines_between_cues_still_drops_the_numbers():
    text = "1\n00:00:01,000 --> 00:00:02,000\nfirst\n2\n00:00:02,000 --> 00:00:03,000\nsecond"
    assert [cue.text for cue in parse_srt(text)] == ["first", "second"]


def test_an_arrow_in_cue_text_is_text_not_a_timing_line(tmp_path):
    # Only a cue's timing line is parsed as timing: "-->" inside its text used to fail the whole file.
    text = ("1\n00:00:01,000 --> 00:00:02,000\nClick File --> Save\nthen quit\n\n"
            "2\n00:00:02,000 --> 00:00:03,000\n--> next\n")
    assert parse_srt(text) == [Cue(1.0, 2.0, "Click File --> Save then quit"), Cue(2.0, 3.0, "--> next")]
    vtt = "WEBVTT\n\n00:00:01.000 --> 00:00:02.000\na --> b\n"
    assert parse_vtt(vtt) == [Cue(1.0, 2.0, "a --> b")]
    path = tmp_path / "arrows.srt"
    path.write_text(text)
    assert [cue.text for cue in load_subtitles(path)] == ["Click File --> Save then quit", "--> next"]


def test_a_timing_line_that_starts_a_cue_is_still_checked_when_text_has_arrows(tmp_path):
    error = _load_error(tmp_path, "bad.srt", b"1\n00:00:01,000 --> 00:00:02,000\nx --> y\n\n2\n00:00:0 --> 00:00:03,000\nz\n")
    assert error.line == 6 and "malformed" in error.reason


def test_escaped_angle_brackets_stay_as_literal_text():
    text = "1\n00:00:01,000 --> 00:00:02,000\nuse &lt;i&gt; for italics, 5 < 6 and 7 > 3\n"
    assert parse_srt(text)[0].text == "use <i> for italics, 5 < 6 and 7 > 3"


# ---------------------------------------------------------------- JSON cues


def test_json_list_of_cues_in_seconds_or_timestamps():
    text = json.dumps([{"start": 0.5, "end": 2, "text": "one &amp; two"},
                       {"start": "00:00:02.500", "end": "00:00:04,000", "text": "three"}])
    assert parse_json_cues(text) == [Cue(0.5, 2.0, "one & two"), Cue(2.5, 4.0, "three")]


def test_json_cues_under_a_key_and_with_duration_instead_of_end():
    assert parse_json_cues(json.dumps({"cues": [{"start": 1, "duration": 2, "text": "a"}]})) == [Cue(1.0, 3.0, "a")]
    assert parse_json_cues(json.dumps({"segments": [{"start": 1, "end": 2, "text": " b"}]})) == [Cue(1.0, 2.0, "b")]


def test_youtube_json3_events_become_cues():
    text = json.dumps({"events": [
        {"tStartMs": 0, "dDurationMs": 5000, "id": 1, "wpWinPosId": 1},  # window definition
        {"tStartMs": 100, "dDurationMs": 2500, "segs": [{"utf8": "hello"}, {"utf8": " world", "tOffsetMs": 400}]},
        {"tStartMs": 2600, "dDurationMs": 10, "aAppend": 1, "segs": [{"utf8": "\n"}]},
        {"tStartMs": 2600, "dDurationMs": 2000, "segs": [{"utf8": "again"}]},
    ]})
    assert parse_json_cues(text) == [Cue(0.1, 2.6, "hello world"), Cue(2.6, 4.6, "again")]


# ---------------------------------------------------------------- encodings (files on disk)

UNICODE_SRT = "1\n00:00:01,000 --> 00:00:02,000\nCafé “déjà vu” — naïve\n"


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be"])
def test_unicode_file_decodes_in_each_encoding(tmp_path, encoding):
    data = UNICODE_SRT.encode(encoding)
    if encoding in ("utf-16-le", "utf-16-be"):  # with an explicit BOM, as Windows tools write them
        data = ("\ufeff" + UNICODE_SRT).encode(encoding)
    path = tmp_path / "video.srt"
    path.write_bytes(data)
    assert load_subtitles(path) == [Cue(1.0, 2.0, "Café “déjà vu” — naïve")]


def test_latin1_file_falls_back_to_latin1(tmp_path):
    path = tmp_path / "video.vtt"
    path.write_bytes("WEBVTT\n\n00:00:01.000 --> 00:00:02.000\nça coûte 5 ¤, señor\n".encode("latin-1"))
    assert load_subtitles(path)[0].text == "ça coûte 5 ¤, señor"


def test_cp1252_curly_quotes_from_windows_tools_are_decoded(tmp_path):
    path = tmp_path / "video.srt"
    path.write_bytes("1\r\n00:00:01,000 --> 00:00:02,000\r\nit’s “fine”\r\n".encode("cp1252"))
    assert load_subtitles(path)[0].text == "it’s “fine”"


def test_bom_is_removed_and_line_ends_normalised():
    assert read_subtitle_text(b"\xef\xbb\xbfWEBVTT\r\n\r\nx") == "WEBVTT\n\nx"
    assert read_subtitle_text("WEBVTT\r\n".encode("utf-16")) == "WEBVTT\n"


def test_bomless_utf16_is_recognised_by_its_nul_bytes():
    assert read_subtitle_text("WEBVTT\n\nhé".encode("utf-16-le")) == "WEBVTT\n\nhé"


def test_language_tagged_name_is_read_by_its_last_suffix(tmp_path):
    path = tmp_path / "abc.en.vtt"
    path.write_text(YOUTUBE_VTT, encoding="utf-8")
    assert load_subtitles(path) == parse_vtt(YOUTUBE_VTT)
    json_path = tmp_path / "abc.en.json"
    json_path.write_text(json.dumps([{"start": 0, "end": 1, "text": "x"}]))
    assert load_subtitles(str(json_path)) == [Cue(0.0, 1.0, "x")]


# ---------------------------------------------------------------- broken files -> StageError


def _load_error(tmp_path, name: str, data: bytes) -> StageError:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(StageError) as info:
        load_subtitles(path)
    error = info.value
    assert error.stage == "subtitles" and error.source == str(path)
    return error


def test_truncated_timing_line_names_the_line(tmp_path):
    data = b"WEBVTT\n\n00:00:01.000 --> 00:00:02.000\nfine\n\n00:00:03.000 --> 00:00:0"
    error = _load_error(tmp_path, "cut.vtt", data)
    assert error.line == 6 and "line 6" in error.reason and "'00:00:0'" in error.reason


def test_timing_line_without_end_time_is_reported_as_truncated(tmp_path):
    error = _load_error(tmp_path, "cut.srt", b"1\n00:00:01,000 -->")
    assert "truncated" in error.reason and error.line == 2


def test_garbage_text_says_no_header_and_no_timings(tmp_path):
    error = _load_error(tmp_path, "junk.vtt", b"<html><body>404 Not Found</body></html>")
    assert "no 'WEBVTT' header" in error.reason and "no cue timing lines" in error.reason
    assert "404" in error.reason


def test_binary_file_is_refused(tmp_path):
    error = _load_error(tmp_path, "image.vtt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    assert "binary" in error.reason


def test_file_with_header_but_zero_cues_is_refused(tmp_path):
    error = _load_error(tmp_path, "empty.vtt", b"WEBVTT\nKind: captions\nLanguage: en\n\n")
    assert "no cue timing lines" in error.reason


def test_file_with_timings_but_no_text_is_refused(tmp_path):
    error = _load_error(tmp_path, "blank.srt", b"1\n00:00:01,000 --> 00:00:02,000\n\n2\n00:00:02,000 --> 00:00:03,000\n")
    assert "2 cue timing lines but no cue text" in error.reason


def test_empty_file_is_refused(tmp_path):
    assert "empty" in _load_error(tmp_path, "zero.srt", b"").reason


@pytest.mark.parametrize("data, expected", [
    (b"[{\"start\": 1, \"end\": 2, \"text\": \"a\"}", "not valid JSON"),
    (b"{\"title\": \"not cues\"}", "no 'cues', 'segments' or 'events'"),
    (b"[[1, 2, \"a\"]]", "cue 0 is a list"),
    (b"[{\"end\": 2, \"text\": \"a\"}]", "cue 0 has no 'start'"),
    (b"[{\"start\": \"soon\", \"end\": 2, \"text\": \"a\"}]", "'soon'"),
    (b"[]", "no cues with text"),
    (b"\"just a string\"", "expected a JSON list of cues, found str"),
])
def test_broken_json_is_refused_with_its_reason(tmp_path, data, expected):
    assert expected in _load_error(tmp_path, "cues.json", data).reason


def test_missing_file_directory_and_unknown_suffix_are_refused(tmp_path):
    with pytest.raises(StageError, match="not found"):
        load_subtitles(tmp_path / "absent.vtt")
    (tmp_path / "dir.srt").mkdir()
    with pytest.raises(StageError, match="not a regular file"):
        load_subtitles(tmp_path / "dir.srt")
    with pytest.raises(StageError, match=r"unsupported subtitle format '\.ass'"):
        load_subtitles(tmp_path / "video.ass")


def test_damaged_files_only_ever_raise_stage_error(tmp_path):
    """Random cuts, byte flips and garbage, seeded: every outcome is cues or a StageError."""
    rng = random.Random(0)
    sources = [(YOUTUBE_VTT.encode(), "x.vtt"), (SRT.encode("utf-16"), "x.srt"),
               (json.dumps({"events": [{"tStartMs": 1, "segs": [{"utf8": "a"}]}]}).encode(), "x.json")]
    for trial in range(300):
        data, name = sources[trial % len(sources)]
        data = bytearray(data[: rng.randrange(len(data) + 1)])
        for _ in range(rng.randrange(4)):
            if data:
                data[rng.randrange(len(data))] = rng.randrange(256)
        path = tmp_path / f"{trial}{name}"
        path.write_bytes(bytes(data))
        try:
            cues = load_subtitles(path)
        except StageError as exc:
            assert exc.reason
        else:
            assert cues and all(isinstance(cue, Cue) and cue.text for cue in cues)


# ---------------------------------------------------------------- clip text


def test_clip_takes_cues_overlapping_a_half_open_span():
    cues = [Cue(0.0, 2.0, "a"), Cue(2.0, 4.0, "b"), Cue(4.0, 6.0, "c")]
    assert clip_subtitle(cues, 2.0, 4.0) == "b"
    assert clip_subtitle(cues, 1.9, 4.0) == "a b"
    assert clip_subtitle(cues, 6.0, 9.0) == ""


def test_zero_length_cue_belongs_to_the_span_that_contains_it():
    cues = [Cue(3.0, 3.0, "blink")]
    assert clip_subtitle(cues, 3.0, 4.0) == "blink"
    assert clip_subtitle(cues, 2.0, 3.0) == ""


def test_a_fifo_named_like_a_subtitle_file_is_refused_without_blocking(tmp_path):
    import os

    fifo = tmp_path / "x.vtt"
    os.mkfifo(fifo)
    with pytest.raises(StageError, match="not a regular file"):
        load_subtitles(fifo)
