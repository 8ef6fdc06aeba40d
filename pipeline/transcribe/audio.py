"""Audio of a video: probe its streams, decode its first audio stream to 16 kHz mono float32 in
bounded blocks.

    probe_audio(path, timeout_s) -> AudioInfo           one ffprobe: is there an audio stream?
    iter_audio_blocks(path, spec) -> Iterator[AudioBlock]  one ffmpeg, read one block at a time
    rms_dbfs(samples) -> float                          a block's level, for the silence check

Pure of Ray and files beyond the source (`pipeline/transcribe/stages.py` maps these over videos).
ffmpeg runs under the builder's sandbox (pipeline/builder/transcode.py, DESIGN.md section 6):
the source is opened as `file:<absolute path>` with `-protocol_whitelist file,pipe` and the
demuxer whitelist, stdin closed, and the process is killed past its timeout.

Memory: ffmpeg writes raw float32 samples to a pipe, which is read `step` samples at a time;
at most two blocks (the one being handed out and the next) are held, whatever the length of
the video, so an hour of audio never sits in memory (230 MB at 16 kHz float32).
"""

from __future__ import annotations

import collections
import math
import os
import subprocess
import threading
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from pipeline.errors import StageError
from pipeline.ffmpeg_sandbox import (DEMUXER_WHITELIST, PROTOCOL_WHITELIST, ffmpeg_input_name, ffprobe_report,
                                     local_source, stderr_tail)

STAGE = "audio"
#: Whisper's input rate (WhisperFeatureExtractor.sampling_rate).
SAMPLE_RATE = 16000
_BYTES_PER_SAMPLE = 4  # float32
#: Bytes of ffmpeg's stderr kept for an error reason (a corrupt file can print megabytes).
_STDERR_KEEP_BYTES = 16 * 1024


@dataclass(frozen=True)
class AudioInfo:
    """The first audio stream of a source, as ffprobe reports it."""

    codec: str
    channels: int
    sample_rate: int
    duration_s: float | None  # the container's, None when unknown (some webm, live captures)


@dataclass(frozen=True)
class BlockSpec:
    """How a video's audio is cut into blocks: block k covers [k * step_s, k * step_s + block_s)."""

    block_s: float = 120.0
    overlap_s: float = 10.0
    timeout_s: float = 1800.0

    @property
    def step_s(self) -> float:
        return self.block_s - self.overlap_s


@dataclass(frozen=True)
class AudioBlock:
    """One block of a video's audio: float32 samples in [-1, 1], mono, 16 kHz.

    `start_s` is the block's place in the source; `is_last` says no block follows.
    """

    index: int
    start_s: float
    samples: np.ndarray  # [n] float32
    is_last: bool

    @property
    def duration_s(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def rms_dbfs(samples: np.ndarray) -> float:
    """Root-mean-square level of `samples` in dB relative to full scale (-inf for digital silence)."""
    if not len(samples):
        return -math.inf
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return 20.0 * math.log10(rms) if rms > 0 else -math.inf


# ---------------------------------------------------------------------------------------------
# probe


def probe_audio(path: str | os.PathLike, timeout_s: float = 30.0) -> AudioInfo:
    """ffprobe a local source -> its first audio stream, or StageError saying why there is none.

    stage "probe": the file cannot be read at all; stage "audio": it has no audio stream.
    """
    report = ffprobe_report(path, timeout_s)
    return _audio_info(report, os.fspath(path))


def _audio_info(report: dict[str, Any], source: str) -> AudioInfo:
    streams = report.get("streams") or []
    audio = [s for s in streams if s.get("codec_type") == "audio"]
    if not audio:
        kinds = sorted({str(s.get("codec_type")) for s in streams}) or ["none"]
        raise StageError(STAGE, f"no audio stream (found streams: {', '.join(kinds)})", source=source)
    first = audio[0]
    duration = None
    for value in ((report.get("format") or {}).get("duration"), first.get("duration")):
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number) and number > 0:
            duration = number
            break
    return AudioInfo(codec=str(first.get("codec_name") or "unknown"), channels=int(first.get("channels") or 0),
                     sample_rate=int(first.get("sample_rate") or 0), duration_s=duration)


# ---------------------------------------------------------------------------------------------
# decode


