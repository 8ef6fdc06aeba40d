"""One optimizer step's gradients: features, loss, and exact contrastive gradient accumulation.

Pure compute, no files or logging, so it is tested on its own (tests/train/test_step.py).

`FeatureModel` wraps `CLIPViPModel` so one `forward` yields every feature the loss needs; DDP
(which only sees `forward`) then synchronises gradients of the video, frame and text towers alike.

`accumulate_gradients` is open_clip's `accum_freq` made exact: a contrastive loss needs every
negative of the global batch, so k micro-batches cannot be backpropagated one by one. First every
micro-batch's features are computed without grad; then each micro-batch is re-run with grad and
its fresh features replace its cached ones in the full set, the loss of the full set is
backpropagated, and its gradient flows only into that micro-batch's activations. Summed over the
k re-runs this is the gradient of the full-batch loss. Unlike open_clip, the logit scale enters
with grad in one re-run only (detached in the others), so its gradient is not counted k times.
Under DDP the first k-1 re-runs run in `no_sync`, the last one all-reduces the accumulated sum.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import torch
from torch import nn

from model.loss import infonce_loss, ocl_loss

#: Batch fields (token ids, attention mask) of each text feature.
TEXT_FIELDS = {"subtitle": ("subtitle_ids", "subtitle_mask"), "caption": ("caption_ids", "caption_mask"),
               "text": ("text_ids", "text_mask")}

LossFn = Callable[[dict[str, torch.Tensor], torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]]


class FeatureModel(nn.Module):
    """`forward(**inputs)` -> {"video": [b, D], ["frame", "subtitle", "caption", "text"]: [b, D],
    "logit_scale": 0-dim}; a feature is computed only when its inputs are given."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, video: torch.Tensor, frame: torch.Tensor | None = None,
                subtitle_ids: torch.Tensor | None = None, subtitle_mask: torch.Tensor | None = None,
                caption_ids: torch.Tensor | None = None, caption_mask: torch.Tensor | None = None,
                text_ids: torch.Tensor | None = None, text_mask: torch.Tensor | None = None
                ) -> dict[str, torch.Tensor]:
        """video `[b, T, 3, S, S]`, frame `[b, 3, S, S]` (a 1-frame video), ids/masks `[b, L]`."""
        out = {"video": self.model.encode_video(video)}
        if frame is not None:
            out["frame"] = self.model.encode_video(frame)
        texts = {"subtitle": (subtitle_ids, subtitle_mask), "caption": (caption_ids, caption_mask),
                 "text": (text_ids, text_mask)}
        for name, (ids, mask) in texts.items():
            if ids is not None:
                out[name] = self.model.encode_text(ids, mask)
        out["logit_scale"] = self.model.logit_scale
        return out


def model_inputs(batch: Any, features: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The tensors of `batch` (a train.data.Batch) that `FeatureModel` needs for `features`.

    Raises ValueError naming the missing field when the batch lacks a text the loss needs.
    """
    inputs = {"video": batch.video}
    if "frame" in features:
        inputs["frame"] = batch.frame
    for name in features:
        if name in TEXT_FIELDS:
            ids_field, mask_field = TEXT_FIELDS[name]
            ids = getattr(batch, ids_field, None)
            if ids is None:
                raise ValueError(f"the loss needs {name} features but the batch has no {ids_field} "
                                 f"(check text_source and the captions)")
            inputs[ids_field], inputs[mask_field] = ids, getattr(batch, mask_field, None)
    return inputs


def make_loss_fn(loss: str, features: tuple[str, ...], local_loss: bool) -> LossFn:
    """(features dict, logit scale) -> (loss, {term: value}) for an OCL variant or "infonce"."""
    if loss == "infonce":
        (text,) = [name for name in features if name in TEXT_FIELDS]

        def infonce(feats: dict[str, torch.Tensor], scale: torch.Tensor):
            return infonce_loss(feats["video"], feats[text], scale, local_loss=local_loss, return_terms=True)

        return infonce

    def ocl(feats: dict[str, torch.Tensor], scale: torch.Tensor):
        return ocl_loss(feats["video"], feats.get("subtitle"), feats.get("caption"), feats.get("frame"), scale,
                        variant=loss, local_loss=local_loss, return_terms=True)

    return ocl


def accumulate_gradients(
    model: nn.Module,
    micro_batches: list[dict[str, torch.Tensor]],
    loss_fn: LossFn,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    scaler: torch.amp.GradScaler | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Backpropagate the loss of the union of `micro_batches` into the parameters' `.grad`.

    model: a `FeatureModel`, possibly DDP-wrapped and/or compiled; micro_batches: `model_inputs`
    dicts of equal batch size. Gradients are added to `.grad` (zero them before). Returns the
    detached loss and terms (of the full set; every re-run computes the same values).
    """
    def backward(loss: torch.Tensor) -> None:
        (scaler.scale(loss) if scaler is not None and scaler.is_enabled() else loss).backward()

    if len(micro_batches) == 1:
        with autocast():
            out = model(**micro_batches[0])
            loss, terms = loss_fn(_features(out), out["logit_scale"])
        backward(loss)
        return loss.detach(), {k: v.detach() for k, v in terms.items()}

    with torch.no_grad(), autocast():
        cached = [_features(model(**inputs)) for inputs in micro_batches]
    no_sync = getattr(model, "no_sync", None)
    last = len(micro_batches) - 1
    for j, inputs in enumerate(micro_batches):
        sync = contextlib.nullcontext() if j == last or no_sync is None else no_sync()
        with sync:
            with autocast():
                out = model(**inputs)
                fresh = _features(out)
                feats = {key: torch.cat([c[key] for c in cached[:j]] + [fresh[key]] + [c[key] for c in cached[j + 1:]])
                         for key in fresh}
                scale = out["logit_scale"] if j == last else out["logit_scale"].detach()
                loss, terms = loss_fn(feats, scale)
            backward(loss)
    return loss.detach(), {k: v.detach() for k, v in terms.items()}


def _features(out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in out.items() if k != "logit_scale"}
