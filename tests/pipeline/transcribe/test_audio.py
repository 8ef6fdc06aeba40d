"""pipeline/transcribe/audio.py on real ffmpeg media: every container and channel layout decodes
to 16 kHz mono at the right length and level; no audio, undecodable audio, silence and timeouts
are told apart; blocks overlap exactly and an hour never sits in memory."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest

from pipeline.errors import StageError
from pipeline.transcribe.audio import SAMPLE_RATE, BlockSpec, iter_audio_blocks, probe_audio, rms_dbfs
from tests.transcription import make_av, make_undecodable_audio

#: lavfi's sine has amplitude 1/8: RMS 0.125 / sqrt(2) = -21.1 dBFS.
TONE_DBFS = 20 * math.log10(0.125 / math.sqrt(2))


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    folder = tmp_path_factory.mktemp("audio_media")
    return {
        "aac_mp4": make_av(folder / "tone.mp4", 3.0),
        "stereo_mkv": make_av(folder / "stereo.mkv", 3.0, channels=2),
        "surround_mp4": make_av(folder / "surround.mp4", 3.0, channels=6),
        "opus_webm": make_av(folder / "opus.webm", 3.0),
        "silence": make_av(folder / "silence.mp4", 3.0, audio="anullsrc"),
        "no_audio": make_av(folder / "mute.mp4", 3.0, audio=None),
        "undecodable": make_undecodable_audio(folder / "broken.mkv", 3.0),
        "long": make_av(folder / "long.mp4", 60.0),
    }


def _decode_all(path, spec=BlockSpec(30.0, 5.0)):
    return list(iter_audio_blocks(path, spec))


@pytest.mark.parametrize("name, codec, channels, level_dbfs", [
    ("aac_mp4", "aac", 1, TONE_DBFS),
    ("stereo_mkv", "aac", 2, TONE_DBFS - 3.0),   # left only; ffmpeg's downmix weighs each side 1/sqrt(2)
    ("surround_mp4", "aac", 6, TONE_DBFS),       # centre only: the dialogue channel is kept whole
    ("opus_webm", "opus", 1, TONE_DBFS),
])
def test_every_container_and_layout_decodes_to_16khz_mono_at_its_length_and_level(media, name, codec, channels,
                                                                                  level_dbfs):
    info = probe_audio(media[name])
    assert (info.codec, info.channels) == (codec, channels)
    [block] = _decode_all(media[name])
    assert block.samples.dtype == np.float32 and block.samples.ndim == 1 and block.is_last
    assert abs(block.duration_s - 3.0) < 0.05  # encoder priming/padding: a frame at most
    assert abs(rms_dbfs(block.samples) - level_dbfs) < 0.5


def test_silence_decodes_to_digital_silence(media):
    [block] = _decode_all(media["silence"])
    assert abs(block.duration_s - 3.0) < 0.05 and rms_dbfs(block.samples) == -math.inf


def test_no_audio_stream_and_undecodable_audio_are_stage_errors_saying_so(media):
    with pytest.raises(StageError) as no_audio:
        probe_audio(media["no_audio"])
    assert no_audio.value.stage == "audio" and "no audio stream (found streams: video)" in no_audio.value.reason
    assert probe_audio(media["undecodable"]).codec == "flac"  # the container claims an audio stream
    with pytest.raises(StageError) as broken:
        _decode_all(media["undecodable"])
    assert broken.value.stage == "audio" and "cannot decode the audio stream" in broken.value.reason


def test_unreadable_missing_and_remote_sources_are_refused_before_ffmpeg_decodes(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "junk.mp4").write_bytes(b"not a video at all" * 10)
    for path, stage, words in [(tmp_path / "empty.mp4", "probe", "empty"), (tmp_path / "junk.mp4", "probe", "cannot read"),
                               (tmp_path / "none.mp4", "probe", "not found"),
                               ("http://example.com/v.mp4", "probe", "only local files")]:
        with pytest.raises(StageError) as refused:
            probe_audio(path)
        assert refused.value.stage == stage and words in refused.value.reason
    with pytest.raises(StageError, match="only local files"):
        _decode_all("http://example.com/v.mp4")


def test_blocks_overlap_exactly_and_rejoin_into_the_one_pass_decode(media):
    spec = BlockSpec(block_s=20.0, overlap_s=5.0)
    blocks = _decode_all(media["long"], spec)
    assert [b.start_s for b in blocks] == [0.0, 15.0, 30.0, 45.0]
    assert [b.is_last for b in blocks] == [False, False, False, True]
    assert all(len(b.samples) == 20 * SAMPLE_RATE for b in blocks[:-1])
    [whole] = _decode_all(media["long"], BlockSpec(block_s=120.0, overlap_s=0.0))
    overlap = int(spec.overlap_s * SAMPLE_RATE)
    rejoined = np.concatenate([blocks[0].samples] + [b.samples[overlap:] for b in blocks[1:]])
    assert np.array_equal(rejoined, whole.samples)
    for block in blocks[1:]:  # each block starts where its start_s says
        start = int(block.start_s * SAMPLE_RATE)
        assert np.array_equal(block.samples, whole.samples[start:start + len(block.samples)])


def test_decoding_holds_about_two_blocks_whatever_the_length(media):
    spec = BlockSpec(block_s=2.0, overlap_s=0.5)
    block_bytes = 2 * SAMPLE_RATE * 4
    tracemalloc.start()
    try:
        count = sum(1 for _ in iter_audio_blocks(media["long"], spec))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 40  # 60 s in steps of 1.5 s
    # the whole 60 s would be 30 blocks' worth
    assert peak < 5 * block_bytes, f"peak {peak} bytes: more than a few blocks of {block_bytes} held"


def test_a_decode_past_its_timeout_is_killed_and_says_so(media):
    with pytest.raises(StageError, match="timed out after 0.001 s"):
        _decode_all(media["long"], BlockSpec(block_s=30.0, overlap_s=5.0, timeout_s=0.001))
