"""The per-video and per-block stages of the transcribe job, as Ray Data UDFs (see job.py).

    decode_video (flat_map, one CPU task per video): probe -> ffmpeg audio in blocks -> log-mel
                  features of each block; one row per block, the last one marked `is_last`
    AsrActor     (map_batches, actor pool): rows -> the rows with their segments (model loaded
                  once per actor; blocks of different videos share one generate call)

Feature extraction (log-mel, numpy) runs in the CPU task, not in the actor, so a GPU actor only
ever runs `generate`; and it runs in the flat_map for the reason the caption job decodes there:
a separate task-pool stage right before the actor stage would be fused into the actor. A block
quieter than `silence_dbfs` is marked silent and never reaches the model. A video that cannot
be read emits one error row, so the driver hears about every video it scheduled.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Iterator

import numpy as np

from pipeline.builder.staging import local_copy
from pipeline.errors import StageError
from pipeline.transcribe.asr import AsrModel, block_features, load_feature_extractor
from pipeline.transcribe.audio import BlockSpec, iter_audio_blocks, probe_audio, rms_dbfs
from pipeline.transcribe.config import TranscribeConfig

log = logging.getLogger(__name__)


def _node_id() -> str:
    """The Ray node this runs on ("" outside Ray): summaries say how work spread over a cluster."""
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
    except Exception:  # pragma: no cover - informational only
        return ""


def _row(item: dict[str, Any], index: int, is_last: bool, **extra: Any) -> dict[str, Any]:
    row = {"video_id": item["video_id"], "source": item["path"], "line": item.get("line") or 0,
           "decode_node": _node_id(),
           "block_index": index, "is_last": is_last, "start_s": 0.0, "audio_s": 0.0, "level_dbfs": 0.0,
           "silent": False, "features": b"", "n_mels": 0, "frames": 0, "error_stage": "", "error_reason": ""}
    row.update(extra)
    return row


def decode_video(item: dict[str, Any], cfg: TranscribeConfig) -> Iterator[dict[str, Any]]:
    """{video_id, path, line} -> one row per audio block (features as float32 bytes), or an error
    row (a video whose decode fails after some blocks ends with that error row as its last)."""
    index = 0
    try:
        with local_copy(item["path"], cfg.remote_protocols, cfg.max_source_bytes,
                        cfg.source_fetch_timeout_s) as path:
            probe_audio(path, cfg.probe_timeout_s)
            extractor = load_feature_extractor(cfg.asr, cfg.revision)
            spec = BlockSpec(cfg.block_s, cfg.overlap_s, cfg.audio_timeout_s)
            for block in iter_audio_blocks(path, spec):
                index = block.index
                level = rms_dbfs(block.samples)
                extra = {"start_s": block.start_s, "audio_s": block.duration_s, "level_dbfs": level}
                if level < cfg.silence_dbfs:
                    yield _row(item, block.index, block.is_last, silent=True, **extra)
                else:
                    features = block_features(extractor, block.samples)
                    yield _row(item, block.index, block.is_last, features=features.tobytes(),
                               n_mels=features.shape[0], frames=features.shape[1], **extra)
                index = block.index + 1
    except StageError as exc:
        yield _row(item, index, True, error_stage=exc.stage, error_reason=exc.reason)
    except Exception as exc:  # a bad file never costs its neighbours
        log.exception("unexpected failure decoding %s", item["video_id"])
        yield _row(item, index, True, error_stage="internal", error_reason=f"{type(exc).__name__}: {exc}")


class AsrActor:
    """Ray Data class UDF: block rows -> the same rows with `segments` (JSON [[start_s, end_s,
    text], ...], times from the block's start) and `language`; features dropped."""

    def __init__(self, cfg: TranscribeConfig):
        import torch

        if not torch.cuda.is_available():
            torch.set_num_threads(max(1, int(cfg.num_cpus)))
        self.model = AsrModel(cfg)
        self.node = _node_id()
        log.info("ASR actor: %s on %s (%s), %d torch threads", cfg.asr, self.model.device, self.model.dtype,
                 torch.get_num_threads())

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["video_id"])
        error_stage = np.array(batch["error_stage"], dtype=object)
        error_reason = np.array(batch["error_reason"], dtype=object)
        todo = [i for i in range(n) if not error_stage[i] and not batch["silent"][i]]
        features = [np.frombuffer(batch["features"][i], dtype=np.float32).reshape(
            int(batch["n_mels"][i]), int(batch["frames"][i])) for i in todo]
        segments = np.array(["[]"] * n, dtype=object)
        languages = np.array([""] * n, dtype=object)
        for i, result in zip(todo, self._transcribe(features, todo, error_stage, error_reason)):
            if result is not None:
                segments[i] = json.dumps([[s.start_s, s.end_s, s.text] for s in result.segments])
                languages[i] = result.language or ""
        out = {k: v for k, v in batch.items() if k != "features"}
        out.update(segments=segments, language=languages, error_stage=error_stage, error_reason=error_reason,
                   asr_node=np.array([self.node] * n, dtype=object))
        return out

    def _transcribe(self, features: list[np.ndarray], rows: list[int], error_stage: np.ndarray,
                    error_reason: np.ndarray) -> list:
        """One batched generate; if it fails, block by block, so one bad block is one error row."""
        try:
            return self.model(features)
        except Exception as exc:
            log.warning("batched generate failed (%s: %s); transcribing block by block", type(exc).__name__, exc)
        results = []
        for block, row in zip(features, rows):
            try:
                results.append(self.model([block])[0])
            except Exception as exc:
                error_stage[row], error_reason[row] = "asr", f"generate failed: {type(exc).__name__}: {exc}"
                results.append(None)
        return results
