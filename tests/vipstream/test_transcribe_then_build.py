"""End to end, as a user types it: videos with real speech (espeak-ng) and no subtitles ->
`vipstream transcribe` -> `vipstream build --input ASR/manifest.jsonl` -> shards whose clips carry
the ASR text and say where it came from; `vipstream build --asr` does both in one command;
`vipstream inspect` shows the ASR coverage. The tiny Whisper's text is noise: the test follows
the text from the VTT into the clips, not its words."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from pipeline.builder.subtitles import clip_subtitle, load_subtitles
from pipeline.inspect_output import format_report, inspect_output
from tests.conftest import vipstream_cmd
from tests.transcription import espeak_available, make_av, make_speech_video
from vipstream.cli import main
from vipstream.schema import CLIP_META_FIELDS, CLIP_SUBTITLE_SOURCE_FIELD, asr_subtitle_path

pytestmark = pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed (apt-get install "
                                                                "espeak-ng; `make setup` does it)")

#: Test settings for the tiny Whisper (see tests/pipeline/transcribe/test_job.py: greedy, short
#: windows, no repeat filter over its looping noise).
TINY = {"language": "en", "temperatures": [0.0], "max_new_tokens": 16, "block_s": 30.0, "overlap_s": 5.0,
        "cue_compression_ratio_threshold": 0.0, "max_ngram_repeats": 0, "drop_repeated_cues": False}


@pytest.fixture(scope="module")
def speech_corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("speech_corpus")
    make_speech_video(folder / "talk.mp4", ["Good morning, this is the first test sentence.",
                                            "The weather today is sunny and warm."], pause_s=1.0)
    make_speech_video(folder / "lecture.mp4", ["Speech recognition turns sound into text.",
                                               "Clips are cut at the end of a sentence."], pause_s=1.5)
    make_av(folder / "quiet.mp4", 3.0, audio="anullsrc")
    make_av(folder / "captioned.mp4", 6.0)
    (folder / "captioned.vtt").write_text("WEBVTT\n\n00:00:00.000 --> 00:00:05.000\nA subtitle file of its own.\n")
    return folder


@pytest.fixture(scope="module")
def tiny_yaml(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("asr_config") / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


@pytest.fixture(scope="module")
def two_steps(speech_corpus, tiny_whisper, tiny_yaml, ray_local, tmp_path_factory):
    root = tmp_path_factory.mktemp("two_steps")
    assert main(["transcribe", "--input", str(speech_corpus), "--output", str(root / "asr"), "--asr",
                 str(tiny_whisper), "--config", str(tiny_yaml), "--no-progress"]) == 0
    assert main(["build", "--input", str(root / "asr" / "manifest.jsonl"), "--output", str(root / "out"),
                 "--short-side-px", "32", "--no-progress"]) == 0
    return root


def _clips(out: Path) -> dict[str, dict]:
    clips = {}
    for tar in sorted((out / "shards").glob("*.tar")):
        with tarfile.open(tar) as handle:
            for member in handle.getmembers():
                if member.name.endswith(".json"):
                    clips[member.name[:-5]] = json.loads(handle.extractfile(member).read())
    return clips


def test_built_clips_carry_the_asr_text_and_say_which_model_made_it(two_steps, speech_corpus, tiny_whisper):
    clips = _clips(two_steps / "out")
    by_video = {}
    for meta in clips.values():
        by_video.setdefault(meta["video_id"], []).append(meta)
    assert set(by_video) == {"talk", "lecture", "captioned"}
    for video_id in ("talk", "lecture"):
        cues = load_subtitles(asr_subtitle_path(two_steps / "asr", video_id))
        for meta in by_video[video_id]:
            assert meta["subtitle"] and meta["subtitle"] == clip_subtitle(cues, *meta["span"])
            assert meta[CLIP_SUBTITLE_SOURCE_FIELD] == {"kind": "asr", "model": str(tiny_whisper),
                                                        "revision": None, "language": "en"}
            assert meta["source"] == str(speech_corpus / f"{video_id}.mp4")  # the video's path stays
            assert set(meta) == set(CLIP_META_FIELDS) | {CLIP_SUBTITLE_SOURCE_FIELD}
    [own] = by_video["captioned"]
    assert own["subtitle"] == "A subtitle file of its own." and CLIP_SUBTITLE_SOURCE_FIELD not in own


def test_the_build_says_why_a_video_got_no_asr_subtitles(two_steps, tiny_whisper):
    import pyarrow.parquet as pq

    [error] = pq.read_table(two_steps / "out" / "errors.parquet").to_pylist()
    assert error["video_id"] == "quiet" and error["stage"] == "subtitles"
    assert error["reason"].startswith(f"no subtitles: speech recognition with {tiny_whisper} made none "
                                      f"(asr: no speech: the audio is silent")


def test_inspect_shows_asr_coverage_beside_the_captions(two_steps, tiny_whisper):
    report = inspect_output(two_steps / "out")
    clips = report["clips"]
    assert report["asr"]["clips"] == clips - 1 and report["asr"]["models"] == {str(tiny_whisper): clips - 1}
    assert f"asr        {clips - 1} clips with ASR text" in format_report(report)


def test_build_with_asr_transcribes_then_builds_the_same_clips_in_one_command(two_steps, speech_corpus,
                                                                             tiny_whisper, tiny_yaml, tmp_path):
    out = tmp_path / "out"
    assert main(["build", "--input", str(speech_corpus), "--asr", str(tiny_whisper), "--asr-config", str(tiny_yaml),
                 "--output", str(out), "--short-side-px", "32", "--no-progress"]) == 0
    assert (out / "asr" / "manifest.jsonl").exists()
    one, two = _clips(out), _clips(two_steps / "out")
    assert {k: (m["span"], m["subtitle"]) for k, m in one.items()} == {k: (m["span"], m["subtitle"])
                                                                      for k, m in two.items()}
    report = format_report(inspect_output(out))
    assert "asr/: 2/3 videos without subtitles transcribed, 1 failed" in report


def test_cli_exit_code_2_for_an_unloadable_or_missing_model(speech_corpus, two_steps, tmp_path):
    missing = subprocess.run([*vipstream_cmd(), "transcribe", "--input", str(speech_corpus), "--output",
                              str(tmp_path / "asr"), "--asr", str(tmp_path / "no-model")],
                             capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "cannot load ASR model" in missing.stderr
    no_model = subprocess.run([*vipstream_cmd(), "transcribe", "--input", str(speech_corpus), "--output",
                               str(tmp_path / "asr")], capture_output=True, text=True, timeout=300)
    assert no_model.returncode == 2 and "--asr" in no_model.stderr
