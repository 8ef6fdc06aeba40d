"""Frame index rules (DESIGN.md section 1) and decoding only the needed frames (train/data/frames.py)."""

from __future__ import annotations

import io

import numpy as np
import webdataset as wds

from tests.train.loader_support import sidecar_rows
from train.data.frames import decode_clip, eval_frame_indices, train_frame_bounds, train_frame_indices


def test_train_rule_stays_within_its_bounds_and_varies():
    rng = np.random.default_rng(0)
    for n in (12, 13, 40, 61, 200):
        max_start, min_end = train_frame_bounds(n, 12)
        assert max_start == int(n / 11) and min_end == n - 1 - int(n / 11)  # start <= n/11, end >= n-1-n/11
        starts, ends = set(), set()
        for _ in range(200):
            indices = train_frame_indices(n, 12, rng)
            assert len(indices) == 12 and np.all(np.diff(indices) >= 0)
            assert 0 <= indices[0] <= max_start and min_end <= indices[-1] <= n - 1
            expected = np.linspace(indices[0], indices[-1], 12).astype(int)  # evenly spaced, truncated
            assert np.array_equal(indices, expected)
            starts.add(int(indices[0]))
            ends.add(int(indices[-1]))
        assert len(starts) == max_start + 1 and len(ends) == n - min_end  # every allowed value drawn


def test_eval_rule_is_linspace_over_the_whole_clip():
    assert eval_frame_indices(34, 12).tolist() == np.linspace(0, 33, 12).astype(int).tolist()
    assert eval_frame_indices(34, 12)[[0, -1]].tolist() == [0, 33]


def test_both_rules_truncate_like_the_reference_for_every_length_up_to_600():
    """The reference: eval `np.linspace(0, n-1, T).astype(int)`; train the same from a drawn start
    to a drawn end, start in [0, int(n/(T-1))], end in [n-1-int(n/(T-1)), n-1]. Rounding (np.rint)
    instead picks a later frame somewhere for 545 of these 600 lengths at T = 12."""
    rng = np.random.default_rng(0)
    rounded_differs = 0
    for n in range(1, 601):
        truncated = np.linspace(0, n - 1, 12).astype(int)
        assert eval_frame_indices(n, 12).tolist() == truncated.tolist(), n
        rounded_differs += not np.array_equal(np.rint(np.linspace(0, n - 1, 12)), truncated)
        jitter = int(n / 11)
        for _ in range(3):
            indices = train_frame_indices(n, 12, rng)
            start, end = int(indices[0]), int(indices[-1])
            assert 0 <= start <= jitter and n - 1 - jitter <= end <= n - 1, n
            assert indices.tolist() == np.linspace(start, end, 12).astype(int).tolist(), n
        assert train_frame_bounds(n, 12) == (jitter, n - 1 - jitter), n
    assert rounded_differs == 545
    assert eval_frame_indices(7, 1).tolist() == [0]  # T = 1: the first frame, as the reference's linspace


def test_clips_shorter_than_t_frames_repeat_frames():
    rng = np.random.default_rng(1)
    for n in (1, 2, 5, 11):
        for indices in (eval_frame_indices(n, 12), train_frame_indices(n, 12, rng)):
            assert len(indices) == 12 and indices.min() >= 0 and indices.max() <= n - 1
            assert len(set(indices.tolist())) <= n and np.all(np.diff(indices) >= 0)
    assert eval_frame_indices(5, 12).tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 4]


def test_the_middle_frame_is_the_frame_the_captioner_saw(captioned_corpus):
    """F = frames[n // 2] of the decoded clip, as in the sidecar's frame_index; the T frames are
    exactly the frames decord gives at the chosen indices."""
    import decord

    out_dir, captioner = captioned_corpus
    captions = sidecar_rows(out_dir, captioner)
    for sample in wds.WebDataset(str(out_dir / "shards" / "000001.tar"), shardshuffle=False):
        clip = decode_clip(sample["mp4"], 4, np.random.default_rng(0))
        assert clip.middle_index == captions[sample["__key__"]]["frame_index"]
        reader = decord.VideoReader(io.BytesIO(sample["mp4"]), num_threads=1)
        indices = train_frame_indices(len(reader), 4, np.random.default_rng(0))
        assert clip.num_decoded == len(reader) and clip.frames.shape[0] == 4
        assert np.array_equal(clip.frames, reader.get_batch(indices.tolist()).asnumpy())
        assert np.array_equal(clip.middle, reader[clip.middle_index].asnumpy())
