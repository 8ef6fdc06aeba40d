"""Tiny speech recognisers and speech media for tests and benchmarks: a random-init Whisper
with a complete tokenizer (special, language, task and timestamp tokens) built from scratch and
saved to disk (nothing is downloaded), and real ffmpeg media with tones, silence, odd channel
layouts and containers, and espeak-ng speech."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from pipeline.transcribe.config import TranscribeConfig

#: Words the tiny tokenizer knows as whole tokens, so its random output reads as words (its
#: byte tokens outside printable ASCII are suppressed). Punctuation makes sentence ends.
_WORDS = ("the a of and to in is it that was for on are with as at be this have from or one had by "
          "but not what all were when we there can an your which their said if do will each about how "
          "up out them then she many some so these would other into has more her two like him see "
          "time could no make than first been its who now people my made over did down only way find "
          "use may water long little very after words called just where most know").split()
_PUNCTUATION = (".", ",", "?", "!")
WHISPER_SAMPLE_RATE = 16000


def save_tiny_whisper(path: Path, *, seed: int = 0, d_model: int = 32, layers: int = 1, heads: int = 2,
                      num_mel_bins: int = 80, init_std: float = 0.5, text_scale: float = 2.0,
                      stamp_scale: float = 0.5) -> Path:
    """A random-init WhisperForConditionalGeneration + WhisperProcessor at `path`, loadable with
    `from_pretrained` and by `pipeline("automatic-speech-recognition")` with timestamps.

    The vocabulary is laid out as OpenAI's: 256 byte tokens (+ whole-word tokens), then
    <|endoftext|>, <|startoftranscript|>, one token per Whisper language in Whisper's order,
    <|translate|>, <|transcribe|>, <|startoflm|>, <|startofprev|>, <|nospeech|>, <|notimestamps|>
    and the 1501 timestamp tokens <|0.00|> .. <|30.00|>, since transformers finds languages and
    timestamps by these offsets. The generation config carries what Whisper's long-form
    `generate` needs (no_timestamps_token_id, lang_to_id, task_to_id, ...).

    Random weights at init_std 0.02 emit almost only timestamp tokens; a wide init and text
    token embeddings scaled up against the timestamps' make it say (noise) words, so cues have text.
    Byte tokens outside printable ASCII are suppressed (generation_config.suppress_tokens)."""
    import torch
    from tokenizers import AddedToken
    from transformers import (GenerationConfig, WhisperConfig, WhisperFeatureExtractor,
                              WhisperForConditionalGeneration, WhisperProcessor, WhisperTokenizer)
    from transformers.convert_slow_tokenizer import bytes_to_unicode
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    path.mkdir(parents=True, exist_ok=True)
    byte_chars = bytes_to_unicode()  # byte -> printable stand-in character ("Ġ" for a space)
    vocab = {char: index for index, char in enumerate(byte_chars.values())}
    for word in _WORDS:
        vocab["Ġ" + word] = len(vocab)
    for mark in _PUNCTUATION:
        vocab.setdefault(mark, len(vocab))
    specials = ["<|endoftext|>", "<|startoftranscript|>", *[f"<|{code}|>" for code in LANGUAGES],
                "<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>",
                "<|notimestamps|>"]
    for token in specials:
        vocab[token] = len(vocab)
    stamps = [f"<|{i * 0.02:.2f}|>" for i in range(1501)]
    for token in stamps:
        vocab[token] = len(vocab)
    ids = {token: vocab[token] for token in specials}
    eot = ids["<|endoftext|>"]

    tokenizer = WhisperTokenizer(vocab=vocab, merges=[])
    tokenizer.add_special_tokens({"additional_special_tokens": [
        AddedToken(token, special=True, normalized=False) for token in specials[1:]]})
    tokenizer.add_tokens([AddedToken(token, special=False, normalized=False) for token in stamps])
    processor = WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=num_mel_bins),
                                 tokenizer=tokenizer)

    config = WhisperConfig(
        vocab_size=len(vocab), num_mel_bins=num_mel_bins, d_model=d_model, encoder_layers=layers,
        decoder_layers=layers, encoder_attention_heads=heads, decoder_attention_heads=heads,
        encoder_ffn_dim=2 * d_model, decoder_ffn_dim=2 * d_model, max_source_positions=1500,
        max_target_positions=448, pad_token_id=eot, bos_token_id=eot, eos_token_id=eot,
        decoder_start_token_id=ids["<|startoftranscript|>"], init_std=init_std)
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():
        model.model.decoder.embed_tokens.weight[:eot] *= text_scale
        model.model.decoder.embed_tokens.weight[ids["<|notimestamps|>"] + 1:] *= stamp_scale
    printable = {ord(c) for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ '.,?!"}
    suppressed = [index for byte, index in zip(byte_chars, range(256)) if byte not in printable]
    model.generation_config = GenerationConfig(
        bos_token_id=eot, eos_token_id=eot, pad_token_id=eot, decoder_start_token_id=ids["<|startoftranscript|>"],
        no_timestamps_token_id=ids["<|notimestamps|>"], prev_sot_token_id=ids["<|startofprev|>"],
        lang_to_id={f"<|{code}|>": ids[f"<|{code}|>"] for code in LANGUAGES},
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
        is_multilingual=True, max_initial_timestamp_index=50, max_length=448,
        begin_suppress_tokens=[vocab["Ġ"], eot], suppress_tokens=suppressed)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def tiny_config(model: Path, **overrides) -> TranscribeConfig:
    """Job settings for the tiny Whisper: greedy only (deterministic), short windows, 30 s blocks.
    Its random text loops ("oneu oneu one"), so the repeat filter (tested on hand-written cues in
    tests/pipeline/transcribe/test_stitch.py) is off."""
    values = dict(asr=str(model), language="en", temperatures=(0.0,), max_new_tokens=16, block_s=30.0,
                  overlap_s=5.0, batch_size=4, cue_compression_ratio_threshold=0.0, max_ngram_repeats=0,
                  drop_repeated_cues=False)
    values.update(overrides)
    return TranscribeConfig(**values)


# ---------------------------------------------------------------------------------------------
# Media


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def make_av(path: str | Path, seconds: float = 4.0, *, audio: str | None = "sine=frequency=440",
            channels: int = 1, acodec: str | None = None, size: str = "64x48", fps: int = 5) -> Path:
    """A small test-pattern video with one audio track made from a lavfi audio source (`audio`,
    e.g. "sine=frequency=440", or "anullsrc" for digital silence; None: no audio stream at all).

    channels=2 puts the sound on the left channel only (the right is silent); channels=6 (5.1)
    on the centre (dialogue) channel only, so a downmix that dropped a channel would be heard.
    The audio codec is the container's usual one unless `acodec` says (opus in webm, else aac).
    """
    path = Path(path)
    source = "anullsrc=sample_rate=48000" if audio == "anullsrc" else f"{audio}:sample_rate=48000"
    args = ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}:duration={seconds}"]
    if audio is not None:
        pan = {1: "pan=mono|c0=c0", 2: "pan=stereo|c0=c0|c1=0*c0", 6: "pan=5.1|FC=c0"}[channels]
        args += ["-f", "lavfi", "-i", source, "-af", pan, "-t", f"{seconds}"]
    if path.suffix == ".webm":
        args += ["-c:v", "libvpx", "-b:v", "100k", "-deadline", "realtime"]
    else:
        args += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    if audio is None:
        args += ["-an"]
    else:
        args += ["-c:a", acodec or ("libopus" if path.suffix == ".webm" else "aac")]
    _ffmpeg(*args, str(path))
    return path


def make_undecodable_audio(path: str | Path, seconds: float = 3.0) -> Path:
    """A Matroska file whose audio track is opus data labelled FLAC (its codec id patched): ffprobe
    lists an audio stream, ffmpeg cannot decode a single frame of it."""
    path = Path(path)
    make_av(path, seconds, acodec="libopus")
    data = path.read_bytes()
    assert data.count(b"A_OPUS") == 1, "expected one Matroska audio track of codec A_OPUS"
    path.write_bytes(data.replace(b"A_OPUS", b"A_FLAC"))
    return path


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def make_speech_video(path: str | Path, sentences: list[str], *, pause_s: float = 1.0,
                      size: str = "64x48", fps: int = 5) -> Path:
    """A video whose audio is espeak-ng speaking `sentences` with `pause_s` of silence between
    them (AAC in mp4). Needs the espeak-ng binary (Debian package espeak-ng)."""
    path = Path(path)
    work = path.with_suffix(".parts")
    work.mkdir(parents=True, exist_ok=True)
    parts = []
    for index, sentence in enumerate(sentences):
        wav = work / f"{index}.wav"
        subprocess.run(["espeak-ng", "-v", "en", "-s", "150", "-w", str(wav), sentence], check=True,
                       capture_output=True)
        parts.append(wav)
    inputs, filters = [], []
    for index, wav in enumerate(parts):
        inputs += ["-i", str(wav)]
        filters.append(f"[{index}:a]aresample=16000,apad=pad_dur={pause_s}[a{index}]")
    joined = "".join(f"[a{i}]" for i in range(len(parts)))
    graph = ";".join(filters) + f";{joined}concat=n={len(parts)}:v=0:a=1[speech]"
    speech = work / "speech.wav"
    _ffmpeg(*inputs, "-filter_complex", graph, "-map", "[speech]", str(speech))
    _ffmpeg("-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}", "-i", str(speech), "-shortest",
            "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", str(path))
    shutil.rmtree(work)
    return path
