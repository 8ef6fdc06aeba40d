"""How good is `vipstream transcribe` on your videos? Word error rate of its VTTs against the
subtitle files a corpus already has (human subtitles, or YouTube's own captions).

Transcribe a corpus whose videos have subtitles with `--all`, so every video gets an ASR VTT
beside its own subtitles, then compare them:

    vipstream transcribe --input CORPUS --output asr_check/ --asr openai/whisper-large-v3 --all --num-gpus 1
    python -m tools.asr_wer --input CORPUS --asr asr_check/ [--video-root ROOT] [--json]

Per video and for the corpus (total edits / total reference words): substitutions + deletions
+ insertions over the reference's words, whole video against whole video, words lower-cased
with punctuation stripped (no number or spelling normalisation, so a few % of "errors" are
"10" vs "ten"). Pure of models: `word_error_rate(reference, hypothesis)` is the measure.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

_WORD = re.compile(r"[\w']+")


def words(text: str) -> list[str]:
    """"Hello, World! It's" -> ["hello", "world", "it's"]."""
    return [w.strip("'") for w in _WORD.findall(text.lower()) if w.strip("'")]


def edit_distance(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """Word-level Levenshtein distance, one numpy pass per reference word (O(n m), hour-long
    videos in about a second): the cost of a row is min(above + 1, diagonal + substitution),
    then insertions along the row are a running minimum of (cost - j) + j."""
    vocabulary: dict[str, int] = {}
    hyp = np.array([vocabulary.setdefault(w, len(vocabulary)) for w in hypothesis], dtype=np.int64)
    columns = np.arange(len(hyp) + 1)
    row = columns.copy()
    for word in reference:
        code = vocabulary.get(word, -1)
        new = np.empty_like(row)
        new[0] = row[0] + 1
        new[1:] = np.minimum(row[1:] + 1, row[:-1] + (hyp != code))
        row = np.minimum.accumulate(new - columns) + columns
    return int(row[-1])


def word_error_rate(reference: str, hypothesis: str) -> tuple[int, int]:
    """(edits, reference words) of `hypothesis` against `reference`."""
    ref, hyp = words(reference), words(hypothesis)
    return edit_distance(ref, hyp), len(ref)


def compare(input_path: str | Path, asr_dir: str | Path, video_root: str | Path | None = None) -> dict[str, Any]:
    """WER of every video of the corpus that has both its own subtitles and an ASR VTT."""
    from pipeline.builder.manifest import read_manifest
    from pipeline.builder.subtitles import load_subtitles
    from pipeline.errors import StageError
    from vipstream.schema import asr_subtitle_path

    per_video, skipped = {}, {}
    for entry in read_manifest(input_path, video_root).entries:
        vtt = asr_subtitle_path(asr_dir, entry.video_id)
        if not entry.subtitles or not vtt.exists():
            skipped[entry.video_id] = "no subtitle file of its own" if not entry.subtitles else "no ASR VTT"
            continue
        try:
            reference = " ".join(c.text for c in load_subtitles(entry.subtitles))
            hypothesis = " ".join(c.text for c in load_subtitles(vtt))
        except StageError as exc:
            skipped[entry.video_id] = exc.reason
            continue
        edits, count = word_error_rate(reference, hypothesis)
        per_video[entry.video_id] = {"edits": edits, "reference_words": count,
                                     "wer": round(edits / count, 4) if count else None}
    edits = sum(v["edits"] for v in per_video.values())
    count = sum(v["reference_words"] for v in per_video.values())
    return {"videos": len(per_video), "reference_words": count, "edits": edits,
            "wer": round(edits / count, 4) if count else None, "per_video": per_video, "skipped": skipped}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, type=Path, help="the corpus (any form `vipstream build` takes)")
    parser.add_argument("--asr", required=True, type=Path, help="the `vipstream transcribe --output` folder")
    parser.add_argument("--video-root", type=Path, default=None)
    parser.add_argument("--json", action="store_true", help="print the whole report as JSON")
    args = parser.parse_args(argv)
    report = compare(args.input, args.asr, args.video_root)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for video_id, row in sorted(report["per_video"].items()):
            print(f"{video_id:40s} WER {row['wer']:.3f}  ({row['edits']} edits / {row['reference_words']} words)")
        wer = "-" if report["wer"] is None else f"{report['wer']:.3f}"
        print(f"corpus WER {wer} over {report['videos']} videos ({report['reference_words']} reference words); "
              f"{len(report['skipped'])} skipped")
    return 0 if report["videos"] else 1


if __name__ == "__main__":
    sys.exit(main())
