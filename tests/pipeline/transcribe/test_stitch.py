"""pipeline/transcribe/stitch.py on hand-written window outputs: blocks of a video [0, 120),
[110, 230), ... (block_s 120, overlap_s 10: seams at 115, 225, ...), as the model would time them."""

from __future__ import annotations

import pytest

from pipeline.builder.subtitles import Cue
from pipeline.transcribe.stitch import (BlockTranscript, RepeatRules, Segment, clean_text, drop_repeats,
                                        longest_ngram_run, stitch_blocks, text_compression_ratio)


def _block(index: int, segments: list[tuple[float, float, str]], *, start_s: float | None = None,
           end_s: float | None = None) -> BlockTranscript:
    start = 110.0 * index if start_s is None else start_s
    end = start + 120.0 if end_s is None else end_s
    return BlockTranscript(index, start, end, tuple(Segment(a, b, t) for a, b, t in segments))


def _texts(cues: list[Cue]) -> list[str]:
    return [c.text for c in cues]


def _words(cues: list[Cue]) -> list[str]:
    return " ".join(c.text for c in cues).split()


def test_one_block_gives_its_segments_cleaned_in_order():
    cues = stitch_blocks([_block(0, [(5.0, 8.0, " Second\x0b one. "), (0.5, 4.0, "First \ufffdone.")],
                                 end_s=30.0)])
    assert cues == [Cue(0.5, 4.0, "First one."), Cue(5.0, 8.0, "Second one.")]


def test_times_past_the_audio_are_clamped_and_segments_beyond_it_dropped():
    cues = stitch_blocks([_block(0, [(1.0, 9.5, "inside and past the end"), (9.8, 14.0, "after the end")],
                                 end_s=9.0)])
    assert cues == [Cue(1.0, 9.0, "inside and past the end")]


def test_a_segment_heard_by_both_blocks_in_their_overlap_is_kept_once():
    both = (111.0, 113.0, "Heard twice.")
    cues = stitch_blocks([_block(0, [(100.0, 110.5, "Before."), both]), _block(1, [both, (116.0, 118.0, "After.")])])
    assert _texts(cues) == ["Before.", "Heard twice.", "After."]


def test_a_sentence_whole_in_the_first_block_is_taken_from_it_not_from_the_cut_copy():
    # [108, 117]: block 0 heard it all; block 1 starts at 110, in its middle
    cues = stitch_blocks([_block(0, [(108.0, 117.0, "And then we went to the store.")]),
                          _block(1, [(110.0, 117.0, "we went to the store."), (117.5, 121.0, "Next.")])])
    assert _texts(cues) == ["And then we went to the store.", "Next."]


def test_a_sentence_cut_at_the_first_blocks_edge_is_taken_from_the_next_block():
    # [112, 123]: block 0 ends at 120 in its middle; block 1 heard it all
    cues = stitch_blocks([_block(0, [(100.0, 111.0, "Before."), (112.0, 120.0, "Then we went to the st")]),
                          _block(1, [(112.0, 123.0, "Then we went to the store.")])])
    assert _texts(cues) == ["Before.", "Then we went to the store."]


def test_a_sentence_longer_than_the_overlap_is_joined_without_repeating_or_dropping_words():
    # [108, 124] crosses the whole overlap: each block has only a cut copy; the seam keeps block 0's
    # head (midpoint 114) and block 1's tail (midpoint 117), minus the words both heard
    cues = stitch_blocks([_block(0, [(108.0, 120.0, "And then we went to the st")]),
                          _block(1, [(110.0, 124.0, "we went to the store today.")])])
    assert _words(cues) == "And then we went to the store today.".split()
    assert [c.start_s for c in cues] == [108.0, 110.0] and cues[0].end_s == 110.0  # no time overlap


def test_a_word_cut_at_the_next_blocks_start_is_dropped_when_the_first_block_said_it_whole():
    cues = stitch_blocks([_block(0, [(104.0, 114.9, "so we went to the store.")]),
                          _block(1, [(110.0, 117.0, "ent to the store. And back."), (117.0, 119.0, "Home.")])])
    assert _words(cues) == "so we went to the store. And back. Home.".split()


def test_one_word_said_twice_across_a_seam_is_speech_not_a_duplicate():
    cues = stitch_blocks([_block(0, [(113.0, 114.5, "No.")]), _block(1, [(115.5, 116.5, "No.")])])
    assert _texts(cues) == ["No.", "No."]


def test_empty_and_silent_blocks_leave_the_others_intact():
    blocks = [_block(0, [(3.0, 5.0, "Start.")]), _block(1, []), _block(2, [(230.0, 232.0, "End.")], end_s=240.0)]
    assert _texts(stitch_blocks(blocks)) == ["Start.", "End."]
    assert stitch_blocks([_block(0, []), _block(1, [(200.0, 201.0, "   \ufffd ")])]) == []


def test_blocks_arrive_in_any_order_and_three_blocks_stitch_at_both_seams():
    blocks = [_block(2, [(226.0, 230.0, "three")], end_s=235.0), _block(0, [(10.0, 12.0, "one")]),
              _block(1, [(114.0, 116.0, "two"), (224.0, 226.0, "two late")])]
    # "two" (midpoint 115) belongs to block 1, whose span starts at the seam 115; "two late"
    # (midpoint 225) is block 2's side of the second seam
    assert _texts(stitch_blocks(blocks)) == ["one", "two", "three"]


def test_clean_text_removes_control_format_and_replacement_characters():
    assert clean_text(" a\tb\n c\u200b d\ufffd\x07 e ") == "a b c d e"


def test_compression_ratio_and_ngram_runs_measure_repetition():
    assert text_compression_ratio("Thank you. " * 10) > 2.4
    assert text_compression_ratio("The quick brown fox jumps over the lazy dog near the river bank.") < 2.4
    assert longest_ngram_run("the the the the end".split()) == 4
    assert longest_ngram_run("thank you thank you thank you".split()) == 3
    assert longest_ngram_run([]) == 0


@pytest.mark.parametrize("text, rule", [
    ("Thank you. " * 12, "compression"),
    ("I I I I know", "ngram_loop"),
])
def test_cues_that_still_loop_are_dropped_by_their_rule(text, rule):
    kept, counts = drop_repeats([Cue(0, 1, "Fine."), Cue(1, 9, text)], RepeatRules())
    assert _texts(kept) == ["Fine."] and getattr(counts, rule) == 1 and counts.total == 1


def test_a_cue_repeating_the_one_before_is_dropped_but_real_short_repeats_inside_a_cue_stay():
    cues = [Cue(0, 1, "Thanks for watching!"), Cue(1, 2, "thanks for watching"), Cue(2, 3, "No, no, no."),
            Cue(3, 4, "Bye.")]
    kept, counts = drop_repeats(cues, RepeatRules())
    assert _texts(kept) == ["Thanks for watching!", "No, no, no.", "Bye."] and counts.repeated_cue == 1
    kept, counts = drop_repeats(cues, RepeatRules(0, 0, False))
    assert kept == cues and counts.total == 0
