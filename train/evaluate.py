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
similarities by a softmax over the *query* axis: `sim * softmax(100 * sim, dim=queries)`. A
candidate that is close to many queries is damped, so each candidate tends to be claimed by one
query. For text->video the queries are the texts: softmax over dim 0 of `[texts, videos]`
(each video's column normalised over all texts). For video->text the queries are the videos:
softmax over dim 1 (each text's row normalised over all videos). It uses every test query at
once, so it is transductive: report it beside the plain numbers, never in place of them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

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


def dual_softmax(sim: np.ndarray, query_axis: int, scale: float = DSL_SCALE) -> np.ndarray:
    """`sim * softmax(scale * sim, axis=query_axis)`; `sim` `[num_texts, num_videos]`.

    query_axis 0 (the texts) for text->video, 1 (the videos) for video->text."""
    return sim * _softmax(scale * sim, axis=query_axis)


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
    dsl: rescale with the dual softmax over each direction's query axis first (transductive).

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
    t2v_sim = dual_softmax(sim, query_axis=0) if dsl else sim
    v2t_sim = dual_softmax(sim, query_axis=1) if dsl else sim
    return {"t2v": rank_metrics(text_to_video_ranks(t2v_sim, text_video)),
            "v2t": rank_metrics(video_to_text_ranks(v2t_sim, text_video))}
