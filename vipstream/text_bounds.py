"""Cutting text to a character bound, the one rule of every place that bounds a text (issue 15.6):
the builder's subtitles (`max_subtitle_chars`), the caption job's captions (`max_caption_chars`)
and the trainer's tokenizer input (`train.data.text.text_char_budget`)."""

from __future__ import annotations


def cut_text(text: str, max_chars: int) -> str:
    """`text` cut to at most `max_chars` characters, at the last whitespace of its final quarter
    when there is one (so no word is cut in two: a word's first half can tokenise differently)."""
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    space = max(cut.rfind(" "), cut.rfind("\n"), cut.rfind("\t"))
    return cut[:space].rstrip() if space >= max_chars * 3 // 4 else cut
