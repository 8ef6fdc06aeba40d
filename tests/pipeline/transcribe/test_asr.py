"""pipeline/transcribe/asr.py with a tiny random Whisper built offline (tests/transcription.py):
what loads, what is refused, and that Whisper's guards reach `generate`. The text is noise; the
plumbing is what is tested."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from pipeline.transcribe.asr import AsrLoadError, AsrModel, block_features, check_asr_model, load_feature_extractor
from pipeline.transcribe.audio import BlockSpec, iter_audio_blocks
from pipeline.transcribe.config import TranscribeConfig
from tests.transcription import make_av
from vipstream.config import ConfigError

FAST = dict(temperatures=(0.0,), max_new_tokens=16)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """As an ASR actor with num_cpus=1 runs (two threads on the shared 2-core box are 10x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def features(tiny_whisper, tmp_path_factory):
    """Log-mel features of two real blocks: a 4 s tone and a 3 s chirp (ffmpeg-made)."""
    folder = tmp_path_factory.mktemp("asr_audio")
    extractor = load_feature_extractor(str(tiny_whisper))
    out = []
    for name, source in (("tone.mp4", "sine=frequency=440"), ("chirp.mp4", "sine=frequency=1200")):
        [block] = iter_audio_blocks(make_av(folder / name, 4.0 if name == "tone.mp4" else 3.0, audio=source),
                                    BlockSpec(30.0, 5.0))
        out.append(block_features(extractor, block.samples))
    return out


def test_the_tiny_whisper_is_what_the_transformers_asr_pipeline_runs_with_timestamps(tiny_whisper):
    from transformers import pipeline

    asr = pipeline("automatic-speech-recognition", model=str(tiny_whisper))
    assert asr.type == "seq2seq_whisper"
    out = asr(np.zeros(16000 * 2, dtype=np.float32), return_timestamps=True, generate_kwargs={"max_new_tokens": 8})
    assert "chunks" in out and all(len(chunk["timestamp"]) == 2 for chunk in out["chunks"])


def test_check_asr_model_records_the_model_and_refuses_what_cannot_work(tiny_whisper, tiny_blip, tmp_path):
    record = check_asr_model(TranscribeConfig(asr=str(tiny_whisper)))
    assert record["model_type"] == "whisper" and record["multilingual"] and record["num_mel_bins"] == 80
    assert record["model_path"] == str(tiny_whisper.resolve()) and record["sampling_rate"] == 16000
    with pytest.raises(AsrLoadError, match="no such folder"):
        check_asr_model(TranscribeConfig(asr=str(tmp_path / "nowhere")))
    with pytest.raises(AsrLoadError, match="'blip' is not a Whisper-family model"):
        check_asr_model(TranscribeConfig(asr=str(tiny_blip)))
    with pytest.raises(ConfigError, match="not one of the model's languages"):
        check_asr_model(TranscribeConfig(asr=str(tiny_whisper), language="klingon"))
    with pytest.raises(ConfigError, match="no speech recognition model"):
        check_asr_model(TranscribeConfig())


def test_a_model_without_timestamp_tokens_is_refused(tiny_whisper, tmp_path):
    import json
    import shutil

    broken = tmp_path / "no-timestamps"
    shutil.copytree(tiny_whisper, broken)
    generation = json.loads((broken / "generation_config.json").read_text())
    del generation["no_timestamps_token_id"]
    (broken / "generation_config.json").write_text(json.dumps(generation))
    with pytest.raises(AsrLoadError, match="cannot predict timestamps"):
        check_asr_model(TranscribeConfig(asr=str(broken)))


def test_a_batch_of_blocks_gives_one_result_each_with_segments_inside_their_window(tiny_whisper, features):
    model = AsrModel(TranscribeConfig(asr=str(tiny_whisper), language="en", **FAST))
    results = model(features)
    assert len(results) == 2 and all(r.language == "en" for r in results)
    for result in results:
        assert result.segments, "the tiny model says something on every block"
        assert all(0.0 <= s.start_s <= s.end_s <= 30.0 and isinstance(s.text, str) for s in result.segments)
    assert model([]) == []


def test_without_a_language_whisper_detects_one_per_block(tiny_whisper, features):
    model = AsrModel(TranscribeConfig(asr=str(tiny_whisper), **FAST))
    codes = {token[2:-2] for token in model.model.generation_config.lang_to_id}
    assert all(r.language in codes for r in model(features))


def test_the_no_speech_and_logprob_guards_reach_generate(tiny_whisper, features):
    # logprob 0 is always failed and any no-speech probability is above 0: every window is skipped
    cfg = TranscribeConfig(asr=str(tiny_whisper), language="en", logprob_threshold=0.0, no_speech_threshold=0.0,
                           **FAST)
    assert all(r.segments == () for r in AsrModel(cfg)(features))


@pytest.mark.parametrize("guard", [{"logprob_threshold": 0.0, "no_speech_threshold": None},
                                   {"compression_ratio_threshold": 0.0, "no_speech_threshold": None}])
def test_a_failed_guard_falls_back_to_the_next_temperature(tiny_whisper, features, guard):
    base = TranscribeConfig(asr=str(tiny_whisper), language="en", max_new_tokens=16, **guard)
    greedy = AsrModel(dataclasses.replace(base, temperatures=(0.0,)))
    fallback = AsrModel(dataclasses.replace(base, temperatures=(0.0, 1.0)))
    torch.manual_seed(0)
    greedy_text = [s.text for r in greedy(features) for s in r.segments]
    torch.manual_seed(0)
    sampled_text = [s.text for r in fallback(features) for s in r.segments]
    # every window fails the guard, so what is kept is the temperature-1.0 sample, not the greedy pass
    assert sampled_text != greedy_text


def test_half_precision_on_cpu_falls_back_to_float32(tiny_whisper):
    for dtype in ("auto", "float16", "bfloat16"):
        assert AsrModel(TranscribeConfig(asr=str(tiny_whisper), dtype=dtype)).dtype == torch.float32


def test_config_rejects_guards_and_blocks_that_cannot_work():
    for bad in ({"temperatures": (0.5, 0.0)}, {"temperatures": ()}, {"block_s": 20.0}, {"overlap_s": 70.0},
                {"dtype": "int8"}, {"batch_size": 0}):
        with pytest.raises(ConfigError):
            TranscribeConfig(**bad).validate()
    assert TranscribeConfig(temperatures=("0.0", "0.5")).temperatures == (0.0, 0.5)


def test_configs_transcribe_yaml_holds_every_key_with_the_defaults():
    import dataclasses

    from tests.conftest import REPO_ROOT
    from vipstream.config import load_config, read_yaml_mapping

    path = REPO_ROOT / "configs" / "transcribe.yaml"
    assert set(read_yaml_mapping(path)) == {f.name for f in dataclasses.fields(TranscribeConfig)}
    assert load_config(TranscribeConfig, path) == TranscribeConfig()
