"""A corpus where no clip decodes ends training with one clear line and exit 1 instead of spinning
(issue 15.2; train/data/stream.py RoundTally, train/data/skips.py), its per-clip warnings
rate-limited; a corpus with a single decodable clip still trains."""

from __future__ import annotations

import itertools
import logging
import os
import signal
import subprocess
import time

import pytest

from tests.captioning import write_caption_shards
from tests.conftest import vipstream_cmd
from tests.train.loader_support import data_config
from train.data import make_train_loader
from vipstream.errors import JobError


@pytest.fixture(scope="module")
def png(tmp_path_factory) -> bytes:
    """A real PNG image: what decord refuses as a video."""
    path = tmp_path_factory.mktemp("png") / "frame.png"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "color=red:s=64x64", "-frames:v", "1",
                    str(path)], check=True)
    return path.read_bytes()


def _train(data, stand_in_clip, output, timeout: float = 300.0) -> tuple[int, str, float]:
    command = [*vipstream_cmd(), "train", "--data", str(data), "--init", str(stand_in_clip), "--output", str(output),
               "--text-source", "subtitle", "--loss", "vs", "--max-steps", "2", "--batch-size", "2",
               "--num-frames", "3", "--loader-workers", "1", "--progress", "false"]
    started = time.perf_counter()
    # its own process group: a run that spins past the timeout is ended with its loader workers
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        _, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    return process.returncode, stderr, time.perf_counter() - started


def test_every_mp4_a_png_exits_1_after_a_round_with_one_line_and_few_warnings(png, stand_in_clip, tmp_path):
    write_caption_shards(tmp_path / "png", [3, 3], clip=png)
    code, stderr, seconds = _train(tmp_path / "png", stand_in_clip, tmp_path / "run")
    assert code == 1, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("vipstream train: no clip to train on: a full round over all 2 shards read 6 samples "
                           "and not one of them decodes (skipped: corrupt_video "), last
    assert "Traceback" not in stderr
    decode_warnings = [line for line in stderr.splitlines() if "cannot decode its mp4" in line]
    assert len(decode_warnings) == 3, decode_warnings  # skip_warnings_in_full, then counts only
    assert len(stderr) < 20_000, f"{len(stderr)} bytes of log for a failure seen in {seconds:.0f} s"


def test_zero_byte_members_give_the_same_clear_error(stand_in_clip, tmp_path):
    write_caption_shards(tmp_path / "zero", [3, 3], clip=b"")
    cfg = data_config(tmp_path / "zero", captioner_id=None, mode="train", text_source="subtitle", num_workers=1)
    with pytest.raises(JobError) as caught:  # train.data.stream.NoUsableData, with its message only
        next(iter(make_train_loader(cfg, str(stand_in_clip))))
    assert str(caught.value) == ("no clip to train on: a full round over all 2 shards gave no usable sample "
                                 "(skipped: missing_member 6); see the warnings above, and `vipstream inspect` "
                                 "the build")


def test_pngs_in_process_stop_with_rate_limited_warnings(png, stand_in_clip, tmp_path, caplog):
    write_caption_shards(tmp_path / "png", [4, 4], clip=png)
    cfg = data_config(tmp_path / "png", captioner_id=None, mode="train", text_source="subtitle", num_workers=0,
                      sample_shuffle=1000, sample_shuffle_initial=100, skip_warnings_every_s=0.0)
    caplog.set_level(logging.WARNING, logger="train.data.skips")
    with pytest.raises(JobError, match="read 8 samples and not one of them decodes"):
        next(iter(make_train_loader(cfg, str(stand_in_clip))))
    messages = [r.getMessage() for r in caplog.records]
    assert sum("cannot decode its mp4" in m for m in messages) == 3
    summaries = [m for m in messages if "more 'corrupt_video' skips" in m]
    assert summaries  # every_s=0: a count with each further skip, never the full text again


def test_one_decodable_clip_among_pngs_is_trained_on_round_after_round(png, clip_mp4, stand_in_clip, tmp_path):
    write_caption_shards(tmp_path / "mixed", [5, 5], clip=png, extra_clips={(1, 3): clip_mp4})
    cfg = data_config(tmp_path / "mixed", captioner_id=None, mode="train", text_source="subtitle", num_workers=1,
                      batch_size=2)
    got = list(itertools.islice(make_train_loader(cfg, str(stand_in_clip)), 3))
    assert {key for b in got for key in b.keys} == {"vid1x1_0003"}
    assert sum(b.counts.get("corrupt_video", 0) for b in got) >= 9 * 2  # it took rounds to fill 3 batches
