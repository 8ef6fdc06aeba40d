"""The http(s)-only rule, the host a rate limit applies to, and ids derived from URLs.

yt-dlp accepts much more than web addresses (`file:` with --enable-file-urls, search prefixes
such as `ytsearch:`, bare ids), and a corpus list comes from the web: only absolute http(s)
URLs with a host are fetched; anything else is a `bad_url` status before any request is made.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import parse_qs, urlsplit

from vipstream.schema import sanitize_id

ALLOWED_SCHEMES = ("http", "https")
_YOUTUBE_HOSTS = re.compile(r"(^|\.)(youtube\.com|youtube-nocookie\.com)$")
_YOUTUBE_ID = re.compile(r"^[A-Za-z0-9_-]{11}$")


class BadUrl(ValueError):
    """A URL vipstream refuses to fetch; the message says why."""


def check_http_url(url: object) -> str:
    """`url` stripped, if it is an absolute http(s) URL with a host; else BadUrl saying why."""
    if not isinstance(url, str) or not url.strip():
        raise BadUrl(f"expected an http(s) URL, found {url!r:.80}")
    url = url.strip()
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise BadUrl(f"URL holds whitespace or control characters: {url!r:.120}")
    parts = urlsplit(url)
    if parts.scheme.lower() not in ALLOWED_SCHEMES:
        raise BadUrl(f"only http(s) URLs are fetched, found scheme {parts.scheme or 'none'!r} in {url!r:.120}")
    if not parts.hostname:
        raise BadUrl(f"URL has no host: {url!r:.120}")
    return url


def url_host(url: str) -> str:
    """The host (lower case, port kept) a per-host rate limit counts requests against."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    return f"{host}:{parts.port}" if parts.port else host


def youtube_id(url: str) -> str | None:
    """The 11-character id of a YouTube watch / shorts / embed / youtu.be URL, else None."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    candidate = None
    if host == "youtu.be":
        candidate = parts.path.strip("/").split("/")[0]
    elif _YOUTUBE_HOSTS.search(host):
        if parts.path == "/watch":
            candidate = (parse_qs(parts.query).get("v") or [""])[0]
        else:
            segments = [s for s in parts.path.split("/") if s]
            if len(segments) >= 2 and segments[0] in ("shorts", "embed", "v", "live"):
                candidate = segments[1]
    return candidate if candidate and _YOUTUBE_ID.match(candidate) else None


def video_id_from_url(url: str) -> str:
    """An id for a URL given without one: the YouTube id, else the last path segment's stem,
    else a hash of the URL; always sanitised (`[A-Za-z0-9_-]`), so it is safe as a file stem."""
    found = youtube_id(url)
    if found:
        return found
    last = urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]
    stem = last.rsplit(".", 1)[0] if "." in last else last
    return sanitize_id(stem) if stem.strip("._-") else url_hash(url)


def url_hash(url: str) -> str:
    return hashlib.sha1(url.encode("utf-8")).hexdigest()[:10]
