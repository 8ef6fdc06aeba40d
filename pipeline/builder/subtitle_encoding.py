"""Subtitle bytes -> text: the encodings subtitle files come in (UTF-8 with or without BOM,
UTF-16/32 with BOM, BOM-less UTF-16, Windows cp1252, latin-1). Pure, no I/O."""

from __future__ import annotations

import codecs


def read_subtitle_text(data: bytes) -> str:
    """Decode a subtitle file's bytes, guessing the encoding the way subtitle tools in the wild do.

    A byte-order mark decides first (UTF-32, UTF-8, UTF-16 LE/BE); then strict UTF-8; then
    BOM-less UTF-16 recognised by its NUL bytes; then cp1252 (Windows-made SRTs, curly quotes);
    latin-1 last because it decodes anything. Line ends come back as "\\n" and no BOM remains.
    """
    text = _decode(data)
    return text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


def _decode(data: bytes) -> str:
    for bom, encoding in ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
                          (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
                          (codecs.BOM_UTF16_BE, "utf-16")):
        if data.startswith(bom):
            try:
                return data.decode(encoding)
            except UnicodeDecodeError:
                break  # a BOM followed by garbage: let the fallbacks below decide
    candidates = ["utf-8"]
    bomless_utf16 = _bomless_utf16(data)
    if bomless_utf16:
        candidates.insert(0, bomless_utf16)
    for encoding in (*candidates, "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def _bomless_utf16(data: bytes) -> str | None:
    """'utf-16-le'/'utf-16-be' when NULs sit on one byte parity only (ASCII text in UTF-16)."""
    if len(data) < 4 or len(data) % 2:
        return None
    even_nuls, odd_nuls = data[0::2].count(0), data[1::2].count(0)
    half = len(data) // 2
    if odd_nuls > 0.4 * half and even_nuls == 0:
        return "utf-16-le"
    if even_nuls > 0.4 * half and odd_nuls == 0:
        return "utf-16-be"
    return None
