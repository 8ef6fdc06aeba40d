"""One timestamp parser for manifest spans and subtitle cues, so both read times the same way.

Its own module because both `clips` (given spans) and `subtitles` (JSON cue times) need it, and
`clips` already imports `subtitles` for `Cue`: keeping the parser in either would make a circle.
"""

from __future__ import annotations

import math
import re

# "12.5" / "12"  and  "(h:)m:s(.fff)" with "," allowed for SRT-style fractions.
_SECONDS = re.compile(r"^\d+(?:\.\d*)?$|^\.\d+$")
_CLOCK = re.compile(r"^(?:(\d+):)?(\d{1,2}):(\d{1,2}(?:[.,]\d*)?)$")


def parse_timestamp(value: str | int | float) -> float:
    """Seconds from 12.5, "12.5", "00:00:04.004", "00:04.004", "00:00:04,004" or "1:02:03.5".

    Both forms occur in one HD-VILA-style manifest (spans as numbers or as clock strings), and
    subtitle files use the same clock form, so there is one parser for all of them. Raises
    ValueError naming the bad text. Negative numbers pass through (validate_span reports them
    with the span); negative clock strings, NaN and infinity do not.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a timestamp: {value!r} (expected seconds or hh:mm:ss.mmm)")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError(f"not a timestamp: {value!r} (expected a finite number of seconds)")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"not a timestamp: {value!r} (expected seconds or hh:mm:ss.mmm, "
                         f"found {type(value).__name__})")
    text = value.strip()
    clock = _CLOCK.match(text)
    if _SECONDS.match(text):
        seconds_total = float(text)
    elif clock:
        hours, minutes = int(clock.group(1) or 0), int(clock.group(2))
        seconds = float(clock.group(3).replace(",", "."))
        if minutes >= 60 or seconds >= 60:
            raise ValueError(f"not a timestamp: {value!r} (minutes and seconds must be below 60)")
        seconds_total = round(hours * 3600 + minutes * 60 + seconds, 6)
    else:
        raise ValueError(f"not a timestamp: {value!r} (expected seconds like 12.5 or hh:mm:ss.mmm)")
    if not math.isfinite(seconds_total):
        raise ValueError(f"not a timestamp: {value[:40]!r}... (too large to be a time)")
    return seconds_total
