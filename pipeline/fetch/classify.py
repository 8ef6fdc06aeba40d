"""yt-dlp failures -> a status class with its reason, and the back-off between attempts.

Pure functions: `classify(text, http_status, kind)` reads what yt-dlp said (the message of its
DownloadError / ExtractorError, the HTTP status of the HTTPError behind it, the exception's type
name) and never raises. Message patterns are YouTube's and yt-dlp's own wording
(yt_dlp/extractor/youtube/_video.py, yt_dlp/downloader/http.py); an unknown message is `error`.

Statuses (`status` column of status.parquet):
    ok           fetched; subtitles recorded separately (`subtitle_status`)
    unavailable  404/410, private, deleted, region- or age-restricted, members-only, live or
                 upcoming, DRM, no format within the asked height: permanent
    blocked      HTTP 403 / 429, bot check, captcha, rate-limited session: retried by --retry-failed
    timeout      the attempt's deadline or a socket timeout: retried by --retry-failed
    transient    5xx, connection reset / refused, truncated transfer: retried by --retry-failed
    too_large    over --max-filesize or --max-duration: permanent
    not_video    no video at the URL (an HTML page, a playlist, a file ffprobe cannot read): permanent
    bad_url      not an http(s) URL, or redirected to one that is not: permanent, never requested
    error        anything else (an unforeseen yt-dlp message, a bug): permanent, read its reason
Within one run, only 429, 5xx, timeouts and connection errors back off and retry (`backoff`);
a 403 or a bot check asked again at once gets the same answer.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

OK = "ok"
UNAVAILABLE = "unavailable"
BLOCKED = "blocked"
TIMEOUT = "timeout"
TRANSIENT = "transient"
TOO_LARGE = "too_large"
NOT_VIDEO = "not_video"
BAD_URL = "bad_url"
ERROR = "error"
PENDING = "pending"  # in status.parquet only: not attempted yet (the job did not finish)
STATUSES = (OK, UNAVAILABLE, BLOCKED, TIMEOUT, TRANSIENT, TOO_LARGE, NOT_VIDEO, BAD_URL, ERROR, PENDING)
#: Failures `--retry-failed` re-attempts; every other failure is permanent.
RETRYABLE_STATUSES = frozenset({BLOCKED, TIMEOUT, TRANSIENT})


@dataclass(frozen=True)
class Failure:
    status: str
    reason: str
    http_status: int | None = None
    backoff: bool = False  # retry within this run, after an exponential back-off
    retry_after_s: float | None = None  # the server's Retry-After, when it sent one


# (status, backoff, pattern) in order: the first match wins, so specific before general.
_PATTERNS: tuple[tuple[str, bool, re.Pattern[str]], ...] = tuple(
    (status, backoff, re.compile(pattern, re.IGNORECASE)) for status, backoff, pattern in (
        (BAD_URL, False, r"no connection adapters were found|unsupported url scheme|redirect(ion)? to .*file:"
                         r"|file:// urls? (are|is) (disabled|not allowed)|url scheme .* not supported"),
        (TOO_LARGE, False, r"larger than max-filesize|file is larger than|over max_filesize|longer than max_duration"),
        (BLOCKED, False, r"not a bot|captcha|ip is likely being blocked|confirm you.re not"),
        # YouTube's "session rate-limited for up to an hour": a back-off of seconds cannot help.
        (BLOCKED, False, r"try again later|rate.?limited by youtube"),
        (BLOCKED, True, r"too many requests|rate.?limit"),
        (UNAVAILABLE, False, r"confirm your age|age.?restricted|inappropriate for some users"),
        (UNAVAILABLE, False, r"private video|video unavailable|has been removed|no longer available|"
                             r"account .* terminated|not made this video available in your country|"
                             r"geo.?restrict|not available in your (country|region)|members.only|"
                             r"join this channel|premieres in|live event will begin|is a live stream|"
                             r"drm protected|requested format is not available|copyright|"
                             r"video (does not|doesn.t) exist|this video is unavailable"),
        (NOT_VIDEO, False, r"unsupported url|no video formats found|not a video|is a playlist|"
                           r"ffprobe cannot read|no video stream|unable to extract"),
        (TIMEOUT, True, r"timed? ?out|deadline"),
        (TRANSIENT, True, r"connection (reset|refused|aborted|broken)|remote end closed|broken pipe|"
                          r"incompleteread|content too short|temporary failure in name resolution|"
                          r"name or service not known|network is unreachable|eof occurred|"
                          r"unable to connect to proxy|proxyerror|got error:|giving up after"),
    ))


def classify(text: str, http_status: int | None = None, kind: str = "") -> Failure:
    """What yt-dlp said -> Failure. `kind` is the exception type name (GeoRestrictedError, ...)."""
    reason = " ".join(str(text).replace("\r", " ").split())
    reason = re.sub(r"^ERROR:\s*", "", reason)[:500]
    if kind == "GeoRestrictedError":
        return Failure(UNAVAILABLE, reason, http_status)
    if http_status is not None:
        if http_status == 429:
            return Failure(BLOCKED, reason, 429, backoff=True)
        if http_status == 403:
            return Failure(BLOCKED, reason, 403)
        if http_status in (404, 410, 451):
            return Failure(UNAVAILABLE, reason, http_status)
        if http_status == 408:
            return Failure(TIMEOUT, reason, 408, backoff=True)
        if 500 <= http_status < 600:
            return Failure(TRANSIENT, reason, http_status, backoff=True)
    for status, backoff, pattern in _PATTERNS:
        if pattern.search(reason):
            if status == BAD_URL and "connection adapters" in reason.lower():
                reason = f"refused a redirect to a URL that is not http(s) ({reason})"
            return Failure(status, reason, http_status, backoff=backoff)
    if kind in ("TimeoutError", "ReadTimeout", "ConnectTimeout", "socket.timeout"):
        return Failure(TIMEOUT, reason, http_status, backoff=True)
    if kind in ("ConnectionError", "ConnectionResetError", "IncompleteRead", "TransportError"):
        return Failure(TRANSIENT, reason, http_status, backoff=True)
    return Failure(ERROR, reason or kind or "unknown failure", http_status)


def parse_retry_after(value: str | None) -> float | None:
    """A Retry-After header given in seconds -> seconds (HTTP dates are ignored: None)."""
    try:
        seconds = float(str(value).strip())
    except (TypeError, ValueError):
        return None
    return seconds if seconds >= 0 else None


def backoff_delay(retry: int, base_s: float, max_s: float, rng: random.Random,
                  retry_after_s: float | None = None) -> float:
    """Seconds to wait before retry number `retry` (1 = the first retry).

    Exponential (base * 2**(retry-1), capped at max_s) with jitter: a uniform draw from the upper
    half of that window, so retries of many tasks hit by one 429 wave spread out instead of
    returning together, yet none retries sooner than half the nominal delay. A server's
    Retry-After is honoured (capped at max_s) when it asks for longer.
    """
    nominal = min(max_s, base_s * 2 ** max(retry - 1, 0))
    delay = rng.uniform(nominal / 2, nominal) if nominal > 0 else 0.0
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, max_s))
    return delay
