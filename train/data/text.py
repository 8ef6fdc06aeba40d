"""Texts of a clip: the subtitle from its json, the caption from the chosen captioner's sidecar
(joined by key, loaded per shard by the worker reading that shard), the choice among them for the
configured `text_source`, and CLIP tokenisation.

Text choice happens before the sample shuffle and before decoding, so a clip skipped for a
missing caption is skipped the same way when a resumed run fast-forwards without decoding.

Sizes are bounded before any text reaches the tokenizer (issue 15.6: a 40 MB subtitle took 54 s
and 4.7 GB to tokenise for 32 tokens): every text is cut to `text_char_budget(max_text_length)`
characters, which holds far more than max_text_length tokens of any real text, so the tokens
are unchanged; sidecar captions are cut to that budget as they are read.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import torch

from train.data.config import TrainDataConfig
from train.data.seeding import sample_rng
from train.data.skips import SkipCounts
from train.data.sources import sidecar_url
from vipstream.caption_sidecar import SidecarError, read_sidecar, sidecar_problem
from vipstream.schema import CLIP_CAPTIONS_FIELD
from vipstream.text_bounds import cut_text

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Sidecar join


def load_sidecar(url: str, counts: SkipCounts, max_caption_chars: int | None = None) -> dict[str, tuple[str, int]]:
    """key -> (caption, frame_index) of one sidecar parquet (local path or fsspec URL), captions
    cut to `max_caption_chars` (counted `caption_cut`).

    A shard not captioned yet has no sidecar, and a broken sidecar (vipstream.caption_sidecar:
    unreadable, or not the sidecar schema) is counted `bad_sidecar` and named in a warning: both
    give an empty mapping, so the shard's clips take the `missing_caption` rule.
    """
    try:
        found = read_sidecar(url, max_caption_chars)
    except FileNotFoundError:
        counts.warnings.warn("missing_sidecar", "no caption sidecar %s: its shard's clips have no caption", url)
        return {}
    except SidecarError as exc:
        counts.skip("bad_sidecar", "skipping %s (its shard's clips take the missing_caption rule; "
                    "`vipstream caption` redoes it): %s", url, exc.reason)
        return {}
    if found.cut:
        counts["caption_cut"] += found.cut
    return found.captions


def sidecar_problems(urls: list[str], cfg: TrainDataConfig) -> dict[str, str]:
    """{sidecar: why it is unusable} for the local shards' sidecars that exist but are broken
    (the trainer's preflight warns with it; remote ones are checked as they are read)."""
    problems = {}
    for url in urls:
        if "://" in url or url.startswith("pipe:"):
            continue
        path = sidecar_url(url, cfg.captioner_id, cfg.captions_root)
        problem = sidecar_problem(path)
        if problem not in (None, "missing"):
            problems[path] = problem
    return problems


def join_captions(samples: Iterable[dict[str, Any]], cfg: TrainDataConfig,
                  counts: SkipCounts) -> Iterator[dict[str, Any]]:
    """Stage: add `caption` (str | None) and `caption_frame_index` (int | None) to each sample.

    Samples arrive grouped by shard (this runs before the shuffle), so one sidecar is held at a time.
    """
    current_url, rows = None, {}
    for sample in samples:
        if sample["url"] != current_url:
            current_url = sample["url"]
            rows = load_sidecar(sidecar_url(current_url, cfg.captioner_id, cfg.captions_root), counts,
                                text_char_budget(cfg.max_text_length))
        caption, frame_index = rows.get(sample["key"], (None, None))
        sample["caption"], sample["caption_frame_index"] = caption, frame_index
        yield sample


# ---------------------------------------------------------------------------------------------
# Text choice


@dataclass(frozen=True)
class Texts:
    """What one clip contributes to its batch (None: this text source has no such text)."""

    subtitle: str | None
    caption: str | None
    has_caption: bool           # a real caption row exists (False: fallback or not read)
    text: str | None            # mixed / annotation: the pair's one text
    text_is_caption: bool       # mixed: `text` is the caption
    captions: list[str] | None  # the json's reference sentences (retrieval sets)


def _clean(text: Any) -> str | None:
    return text.strip() if isinstance(text, str) and text.strip() else None


def _annotations(meta: dict[str, Any]) -> list[str] | None:
    captions = meta.get(CLIP_CAPTIONS_FIELD)
    if not isinstance(captions, list):
        return None
    cleaned = [c.strip() for c in captions if isinstance(c, str) and c.strip()]
    return cleaned or None


def choose_texts(sample: dict[str, Any], cfg: TrainDataConfig, seed: int, counts: SkipCounts) -> Texts | None:
    """The texts of one sample for `cfg.text_source`, or None (counted) when it must be skipped.

    A missing caption falls back to the subtitle (counted `caption_fallback`, has_caption False)
    or skips the clip (`missing_caption`, with missing_caption=skip); a missing subtitle falls
    back to the caption (`subtitle_fallback`); a clip with no usable text is skipped
    (`missing_text`). Eval mode reads every clip exactly once, so there nothing is skipped for
    its text: `skip` acts as `fallback` and a clip without text gets "" (still counted), e.g. a
    retrieval-set clip without captions stays a candidate video.
    """
    source, keep_every_clip = cfg.text_source, cfg.mode == "eval"
    subtitle, caption = _clean(sample["meta"].get("subtitle")), _clean(sample.get("caption"))
    captions = _annotations(sample["meta"])
    has_caption = caption is not None
    epoch, key = sample["epoch"], sample["key"]

    def no_text() -> Texts | None:
        counts["missing_text"] += 1
        if not keep_every_clip:
            return None
        return Texts("" if source in ("subtitle", "both") else None,
                     "" if source in ("caption", "both") else None, False,
                     "" if source in ("mixed", "annotation") else None, False, captions)

    if source == "annotation":
        if captions is None:
            return no_text()
        pick = int(sample_rng(seed, epoch, key, "annotation").integers(len(captions)))
        return Texts(None, None, False, captions[pick], False, captions)

    if source == "subtitle":
        if subtitle is None:
            return no_text()
        return Texts(subtitle, None, has_caption, None, False, captions)

    if subtitle is None and caption is None:
        return no_text()
    wants_caption = source in ("caption", "both") or (
        source == "mixed" and sample_rng(seed, epoch, key, "mixed").random() < cfg.caption_ratio)
    if wants_caption and caption is None:
        if cfg.missing_caption == "skip" and not keep_every_clip:
            counts["missing_caption"] += 1
            return None
        counts["caption_fallback"] += 1
        caption = subtitle
    if subtitle is None and (source == "both" or (source == "mixed" and not wants_caption)):
        counts["subtitle_fallback"] += 1
        subtitle = caption
        wants_caption = source == "mixed" or wants_caption
    if source == "caption":
        return Texts(None, caption, has_caption, None, False, captions)
    if source == "both":
        return Texts(subtitle, caption, has_caption, None, False, captions)
    # mixed: the pair's one text; text_is_caption says which it really is after any fallback
    if wants_caption:
        return Texts(None, None, has_caption, caption, has_caption, captions)
    return Texts(None, None, has_caption, subtitle, False, captions)


def attach_texts(samples: Iterable[dict[str, Any]], cfg: TrainDataConfig, seed: int,
                 counts: SkipCounts) -> Iterator[dict[str, Any]]:
    """Stage: add `texts` (a Texts) to each sample, dropping the ones `choose_texts` skips."""
    for sample in samples:
        texts = choose_texts(sample, cfg, seed, counts)
        if texts is not None:
            sample["texts"] = texts
            yield sample


# ---------------------------------------------------------------------------------------------
# Tokenisation


def load_tokenizer(processor_dir: str):
    """The checkpoint's CLIP tokenizer (fast: Rust BPE, batched).

    A CLIP-ViP folder's config.json has model_type "clip_vip", unknown to transformers, which
    AutoTokenizer reads and warns about on every load; its text tower is CLIP's, so it is told
    the config is a CLIP one (a `tokenizer_class` in tokenizer_config.json still wins).
    """
    from transformers import AutoTokenizer, CLIPConfig

    from model.clip_vip import is_clip_vip_checkpoint

    extra = {"config": CLIPConfig()} if is_clip_vip_checkpoint(processor_dir) else {}
    return AutoTokenizer.from_pretrained(processor_dir, use_fast=True, **extra)


#: Characters of text kept per token of max_text_length. English averages ~4-5 characters per
#: CLIP BPE token (its space included), so 16 per token keeps over 3x max_text_length tokens of
#: ordinary text and the cut never changes the tokens (test_data_text.py checks it on a 600 KB
#: subtitle); only text of runs of whitespace or of single words longer than ~16 characters could
#: lose tokens. A hostile 40 MB subtitle costs the tokenizer ~1,100 characters at max_text_length 70.
CHARS_PER_TOKEN = 16


def text_char_budget(max_length: int) -> int:
    """The characters of a text the tokenizer is given at `max_length` tokens."""
    return max_length * CHARS_PER_TOKEN


def tokenize(tokenizer, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`texts` -> (ids [B, L] long, mask [B, L] long), L = max_length. Long texts are truncated
    and keep their end token (CLIP pools the text feature at it); short ones are padded. Each
    text is first cut to `text_char_budget(max_length)` characters, so the tokenizer's time and
    memory are bounded whatever a shard holds."""
    budget = text_char_budget(max_length)
    texts = [cut_text(text, budget) for text in texts]
    encoded = tokenizer(texts, max_length=max_length, truncation=True, padding="max_length",
                        return_tensors="pt")
    return encoded["input_ids"].long(), encoded["attention_mask"].long()
