"""Subtitles: bytes -> text (encoding detection) -> cues (VTT/SRT/JSON) -> a clip's text.

(To be implemented — contract below is fixed, other modules rely on it.)

    @dataclass(frozen=True) class Cue: start_s: float; end_s: float; text: str

    load_subtitles(path: str | Path) -> list[Cue]
        format by suffix (.vtt, .srt, .json); raises StageError(stage="subtitles", reason=...) for a
        missing, unreadable or unparseable file.

    clip_subtitle(cues: list[Cue], start_s: float, end_s: float) -> str
        the de-duplicated text of the cues overlapping [start_s, end_s).
"""