def _decode_args(local) -> list[str]:
    """ffmpeg: the first audio stream, downmixed to mono (ffmpeg's standard matrix, so 5.1 keeps
    its centre dialogue channel) and resampled to 16 kHz, as raw float32 on stdout."""
    return ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-protocol_whitelist", PROTOCOL_WHITELIST,
            "-format_whitelist", DEMUXER_WHITELIST, "-i", ffmpeg_input_name(local), "-map", "0:a:0",
            "-vn", "-sn", "-dn", "-ac", "1", "-ar", str(SAMPLE_RATE), "-f", "f32le", "pipe:1"]


class _Ffmpeg:
    """One ffmpeg process: stdout read by the caller, stderr drained by a thread into a bounded
    buffer (a full stderr pipe would block ffmpeg), killed by a timer past the deadline."""

    def __init__(self, cmd: list[str], timeout_s: float):
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.stderr: collections.deque[bytes] = collections.deque()
        self._stderr_bytes = 0
        self.timed_out = threading.Event()
        self._drain = threading.Thread(target=self._read_stderr, daemon=True)
        self._drain.start()
        self._timer = threading.Timer(timeout_s, self._kill_late)
        self._timer.daemon = True
        self._timer.start()

    def _read_stderr(self) -> None:
        for line in iter(self.proc.stderr.readline, b""):
            self.stderr.append(line)
            self._stderr_bytes += len(line)
            while self._stderr_bytes > _STDERR_KEEP_BYTES and len(self.stderr) > 1:
                self._stderr_bytes -= len(self.stderr.popleft())

    def _kill_late(self) -> None:
        self.timed_out.set()
        self.proc.kill()

    def read(self, n_bytes: int) -> bytes:
        return self.proc.stdout.read(n_bytes)

    def finish(self) -> int:
        """Wait for exit (killing a process the caller stopped reading); returns the exit code."""
        if self.proc.poll() is None:
            self.proc.stdout.close()
        code = self.proc.wait()
        self._timer.cancel()
        self._drain.join(timeout=5)
        return code

    def stderr_tail(self) -> str:
        return stderr_tail(b"".join(self.stderr))


def _read_samples(ffmpeg: _Ffmpeg, n: int) -> np.ndarray:
    """Up to `n` float32 samples (fewer only at the end of the stream)."""
    data = ffmpeg.read(n * _BYTES_PER_SAMPLE)
    usable = len(data) - len(data) % _BYTES_PER_SAMPLE
    return np.frombuffer(data[:usable], dtype=np.float32)


def iter_audio_blocks(path: str | os.PathLike, spec: BlockSpec) -> Iterator[AudioBlock]:
    """The first audio stream of a local `path` as consecutive overlapping blocks (see BlockSpec).

    A block is yielded once the next one has been started, so the last block says `is_last`.
    Raises StageError(stage="audio") when ffmpeg fails, times out or yields no sample; blocks
    already yielded stand (the caller decides what a failure after them means).
    """
    source = os.fspath(path)
    local = local_source(path, STAGE)
    block_n = int(round(spec.block_s * SAMPLE_RATE))
    step_n = int(round(spec.step_s * SAMPLE_RATE))
    ffmpeg = _Ffmpeg(_decode_args(local), spec.timeout_s)
    try:
        index, start_n = 0, 0
        buffer = _read_samples(ffmpeg, block_n)
        while True:
            # Read what the next block adds beyond this one's end, to know whether this is the last.
            ahead = _read_samples(ffmpeg, step_n)
            if len(buffer) < block_n or not len(ahead):
                break
            yield AudioBlock(index, start_n / SAMPLE_RATE, buffer[:block_n].copy(), is_last=False)
            buffer = np.concatenate([buffer[step_n:], ahead])
            index, start_n = index + 1, start_n + step_n
        code = ffmpeg.finish()
        if ffmpeg.timed_out.is_set():
            raise StageError(STAGE, f"ffmpeg timed out after {spec.timeout_s:g} s decoding the audio (killed)",
                             source=source)
        if code != 0:
            raise StageError(STAGE, f"ffmpeg cannot decode the audio stream (exit {code}): "
                                    f"{ffmpeg.stderr_tail()}", source=source)
        if not len(buffer):
            if index == 0:
                raise StageError(STAGE, f"the audio stream decodes to no samples: {ffmpeg.stderr_tail()}",
                                 source=source)
            return
        yield AudioBlock(index, start_n / SAMPLE_RATE, buffer.copy(), is_last=True)
    finally:
        ffmpeg.finish()
