"""Clip spans: parsing timestamps, validating given spans, planning spans from subtitle cues.

Pure functions; no I/O. (To be implemented — contract below is fixed, other modules rely on it.)

    parse_timestamp(value: str | int | float) -> float
        seconds from 12.5, "12.5", "00:00:04.004", "00:04.004", "00:00:04,004" (SRT comma);
        raises ValueError with a message naming the bad text.

    @dataclass(frozen=True) class Span: start_s: float; end_s: float   (property duration_s)

    @dataclass(frozen=True) class ClipPlanSpec: min_clip_s: float = 4.0; max_clip_s: float = 20.0

    validate_span(start_s, end_s, duration_s: float | None, tolerance_s: float = 0.5) -> Span
        raises StageError(stage="span", reason=...) for a negative start, reversed or empty span,
        a start at/after the video end, or an end more than tolerance past it; clamps the end to
        duration_s otherwise.

    plan_clips(cues: list[Cue], spec: ClipPlanSpec, duration_s: float | None) -> list[Span]
        spans cut at sentence ends, merged to min..max seconds, within [0, duration_s].
"""
