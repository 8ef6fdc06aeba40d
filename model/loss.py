"""Contrastive losses: the Omnisource Cross-modal Learning (OCL) loss of CLIP-ViP and plain InfoNCE.

All features are L2-normalised `[b, D]` rows of this rank's batch. When torch.distributed is
initialised (world size > 1) they are gathered over all ranks *with gradients*
(`torch.distributed.nn.functional.all_gather`), so the loss is that of the global batch B.

Gradient convention (as open_clip): the backward of the gather sums the gradients of every
rank's loss, so the gradient on a rank is world_size x the single-process gradient of the global
loss; DDP's gradient averaging divides it back. With `local_loss=True` each rank only computes the
rows of its own samples (against all gathered columns), which costs b x B instead of B x B logits;
the mean over ranks of the local losses equals the global loss (equal per-rank batches).

OCL (DESIGN.md section 1), with S = subtitle, C = caption, F = middle frame, V = video:
    loss = CE(S->V) + CE(C->V) + CE_joint(V->S) + CE_joint(V->C) + CE(F->C) + CE(C->F)
CE_joint(V->S) is a softmax of video i over {all B subtitles} + {the B-1 captions of the other
clips} with positive S_i: its own caption is excluded from the negatives (and vice versa for V->C).

Variants are "+"-joined terms (`parse_variant`):
    "vs"     CE(S->V) + CE(V->S)                      video-subtitle only
    "vc"     CE(C->V) + CE(V->C)                      video-caption only
    "vs+vc"  both of the above, separate softmaxes
    "joint"  CE(S->V) + CE(C->V) + CE_joint(V->S) + CE_joint(V->C)
    "+fc"    adds CE(F->C) + CE(C->F) to any of them; "ocl" = "joint+fc" (the paper's loss).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F

# CLIP's bound on the logit scale: exp(s) <= 200 (DESIGN.md: clamped to [0, ln 200]).
MAX_LOG_LOGIT_SCALE = math.log(200.0)

VARIANT_ALIASES = {"ocl": "joint+fc"}
_TERMS = ("vs", "vc", "joint", "fc")
#: Names of the logged loss terms (`return_terms`): text->video, video->text (joint: softmax over
#: both text sources), frame<->caption, and InfoNCE's two directions.
TERM_NAMES = ("s2v", "c2v", "v2s", "v2c", "v2s_joint", "v2c_joint", "f2c", "c2f", "v2t", "t2v")


@dataclass(frozen=True)
class OCLTerms:
    """Which terms a loss variant sums (see the module docstring)."""

    video_subtitle: bool = False
    video_caption: bool = False
    joint: bool = False
    frame_caption: bool = False


def parse_variant(variant: str) -> OCLTerms:
    """`"joint+fc"` -> OCLTerms(joint=True, frame_caption=True); refuses unknown or clashing terms."""
    name = VARIANT_ALIASES.get(variant, variant)
    parts = [part.strip() for part in name.split("+") if part.strip()]
    unknown = [part for part in parts if part not in _TERMS]
    if unknown or not parts or len(set(parts)) != len(parts):
        raise ValueError(f"loss variant {variant!r}: expected '+'-joined terms from {_TERMS} or 'ocl', "
                         f"found {parts}")
    if "joint" in parts and ({"vs", "vc"} & set(parts)):
        raise ValueError(f"loss variant {variant!r}: 'joint' already contains V-S and V-C")
    if parts == ["fc"]:
        raise ValueError(f"loss variant {variant!r}: needs a video term (vs, vc, vs+vc or joint)")
    return OCLTerms(video_subtitle="vs" in parts, video_caption="vc" in parts,
                    joint="joint" in parts, frame_caption="fc" in parts)


@torch.no_grad()
def clamp_logit_scale_(log_logit_scale: torch.Tensor, max_log: float = MAX_LOG_LOGIT_SCALE) -> torch.Tensor:
    """Clamp the learnable log-scale parameter in place to [0, max_log] (exp <= 200), outside the
    graph, and return it: what the reference and open_clip do after each optimizer step. Never
    clamp inside the forward instead: past the bound the gradient would be 0 and s stuck there."""
    return log_logit_scale.clamp_(0.0, max_log)


def _world() -> tuple[int, int]:
    """(rank, world_size), (0, 1) when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_features(features: torch.Tensor) -> torch.Tensor:
    """`[b, D]` on each rank -> `[world*b, D]` in rank order, differentiable (identity on one process).

    Every rank must pass the same b (the gather needs equal shapes).
    """
    _, world = _world()
    if world == 1:
        return features
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(features.contiguous()), dim=0)


@dataclass
class _Batch:
    """Gathered features plus which rows of them this rank computes the loss for."""

    rows: slice
    labels: torch.Tensor  # [rows] global index of each row's positive


def _batch(local_size: int, global_size: int, local_loss: bool, device: torch.device) -> _Batch:
    """Rows of the global batch this rank owns (all rows unless local_loss)."""
    rank, _ = _world()
    start, stop = (rank * local_size, (rank + 1) * local_size) if local_loss else (0, global_size)
    return _Batch(slice(start, stop), torch.arange(start, stop, device=device))


