"""pipeline/fetch/classify.py: what yt-dlp says -> a status, and the back-off between attempts.
Messages are yt-dlp's and YouTube's own wording (yt_dlp/extractor/youtube/_video.py, downloader/http.py)."""

from __future__ import annotations

import random

import pytest

from pipeline.fetch.classify import RETRYABLE_STATUSES, backoff_delay, classify, parse_retry_after


@pytest.mark.parametrize("text, http_status, kind, status, backoff", [
    ("ERROR: [youtube] abc: Private video. Sign in if you've been granted access to this video", None, "", "unavailable", False),
    ("ERROR: [youtube] abc: Video unavailable. This video has been removed by the uploader", None, "", "unavailable", False),
    ("ERROR: [youtube] abc: Sign in to confirm your age. This video may be inappropriate for some users.", None, "", "unavailable", False),
    ("ERROR: [youtube] abc: Sign in to confirm you're not a bot. Use --cookies-from-browser or --cookies", None, "", "blocked", False),
    ("ERROR: [youtube] abc: The uploader has not made this video available in your country", None, "GeoRestrictedError", "unavailable", False),
    ("ERROR: [youtube] abc: Join this channel to get access to members-only content like this video", None, "", "unavailable", False),
    ("ERROR: [youtube] abc: This live event will begin in 3 hours.", None, "", "unavailable", False),
    ("ERROR: [youtube] abc: Video unavailable. This content isn't available, try again later. The current session "
     "has been rate-limited by YouTube for up to an hour.", None, "", "blocked", False),
    ("ERROR: [youtube] abc: Requested format is not available. Use --list-formats", None, "", "unavailable", False),
    ("ERROR: [generic] x: Unable to download webpage: HTTP Error 429: Too Many Requests", 429, "HTTPError", "blocked", True),
    ("ERROR: [generic] x: Unable to download webpage: HTTP Error 403: Forbidden", 403, "HTTPError", "blocked", False),
    ("ERROR: [generic] x: Unable to download webpage: HTTP Error 404: Not Found", 404, "HTTPError", "unavailable", False),
    ("ERROR: unable to download video data: HTTP Error 503: Service Unavailable", 503, "HTTPError", "transient", True),
    ("ERROR: [download] Got error: HTTPConnectionPool(host='x', port=80): Read timed out.. Giving up after 3 retries",
     None, "", "timeout", True),
    ("ERROR: unable to download video data: ('Connection aborted.', ConnectionResetError(104, 'Connection reset by peer'))",
     None, "", "transient", True),
    ("ERROR: Unsupported URL: https://example.org/page", None, "UnsupportedError", "not_video", False),
    ("No connection adapters were found for 'file:///etc/passwd'", None, "RequestError", "bad_url", False),
    ("[download] File is larger than max-filesize (338639 bytes > 100000 bytes). Aborting.", None, "", "too_large", False),
    ("something nobody has seen before", None, "KeyError", "error", False),
])
def test_messages_map_to_their_status_and_only_transient_ones_back_off(text, http_status, kind, status, backoff):
    failure = classify(text, http_status, kind)
    assert (failure.status, failure.backoff) == (status, backoff)
    assert failure.http_status == http_status and not failure.reason.startswith("ERROR:")


def test_a_rate_limited_session_is_retried_by_retry_failed_but_not_backed_off_within_the_run():
    failure = classify("This content isn't available, try again later.")
    assert failure.status == "blocked" and failure.status in RETRYABLE_STATUSES and not failure.backoff


def test_retryable_statuses_are_the_transient_classes_only():
    assert RETRYABLE_STATUSES == {"blocked", "timeout", "transient"}


def test_backoff_doubles_within_its_jitter_window_and_caps():
    rng = random.Random(0)
    for retry, nominal in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 30.0)):
        delays = [backoff_delay(retry, 1.0, 30.0, rng) for _ in range(200)]
        assert nominal / 2 <= min(delays) and max(delays) <= nominal
        assert max(delays) - min(delays) > nominal / 4  # really jittered
    assert backoff_delay(1, 1.0, 30.0, rng, retry_after_s=12.0) == 12.0  # the server asks for longer
    assert backoff_delay(1, 1.0, 30.0, rng, retry_after_s=900.0) == 30.0  # ... within the cap
    assert backoff_delay(1, 0.0, 0.0, rng) == 0.0


def test_retry_after_in_seconds_is_read_and_dates_are_ignored():
    assert parse_retry_after("7") == 7.0 and parse_retry_after(" 0.5 ") == 0.5
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") is None and parse_retry_after(None) is None
