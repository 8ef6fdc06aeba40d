"""tools/asr_wer.py: word error rate of ASR VTTs against a corpus's own subtitles."""

from __future__ import annotations

import json
import random

from tools.asr_wer import compare, edit_distance, main, word_error_rate, words


def _reference_distance(a: list[str], b: list[str]) -> int:
    """Textbook dynamic programme, for checking the vectorised one."""
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def test_edit_distance_counts_substitutions_deletions_and_insertions():
    assert word_error_rate("the cat sat on the mat", "the cat sat on the mat") == (0, 6)
    assert word_error_rate("the cat sat on the mat", "The cat sat on a mat.") == (1, 6)
    assert word_error_rate("the cat sat on the mat", "the cat on the mat") == (1, 6)
    assert word_error_rate("the cat sat", "well the cat sat down") == (2, 3)
    assert word_error_rate("", "anything") == (1, 0) and edit_distance([], []) == 0
    assert words("Hello, World! It's 'quoted'") == ["hello", "world", "it's", "quoted"]
    rng = random.Random(0)
    for _ in range(200):
        a = [rng.choice("abcd") for _ in range(rng.randint(0, 9))]
        b = [rng.choice("abcd") for _ in range(rng.randint(0, 9))]
        assert edit_distance(a, b) == _reference_distance(a, b)


def test_compare_pairs_each_videos_own_subtitles_with_its_asr_vtt(tmp_path, capsys):
    corpus, asr = tmp_path / "corpus", tmp_path / "asr" / "subtitles"
    corpus.mkdir()
    asr.mkdir(parents=True)
    for name in ("a", "b", "c"):
        (corpus / f"{name}.mp4").write_bytes(b"")  # only listed, never opened
    (corpus / "a.en.vtt").write_text("WEBVTT\n\n00:00:00.000 --> 00:00:02.000\nOne two three four.\n")
    (corpus / "b.srt").write_text("1\n00:00:00,000 --> 00:00:02,000\nFive six.\n")
    (asr / "a.vtt").write_text("WEBVTT\n\n00:00:00.000 --> 00:00:01.000\none two\n\n"
                               "00:00:01.000 --> 00:00:02.000\nthree for\n")
    (asr / "c.vtt").write_text("WEBVTT\n\n00:00:00.000 --> 00:00:01.000\nno reference\n")
    report = compare(corpus, tmp_path / "asr")
    assert report["per_video"] == {"a": {"edits": 1, "reference_words": 4, "wer": 0.25}}
    assert report["skipped"] == {"b": "no ASR VTT", "c": "no subtitle file of its own"}
    assert main(["--input", str(corpus), "--asr", str(tmp_path / "asr"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["wer"] == 0.25