def _at_least_float32(logits: torch.Tensor) -> torch.Tensor:
    """Half-precision logits (autocast) are upcast for the softmax; float64 stays float64."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


def _ce(query: torch.Tensor, keys: torch.Tensor, scale: torch.Tensor, batch: _Batch) -> torch.Tensor:
    """Mean cross-entropy of `query[rows]` over all `keys` ([B, D] each), positive = same index."""
    logits = scale * query[batch.rows] @ keys.t()
    return F.cross_entropy(_at_least_float32(logits), batch.labels)


def _ce_joint(video: torch.Tensor, positives: torch.Tensor, others: torch.Tensor, scale: torch.Tensor,
              batch: _Batch) -> torch.Tensor:
    """Video rows over [all B positives-source texts, the B-1 other-source texts of other clips].

    The own sample's text from the other source (column i of `others`) is excluded, so the only
    text of clip i in the softmax is the positive `positives[i]`.
    """
    rows = video[batch.rows]
    pos_logits = scale * rows @ positives.t()  # [b, B]
    other_logits = scale * rows @ others.t()  # [b, B]
    own = F.one_hot(batch.labels, num_classes=others.shape[0]).bool()
    other_logits = _at_least_float32(other_logits).masked_fill(own, float("-inf"))
    return F.cross_entropy(torch.cat([_at_least_float32(pos_logits), other_logits], dim=1), batch.labels)


def ocl_loss(
    video: torch.Tensor,
    subtitle: torch.Tensor | None,
    caption: torch.Tensor | None,
    frame: torch.Tensor | None,
    logit_scale: torch.Tensor,
    variant: str = "ocl",
    local_loss: bool = False,
    return_terms: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The OCL loss (or an ablation variant) of one step; a 0-dim tensor, same on every rank
    unless `local_loss`. With `return_terms`, `(loss, {term name: 0-dim term})` (names in
    `TERM_NAMES`, only the variant's terms; the loss is their sum), for logging.

    Args:
        video: `[b, D]` L2-normalised video features of this rank.
        subtitle, caption, frame: `[b, D]` L2-normalised features of the clip's ASR subtitle, the
            middle frame's auxiliary caption and the middle frame (a 1-frame video); only those
            the variant uses are needed (others may be None).
        logit_scale: 0-dim multiplier exp(s) (`CLIPViPModel.logit_scale`; s is kept in
            [0, ln 200] by the in-place clamp after each optimizer step).
        variant: see `parse_variant`; "ocl" is the paper's six-term loss.
        local_loss: compute only this rank's rows (see the module docstring).
    """
    terms = parse_variant(variant)
    needs = {"subtitle": terms.video_subtitle or terms.joint,
             "caption": terms.video_caption or terms.joint or terms.frame_caption,
             "frame": terms.frame_caption}
    given = {"subtitle": subtitle, "caption": caption, "frame": frame}
    missing = [name for name, needed in needs.items() if needed and given[name] is None]
    if missing:
        raise ValueError(f"loss variant {variant!r} needs {missing} features, found None")

    all_video = gather_features(video)
    all_subtitle = gather_features(subtitle) if needs["subtitle"] else None
    all_caption = gather_features(caption) if needs["caption"] else None
    batch = _batch(video.shape[0], all_video.shape[0], local_loss, video.device)

    losses: dict[str, torch.Tensor] = {}
    if terms.video_subtitle or terms.joint:
        losses["s2v"] = _ce(all_subtitle, all_video, logit_scale, batch)
    if terms.video_caption or terms.joint:
        losses["c2v"] = _ce(all_caption, all_video, logit_scale, batch)
    if terms.video_subtitle:
        losses["v2s"] = _ce(all_video, all_subtitle, logit_scale, batch)
    if terms.video_caption:
        losses["v2c"] = _ce(all_video, all_caption, logit_scale, batch)
    if terms.joint:
        losses["v2s_joint"] = _ce_joint(all_video, all_subtitle, all_caption, logit_scale, batch)
        losses["v2c_joint"] = _ce_joint(all_video, all_caption, all_subtitle, logit_scale, batch)
    if terms.frame_caption:
        all_frame = gather_features(frame)
        losses["f2c"] = _ce(all_frame, all_caption, logit_scale, batch)
        losses["c2f"] = _ce(all_caption, all_frame, logit_scale, batch)
    values = list(losses.values())
    total = sum(values[1:], values[0])
    return (total, losses) if return_terms else total


def infonce_loss(video: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor,
                 local_loss: bool = False, return_terms: bool = False
                 ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Symmetric InfoNCE for fine-tuning: CE(V->T) + CE(T->V) over the gathered batch.

    Summed, not averaged, as the OCL terms are (the "vs" variant is this loss on subtitles).
    video, text: `[b, D]` L2-normalised; logit_scale: 0-dim multiplier exp(s).
    With `return_terms`, `(loss, {"v2t": ..., "t2v": ...})`.
    """
    all_video, all_text = gather_features(video), gather_features(text)
    batch = _batch(video.shape[0], all_video.shape[0], local_loss, video.device)
    losses = {"v2t": _ce(all_video, all_text, logit_scale, batch), "t2v": _ce(all_text, all_video, logit_scale, batch)}
    total = losses["v2t"] + losses["t2v"]
    return (total, losses) if return_terms else total


class OCLLoss(torch.nn.Module):
    """`ocl_loss` with its variant fixed at construction: `OCLLoss("ocl")(v, s, c, f, scale)`."""

    def __init__(self, variant: str = "ocl", local_loss: bool = False) -> None:
        super().__init__()
        parse_variant(variant)  # fail at construction, not at the first step
        self.variant = variant
        self.local_loss = local_loss

    def forward(self, video: torch.Tensor, subtitle: torch.Tensor | None, caption: torch.Tensor | None,
                frame: torch.Tensor | None, logit_scale: torch.Tensor, return_terms: bool = False):
        """See `ocl_loss`."""
        return ocl_loss(video, subtitle, caption, frame, logit_scale, self.variant, self.local_loss,
                        return_terms=return_terms)
