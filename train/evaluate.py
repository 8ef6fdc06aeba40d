"""Text-video retrieval metrics: R@1/5/10, median and mean rank, with and without DSL.

`retrieval_metrics` is a pure function of a similarity matrix, so any tool (the trainer's
validation, `vipstream eval`, a notebook) scores retrieval the same way:

    m = retrieval_metrics(sim, text_video)            # sim [num_texts, num_videos]
    m["t2v"]["R@1"], m["v2t"]["MdR"]                  # R@k in percent, ranks 1-based

Conventions (DESIGN.md section 1, as in the CLIP-ViP / CLIP4Clip evaluations):
- text->video: every text is a query (MSR-VTT training split: 20 per video); its rank is the
  position of its own video among all videos.
- video->text: every video with at least one text is a query; its rank is the best position
  reached by any of its texts (a hit counts when any of its captions ranks). Videos without a
  text are still candidates for text->video but are not video->text queries.
- Ties are broken pessimistically: an item of another video (or another video's text) whose
  score equals the correct one's is ranked before it, so a constant `sim` scores rank N, not 1.
  Ties between two correct texts of one video do not count against it (only the best matters).
- Paragraph mode (DiDeMo, ActivityNet: a video's sentences joined into one text) is simply one
  text per video, `text_video = arange(num_videos)`.

DSL (dual softmax at inference, from CAMoE, used for the paper's "+DSL" rows) rescales the
similarities once, exactly as the CLIP-ViP reference does (XPretrain CLIP-ViP/src/tasks/
run_video_retrieval.py): `sim * softmax(100 * sim)` with the softmax over the *text* axis of the
`[texts, videos]` matrix (dim 0: each video's column normalised over all texts), and both
directions are ranked on that one matrix. For text->video the texts are the queries, so this is
the usual prior over queries: a video close to many texts is damped. For video->text the same
matrix is ranked along its other axis, so the softmax runs over the candidates; that is what the
paper's v2t DSL numbers are, and only this makes ours comparable with them. It uses every test
query at once, so it is transductive: report it beside the plain numbers, never in place of them.

`evaluate_model` runs a model over a retrieval set (shards built from annotations, read by the
streaming loader in its finite `eval` mode): each video encoded once, every caption encoded in
batches, then `retrieval_metrics` plain and with DSL.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F

from train.eval_set import check_encoded_set

logger = logging.getLogger(__name__)

#: DSL temperature: `softmax(DSL_SCALE * cosine similarity)` (CAMoE / CLIP-ViP use 100).
DSL_SCALE = 100.0
#: Recall cut-offs reported, in this order.
RECALL_AT = (1, 5, 10)


def _as_numpy(array: Any, dtype: Any) -> np.ndarray:
    """A torch tensor (any device, with or without grad) or array-like as a numpy array."""
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    return np.asarray(array, dtype=dtype)


def _softmax(logits: np.ndarray, axis: int) -> np.ndarray:
    shifted = logits - logits.max(axis=axis, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=axis, keepdims=True)


#: Axis of `[texts, videos]` the DSL softmax runs over, for both directions (the reference's `axis=0`).
DSL_AXIS = 0


def dual_softmax(sim: np.ndarray, axis: int = DSL_AXIS, scale: float = DSL_SCALE) -> np.ndarray:
    """`sim * softmax(scale * sim, axis=axis)`; `sim` `[num_texts, num_videos]`, axis 0 = over the
    texts (the reference's, used for both directions by `retrieval_metrics`)."""
    return sim * _softmax(scale * sim, axis=axis)


def text_to_video_ranks(sim: np.ndarray, text_video: np.ndarray) -> np.ndarray:
    """1-based rank of each text's video: `[num_texts]`, pessimistic ties.

    rank_i = number of videos scoring >= the correct video for text i (the correct one included).
    """
    correct = sim[np.arange(sim.shape[0]), text_video]
    return (sim >= correct[:, None]).sum(axis=1)


def video_to_text_ranks(sim: np.ndarray, text_video: np.ndarray) -> np.ndarray:
    """1-based best rank among each video's texts: `[num_queried_videos]`, pessimistic ties.

    For video j with texts C_j: best = max over c in C_j of sim[c, j]; rank = 1 + the number of
    texts of other videos scoring >= best. Videos without texts are skipped (no query).
    """
    num_texts, num_videos = sim.shape
    scores = sim.T  # [num_videos, num_texts]
    own = np.zeros((num_videos, num_texts), dtype=bool)
    own[text_video, np.arange(num_texts)] = True
    queried = own.any(axis=1)
    scores, own = scores[queried], own[queried]
    best = np.where(own, scores, -np.inf).max(axis=1)
    return 1 + ((scores >= best[:, None]) & ~own).sum(axis=1)


def rank_metrics(ranks: np.ndarray) -> dict[str, float]:
    """`{"R@1", "R@5", "R@10"}` in percent, `"MdR"` (median rank) and `"MnR"` (mean rank)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    if ranks.size == 0:
        raise ValueError("expected at least one query, found none")
    metrics = {f"R@{k}": float(100.0 * np.mean(ranks <= k)) for k in RECALL_AT}
    metrics["MdR"] = float(np.median(ranks))
    metrics["MnR"] = float(np.mean(ranks))
    return metrics


def retrieval_metrics(sim: Any, text_video: Any, dsl: bool = False) -> dict[str, dict[str, float]]:
    """Text->video and video->text metrics of a similarity matrix.

    sim: `[num_texts, num_videos]` (torch tensor or array-like), higher = more similar; cosine
      similarities when `dsl` (the DSL temperature assumes values in [-1, 1]).
    text_video: `[num_texts]` int, the index of each text's video (a column of `sim`).
    dsl: rescale once with the dual softmax over the text axis (dim 0), then rank both directions
      on that matrix, as the reference does (transductive; see the module docstring).

    Returns `{"t2v": {"R@1", "R@5", "R@10", "MdR", "MnR"}, "v2t": {...}}`, R@k in percent.
    """
    sim = _as_numpy(sim, np.float64)
    text_video = _as_numpy(text_video, np.int64)
    if sim.ndim != 2 or 0 in sim.shape:
        raise ValueError(f"expected sim [num_texts, num_videos] with both > 0, found shape {sim.shape}")
    if text_video.shape != (sim.shape[0],):
        raise ValueError(f"expected text_video of shape ({sim.shape[0]},) (one video index per text), "
                         f"found {text_video.shape}")
    if text_video.min() < 0 or text_video.max() >= sim.shape[1]:
        raise ValueError(f"text_video holds video indices outside [0, {sim.shape[1]}): "
                         f"min {text_video.min()}, max {text_video.max()}")
    if not np.isfinite(sim).all():
        raise ValueError(f"sim holds {int((~np.isfinite(sim)).sum())} non-finite values")
    if dsl:
        sim = dual_softmax(sim, axis=DSL_AXIS)
    return {"t2v": rank_metrics(text_to_video_ranks(sim, text_video)),
            "v2t": rank_metrics(video_to_text_ranks(sim, text_video))}


# ------------------------------------------------------------------------------- model evaluation
#: `baseline` values of `evaluate_model`: None (CLIP-ViP) or "meanpool" (CLIP4Clip-meanP zero-shot).
BASELINES = ("meanpool",)


@dataclass(frozen=True)
class _Encoders:
    """The two encoders of a model under evaluation, both returning L2-normalised `[B, D]`."""

    video: Callable[[torch.Tensor], torch.Tensor]  # [B, T, 3, S, S] -> [B, D]
    text: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # ids, mask [B, L] -> [B, D]
    module: torch.nn.Module  # what .eval() / .to(device) apply to
    folder: Path | None  # checkpoint folder when loaded from disk (tokenizer/processor files)


def _projected(output: Any) -> torch.Tensor:
    """`CLIPModel.get_*_features` returns a tensor (transformers < 5) or an output whose
    `pooler_output` holds the projected features (transformers >= 5)."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def _meanpool_encoders(clip: torch.nn.Module, folder: Path | None) -> _Encoders:
    """CLIP4Clip-meanP: every frame through CLIP's image encoder, per-frame features
    L2-normalised, averaged over T, normalised again (CLIP4Clip's `meanP` similarity)."""

    def video(frames: torch.Tensor) -> torch.Tensor:
        batch, num_frames = frames.shape[:2]
        per_frame = _projected(clip.get_image_features(pixel_values=frames.flatten(0, 1)))  # [B*T, D]
        per_frame = F.normalize(per_frame, dim=-1).view(batch, num_frames, -1)
        return F.normalize(per_frame.mean(dim=1), dim=-1)

    def text(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(_projected(clip.get_text_features(input_ids=input_ids,
                                                             attention_mask=attention_mask)), dim=-1)

    return _Encoders(video, text, clip, folder)


def _load_encoders(model: Any, baseline: str | None) -> _Encoders:
    """Encoders of `model`: a CLIPViPModel / CLIPModel object or a checkpoint folder.

    baseline None: a CLIP-ViP model (folder written by `CLIPViPModel.save_pretrained`);
    baseline "meanpool": a plain CLIP checkpoint (a CLIPModel folder), or a CLIP-ViP model's CLIP.
    """
    from transformers import CLIPModel

    from model.clip_vip import CONFIG_NAME, CLIPViPModel, is_clip_vip_checkpoint

    if baseline is not None and baseline not in BASELINES:
        raise ValueError(f"expected baseline None or one of {BASELINES}, found {baseline!r}")
    model = getattr(model, "module", model)  # a DistributedDataParallel wrapper
    folder = None
    if isinstance(model, (str, os.PathLike)):
        folder = Path(model)
        if not (folder / CONFIG_NAME).is_file():
            raise FileNotFoundError(f"{folder}: expected a checkpoint folder with {CONFIG_NAME}, found none")
        is_clip_vip = is_clip_vip_checkpoint(folder)
        if baseline is None and not is_clip_vip:
            raise ValueError(f"{folder} is a plain CLIP checkpoint, not CLIP-ViP: evaluate it with "
                             f"baseline='meanpool' (--baseline meanpool), or convert it with "
                             f"CLIPViPModel.from_clip")
        if is_clip_vip:
            model = CLIPViPModel.from_pretrained(folder)
        else:
            model = CLIPModel.from_pretrained(str(folder), use_safetensors=True)
    if isinstance(model, CLIPViPModel):
        if baseline == "meanpool":
            return _meanpool_encoders(model.clip, folder)
        return _Encoders(model.encode_video, model.encode_text, model, folder)
    if isinstance(model, CLIPModel):
        if baseline != "meanpool":
            raise ValueError("a plain CLIPModel has no video encoder: pass baseline='meanpool', or "
                             "wrap it with CLIPViPModel.from_clip")
        return _meanpool_encoders(model, folder)
    raise TypeError(f"expected a CLIPViPModel, a CLIPModel or a checkpoint folder, found {type(model).__name__}")


def load_encoders(model: Any, baseline: str | None = None) -> _Encoders:
    """The encoders `evaluate_model` scores (`.video`, `.text`, `.module`, `.folder`), loaded the
    way it loads them: tools that score a checkpoint (tools/order_test.py) use this, not a loader
    of their own."""
    return _load_encoders(model, baseline)


def _num_samples(data: str | Path) -> int | None:
    """Clips in a built output (rows of its manifest.parquet), for the progress bar; None if unknown."""
    from vipstream.schema import MANIFEST_FILENAME

    path = Path(data) / MANIFEST_FILENAME
    if not path.is_file():
        return None
    import pyarrow.parquet as pq

    return pq.read_metadata(path).num_rows


def _batched(items: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def evaluate_model(model: Any, data: str | Path, processor_dir: str | Path | None = None, *,
                   num_frames: int = 12, batch_size: int = 16, device: str | torch.device = "cpu",
                   baseline: str | None = None, max_text_length: int = 70, num_workers: int = 0,
                   progress: bool = True, allow_missing: bool = False) -> dict[str, Any]:
    """Text<->video retrieval of `model` on the retrieval set at `data` (a built output folder).

    model: a CLIPViPModel, a CLIP-ViP checkpoint folder, or (with baseline="meanpool") a plain
      CLIP checkpoint folder / CLIPModel. A module passed in is put in eval mode and moved to
      `device` for the call, then put back in its previous train/eval mode.
    processor_dir: folder with the tokenizer + preprocessor config (default: the model's folder;
      for a CLIPViPModel object, the processor files it carries).
    num_frames: frames per video, taken by the loader's eval frame rule `linspace(0, n-1, T)`.

    Each video is encoded once (`[B, T, 3, S, S]` batches), every caption of the clip's json
    `captions` is a text query (tokenised to `max_text_length`, encoded in batches of
    `batch_size`), sim = text features @ video features.T (cosine, `[num_texts, num_videos]`).

    The encoded set is checked against OUT/manifest.parquet (train/eval_set.py): duplicate or
    unknown keys raise EvalSetError (a ValueError); videos not encoded raise MissingVideosError
    unless `allow_missing`, when "dropped" says how many videos and captions are left out.

    Returns (JSON-serialisable):
      {"plain": {"t2v": {"R@1", "R@5", "R@10", "MdR", "MnR"}, "v2t": {...}},
       "dsl":   {"t2v": {...}, "v2t": {...}},        # transductive, report beside "plain"
       "num_videos": int, "num_texts": int, "num_frames": int,
       "expected_videos": int | None,                # the manifest's count (None: not checked)
       "dropped": {"videos", "captions", "videos_unknown_captions": int, "keys": [...]},
       "baseline": None | "meanpool", "seconds": float}
    """
    started = time.monotonic()
    encoders = _load_encoders(model, baseline)
    module = encoders.module
    was_training = module.training
    module.eval()
    module.to(device)
    with tempfile.TemporaryDirectory(prefix="vipstream-eval-") as scratch:
        processor_dir = _processor_folder(processor_dir, encoders, model, Path(scratch))
        try:
            video_features, texts, text_video, keys = _encode_videos(
                encoders.video, data, processor_dir, num_frames=num_frames, batch_size=batch_size,
                max_text_length=max_text_length, device=device, num_workers=num_workers,
                progress=progress)
            checked = check_encoded_set(data, keys, allow_missing=allow_missing)  # before the texts' work
            text_features = _encode_texts(encoders.text, texts, processor_dir, batch_size=batch_size,
                                          max_text_length=max_text_length, device=device,
                                          progress=progress)
        finally:
            module.train(was_training)
    sim = text_features @ video_features.T  # [num_texts, num_videos]
    return {"plain": retrieval_metrics(sim, text_video),
            "dsl": retrieval_metrics(sim, text_video, dsl=True),
            "num_videos": int(video_features.shape[0]), "num_texts": len(texts),
            "num_frames": num_frames, "baseline": baseline, "expected_videos": checked.expected_videos,
            "dropped": {"videos": checked.dropped_videos, "captions": checked.dropped_captions,
                        "videos_unknown_captions": checked.dropped_videos_unknown_captions,
                        "keys": checked.dropped_keys},
            "seconds": round(time.monotonic() - started, 3)}


def _processor_folder(processor_dir: str | Path | None, encoders: _Encoders, model: Any,
                      scratch: Path) -> Path:
    """Where the tokenizer and image-processor configs are read from."""
    if processor_dir is not None:
        return Path(processor_dir)
    if encoders.folder is not None:
        return encoders.folder
    files = getattr(getattr(model, "module", model), "processor_files", None)
    if files:
        for name, payload in files.items():
            (scratch / name).write_bytes(payload)
        return scratch
    raise ValueError("expected processor_dir (a folder with the tokenizer and preprocessor_config.json): "
                     "the model was given as an object that carries no processor files")


@torch.no_grad()
def _encode_videos(encode: Callable[[torch.Tensor], torch.Tensor], data: str | Path, processor_dir: Path, *,
                   num_frames: int, batch_size: int, max_text_length: int, device: str | torch.device,
                   num_workers: int, progress: bool) -> tuple[torch.Tensor, list[str], list[int], list[str]]:
    """One pass over the retrieval set: video features `[num_videos, D]` (float32, CPU), every
    caption in order, each caption's video index, and each video's key."""
    from tqdm.auto import tqdm

    from train.data import TrainDataConfig, make_train_loader

    cfg = TrainDataConfig(shards=str(data), captioner_id=None, text_source="annotation",
                          num_frames=num_frames, batch_size=batch_size, num_workers=num_workers,
                          max_text_length=max_text_length, mode="eval")
    loader = make_train_loader(cfg, processor_dir=str(processor_dir), rank=0, world_size=1, seed=0)
    features: list[torch.Tensor] = []
    texts: list[str] = []
    text_video: list[int] = []
    uncaptioned: list[str] = []
    keys: list[str] = []
    num_videos = 0
    with tqdm(total=_num_samples(data), desc="videos", unit="video", disable=not progress) as bar:
        for batch in loader:
            features.append(encode(batch.video.to(device)).float().cpu())  # [B, D]
            for key, captions in zip(batch.keys, batch.captions or [[]] * len(batch.keys)):
                if not captions:
                    uncaptioned.append(key)
                texts.extend(captions)
                text_video.extend([num_videos] * len(captions))
                keys.append(key)
                num_videos += 1
            bar.update(len(batch.keys))
    if not features:
        raise ValueError(f"{data}: no video was read; expected a built retrieval set (OUT/shards/*.tar)")
    if not texts:
        raise ValueError(f"{data}: none of the {num_videos} clips carries captions; expected a retrieval "
                         f"set built from annotations (the clip json's 'captions' list)")
    if uncaptioned:
        logger.warning("%d clips have no caption (candidates only, no video->text query): %s",
                       len(uncaptioned), uncaptioned[:5])
    return torch.cat(features), texts, text_video, keys


@torch.no_grad()
def _encode_texts(encode: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], texts: list[str],
                  processor_dir: Path, *, batch_size: int, max_text_length: int,
                  device: str | torch.device, progress: bool) -> torch.Tensor:
    """Text features `[num_texts, D]` (float32, CPU), `batch_size` texts at a time."""
    from tqdm.auto import tqdm

    from train.data.text import load_tokenizer, tokenize  # the loader's tokenisation, as in training

    tokenizer = load_tokenizer(str(processor_dir))
    features = []
    with tqdm(total=len(texts), desc="texts", unit="text", disable=not progress) as bar:
        for chunk in _batched(texts, batch_size):
            input_ids, attention_mask = tokenize(tokenizer, chunk, max_text_length)  # [b, L] each
            features.append(encode(input_ids.to(device), attention_mask.to(device)).float().cpu())
            bar.update(len(chunk))
    return torch.cat(features)
