"""`vipstream fetch` as a user runs it (the CLI in a subprocess, its own local Ray): SIGKILLed mid-job
and rerun, a second run on the same --output refused while the first runs, and cookies and a
proxy that are really used but never appear in a log line or an output file."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import vipstream_cmd

NUM_VIDEOS = 12
PROXY_USER, PROXY_PASSWORD = "fetchuser", "proxy-pw-Secret-4711"
COOKIE_VALUE = "cookie-Secret-0815"


def _cookie_file(path: Path) -> Path:
    path.write_text("# Netscape HTTP Cookie File\n"
                    f"127.0.0.1\tFALSE\t/\tFALSE\t4102444800\tsession\t{COOKIE_VALUE}\n")
    return path


@pytest.fixture(scope="module")
def killed_and_rerun(fetch_server, fetch_media, tmp_path_factory):
    """Run 1 (cookies + proxy) is SIGKILLed once some videos are in (one of them is held back by
    the server, so it cannot finish first); while it runs, a second run on the same output is
    attempted; then the same command is rerun."""
    folder = tmp_path_factory.mktemp("fetch_cli")
    gate = threading.Event()  # video05 is held back until run 1 is dead: run 1 can never finish
    urls = [fetch_server.add(f"/cli/video{i:02d}.mp4", body=fetch_media.small, **(
        {"kind": "gate", "gate": gate} if i == 5 else {})) for i in range(NUM_VIDEOS)]
    input_path = folder / "urls.txt"
    input_path.write_text("# one URL per line\n" + "\n".join(urls) + "\n")
    cookies = _cookie_file(folder / "my-cookies.txt")
    cookies_before = cookies.read_bytes()
    out_dir = folder / "VIDEOS"
    ray_tmp = Path(tempfile.mkdtemp(prefix="vsfetch", dir="/tmp"))  # short: Ray's socket paths are length-limited
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmp), "NO_PROXY": "", "no_proxy": ""}
    proxy = f"http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{fetch_server.port}"
    cmd = [*vipstream_cmd(), "fetch", "--input", str(input_path), "--output", str(out_dir), "--no-progress",
           "--rate-per-host", "4/s", "--rate-burst", "1", "--concurrency", "2", "--videos-per-task", "3",
           "--num-cpus", "2", "--rate-limit-dir", str(folder / "rate"), "--socket-timeout-s", "5",
           "--cookies", str(cookies), "--proxy", proxy, "--backoff-base-s", "0.1"]
    first = subprocess.Popen(cmd, start_new_session=True, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while len(list(out_dir.glob("*.mp4"))) < 2:
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "no video arrived in time"
        time.sleep(0.05)
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    still_running = first.poll() is None
    os.killpg(first.pid, signal.SIGKILL)
    first_out, first_err = first.communicate()
    done_at_kill = sorted(p.name for p in out_dir.glob("*.mp4"))
    gate.set()
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    yield {"out_dir": out_dir, "urls": urls, "second": second, "still_running": still_running,
           "done_at_kill": done_at_kill, "rerun": rerun, "ray_tmp": ray_tmp, "cookies": cookies,
           "cookies_before": cookies_before,
           "texts": [first_out.decode(errors="replace"), first_err.decode(errors="replace"),
                     second.stdout, second.stderr, rerun.stdout, rerun.stderr]}
    shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.mark.slow
def test_a_second_run_on_the_same_output_is_refused_while_the_first_runs(killed_and_rerun):
    second = killed_and_rerun["second"]
    assert killed_and_rerun["still_running"], "the first run ended before the second was tried"
    assert second.returncode == 1, second.stderr
    assert "in use by vipstream fetch" in second.stderr and "pid" in second.stderr


@pytest.mark.slow
def test_sigkill_mid_job_and_rerun_give_every_video_once_and_nothing_partial(killed_and_rerun, fetch_media):
    out_dir, rerun = killed_and_rerun["out_dir"], killed_and_rerun["rerun"]
    assert len(killed_and_rerun["done_at_kill"]) < NUM_VIDEOS, "the job finished before it could be killed"
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert summary["skipped_as_done"] >= 2 and summary["by_status"] == {"ok": NUM_VIDEOS}
    expected = [f"video{i:02d}" for i in range(NUM_VIDEOS)]
    assert sorted(p.stem for p in out_dir.glob("*.mp4")) == expected
    for path in out_dir.glob("*.mp4"):
        assert path.read_bytes() == fetch_media.small, path.name
    manifest = [json.loads(line) for line in (out_dir / "manifest.jsonl").read_text().splitlines()]
    assert [r["video_id"] for r in manifest] == expected
    status = pq.read_table(out_dir / "status.parquet").to_pylist()
    assert [r["video_id"] for r in status] == expected and {r["status"] for r in status} == {"ok"}
    assert list((out_dir / ".fetch" / "tmp").iterdir()) == []
    assert not [p for p in out_dir.rglob("*") if p.suffix in (".part", ".ytdl", ".tmp")]


@pytest.mark.slow
def test_cookies_and_proxy_are_used_but_never_logged_or_written(killed_and_rerun, fetch_server):
    # Used: the proxy saw our credentials and forwarded the requests, the server got the cookie.
    expected_auth = "Basic " + base64.b64encode(f"{PROXY_USER}:{PROXY_PASSWORD}".encode()).decode()
    assert expected_auth in fetch_server.proxy_auth
    assert any(f"/cli/video{i:02d}.mp4" in fetch_server.proxied for i in range(NUM_VIDEOS))
    assert any(f"session={COOKIE_VALUE}" in c for path, seen in fetch_server.cookies.items()
               if path.startswith("/cli/") for c in seen)
    assert killed_and_rerun["cookies"].read_bytes() == killed_and_rerun["cookies_before"]  # never written to
    # Never logged or written: CLI output, every output file, every Ray log of the runs.
    secrets = [PROXY_PASSWORD, COOKIE_VALUE, expected_auth.split()[1], str(killed_and_rerun["cookies"])]
    for text in killed_and_rerun["texts"]:
        for secret in secrets:
            assert secret not in text
    files = [p for root in (killed_and_rerun["out_dir"], killed_and_rerun["ray_tmp"])
             for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
    assert any(p.name == "fetch_config.yaml" for p in files)
    for path in files:
        data = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in data, f"{secret!r} found in {path}"
    assert "<redacted>" in (killed_and_rerun["out_dir"] / "fetch_config.yaml").read_text()
