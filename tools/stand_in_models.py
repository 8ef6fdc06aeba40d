"""Stand-ins for pretrained Hugging Face checkpoints, built locally (nothing is downloaded).

The hub is out of reach on CI and on the demo machine, yet every consumer (the loader, the
trainer, `vipstream eval`) must go through the real loading code: `AutoTokenizer`,
`AutoImageProcessor`, `CLIPModel.from_pretrained`. So we build tiny checkpoints with the same
files a real one has — weights (safetensors), config, a CLIP byte-level BPE tokenizer and a CLIP
image processor config — and `save_pretrained` them into a folder.

The tokenizer is CLIP's real one (`CLIPTokenizer`, fast, byte-level BPE with `</w>` word ends)
over a small vocabulary: every byte, plus merges that make each word of `words` one token, so
texts of the synthetic corpus tokenise to words rather than characters.

    save_tiny_clip(folder, words=CORPUS_WORDS) -> folder
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

# Words of the synthetic corpus's subtitles and captions (tools/make_synthetic_corpus.py) plus
# common English glue; anything else still tokenises, byte by byte.
CORPUS_WORDS = tuple(sorted(set(
    "a an the and then of on in to from at is are it this that with moves moving appears appear "
    "left right top bottom up down across over background shape square wide tall small large "
    "rectangle circle red green blue yellow white black orange purple cyan magenta pink gray "
    "first second now here there so um uh like you know okay we see look what".split())))

START_TOKEN = "<|startoftext|>"
END_TOKEN = "<|endoftext|>"


def clip_tokenizer(words: Iterable[str] = CORPUS_WORDS, model_max_length: int = 77):
    """A CLIP fast tokenizer over every byte plus BPE merges that make each word of `words` one token.

    The merges are learnt as OpenAI's were, by byte-pair encoding over the words (`_learn_merges`):
    a hand-made chain per word (`r e` -> `re`, `re d</w>` -> `red</w>`) is not enough, because BPE
    applies merges by rank across the whole word, and another word's earlier merge (`a n` from
    "and") breaks the chain of "rectangle". Special tokens get the last two ids, as in CLIP.
    """
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_chars = list(bytes_to_unicode().values())
    vocab = byte_chars + [c + "</w>" for c in byte_chars]
    known = set(vocab)
    merges = _learn_merges(sorted({w.lower() for w in words if w.isascii() and len(w) >= 2}))
    for left, right in merges:
        if left + right not in known:
            vocab.append(left + right)
            known.add(left + right)
    vocab += [START_TOKEN, END_TOKEN]
    return CLIPTokenizer(vocab={token: i for i, token in enumerate(vocab)}, merges=merges,
                         model_max_length=model_max_length)


def _learn_merges(words: list[str]) -> list[tuple[str, str]]:
    """Byte-pair merges, most frequent pair first (ties: the smaller pair), until every word is
    one symbol; symbols as CLIP writes them (the last one of a word ends in `</w>`). Deterministic."""
    from collections import Counter

    spelled = [[*w[:-1], w[-1] + "</w>"] for w in words]
    merges: list[tuple[str, str]] = []
    while True:
        pairs = Counter(pair for symbols in spelled for pair in zip(symbols, symbols[1:]))
        if not pairs:
            return merges
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merges.append(best)
        for k, symbols in enumerate(spelled):
            merged, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            spelled[k] = merged


def tiny_clip_config(tokenizer, *, hidden: int = 32, layers: int = 2, heads: int = 4,
                     image_size: int = 32, patch_size: int = 8, projection_dim: int = 32,
                     max_text_positions: int = 77):
    """A `CLIPConfig` whose text ids agree with `tokenizer` (CLIP pools the text at its end token)."""
    from transformers import CLIPConfig

    text = dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                num_attention_heads=heads, vocab_size=len(tokenizer),
                max_position_embeddings=max_text_positions, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    vision = dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                  num_attention_heads=heads, image_size=image_size, patch_size=patch_size)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)


def clip_image_processor(image_size: int = 32):
    """CLIP's preprocessing at `image_size`: resize the short side, centre crop, CLIP mean/std."""
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(size={"shortest_edge": image_size},
                              crop_size={"height": image_size, "width": image_size})


def save_tiny_clip(folder: str | Path, *, words: Iterable[str] = CORPUS_WORDS, seed: int = 0,
                   hidden: int = 32, layers: int = 2, heads: int = 4, image_size: int = 32,
                   patch_size: int = 8, projection_dim: int = 32, max_text_positions: int = 77,
                   model=None) -> Path:
    """Write a random-init (or the given) tiny `CLIPModel` + tokenizer + image processor to `folder`.

    The folder loads like a hub CLIP checkpoint: `CLIPModel.from_pretrained`, `AutoTokenizer`,
    `AutoImageProcessor`, `CLIPViPModel.from_clip`.
    """
    import torch
    from transformers import CLIPModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = clip_tokenizer(words, model_max_length=max_text_positions)
    if model is None:
        torch.manual_seed(seed)
        model = CLIPModel(tiny_clip_config(tokenizer, hidden=hidden, layers=layers, heads=heads,
                                           image_size=image_size, patch_size=patch_size,
                                           projection_dim=projection_dim,
                                           max_text_positions=max_text_positions)).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    clip_image_processor(model.config.vision_config.image_size).save_pretrained(folder)
    return folder
