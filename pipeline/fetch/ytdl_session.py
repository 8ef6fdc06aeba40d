"""The YoutubeDL instances of one task, reused from video to video as a bare download loop does.

Building a YoutubeDL loads every extractor (~0.1 s, as long as a small download on a fast link),
so a task keeps one for the extraction + video pass and one for the subtitle pass. Their options
never change (pipeline/fetch/options.py): each video's folder and file stem come from fields of
its info dict, and the one progress hook finds the attempt it belongs to by that folder. An
instance that a timed-out (abandoned) attempt may still be using is dropped, never shared.
"""

from __future__ import annotations

import collections
import re
from pathlib import Path
from typing import Any, Callable

from pipeline.fetch.config import FetchConfig
from pipeline.fetch.options import FOLDER_FIELD, subtitle_options, video_options


class Messages:
    """yt-dlp's `logger`: keeps its last messages, which explain the failures it reports by
    returning instead of raising (e.g. "File is larger than max-filesize ... Aborting")."""

    def __init__(self) -> None:
        self.lines: collections.deque[str] = collections.deque(maxlen=64)

    def debug(self, message: str) -> None:
        self.lines.append(str(message))

    info = warning = error = debug

    def clear(self) -> None:
        self.lines.clear()

    def find(self, pattern: str) -> str | None:
        regex = re.compile(pattern, re.IGNORECASE)
        return next((line for line in reversed(self.lines) if regex.search(line)), None)


class YtdlSession:
    """`video()` and `subtitles()` give this task's YoutubeDL instances (built on first use);
    `register(folder, hook)` routes progress of the attempt in `folder` to `hook`."""

    def __init__(self, cfg: FetchConfig, work_dir: Path, cookie_file: str | None = None):
        self.cfg, self.work_dir, self.cookie_file = cfg, Path(work_dir), cookie_file
        self.messages = Messages()
        self._hooks: dict[str, Callable[[dict[str, Any]], None]] = {}
        self._video = self._subtitles = None

    def _progress(self, progress: dict[str, Any]) -> None:
        hook = self._hooks.get(str((progress.get("info_dict") or {}).get(FOLDER_FIELD)))
        if hook is not None:
            hook(progress)

    def register(self, folder: str, hook: Callable[[dict[str, Any]], None]) -> None:
        self._hooks[folder] = hook

    def unregister(self, folder: str) -> None:
        self._hooks.pop(folder, None)

    def video(self):
        import yt_dlp

        if self._video is None:
            self._video = yt_dlp.YoutubeDL(video_options(self.cfg, self.work_dir, logger=self.messages,
                                                         progress_hook=self._progress, cookie_file=self.cookie_file))
        return self._video

    def subtitles(self):
        import yt_dlp

        if self._subtitles is None:
            self._subtitles = yt_dlp.YoutubeDL(subtitle_options(self.cfg, self.work_dir, logger=Messages(),
                                                                cookie_file=self.cookie_file))
        return self._subtitles

    def drop(self) -> None:
        """Forget the instances (an abandoned attempt may still use them); new ones come next."""
        self._video = self._subtitles = None
        self.messages = Messages()

    def close(self) -> None:
        for ydl in (self._video, self._subtitles):
            if ydl is not None:
                ydl.close()  # saves the cookie jar into the task's private copy
        self._video = self._subtitles = None
