"""Retrieval metrics against hand-computed examples (ties, several captions per video, DSL,
paragraph mode) and a brute-force sort on random data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from train.evaluate import dual_softmax, retrieval_metrics


def _approx(metrics: dict[str, float], expected: dict[str, float]) -> None:
    assert set(metrics) == {"R@1", "R@5", "R@10", "MdR", "MnR"}
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value), name


def test_ties_are_broken_pessimistically_one_caption_per_video():
    sim = np.array([[0.9, 0.9, 0.1],    # text 0 -> video 0, tied with video 1: rank 2
                    [0.2, 0.5, 0.7],    # text 1 -> video 1, video 2 higher: rank 2
                    [0.3, 0.3, 0.3]])   # text 2 -> video 2, everything tied: rank 3
    m = retrieval_metrics(sim, [0, 1, 2])
    _approx(m["t2v"], {"R@1": 0.0, "R@5": 100.0, "R@10": 100.0, "MdR": 2.0, "MnR": 7 / 3})
    # video columns: v0 [.9 .2 .3] rank 1; v1 [.9 .5 .3] rank 2; v2 [.1 .7 .3] rank 2
    _approx(m["v2t"], {"R@1": 100 / 3, "R@5": 100.0, "MdR": 2.0, "MnR": 5 / 3})


def test_constant_similarity_ranks_last_not_first():
    m = retrieval_metrics(np.zeros((12, 12)), np.arange(12))
    _approx(m["t2v"], {"R@1": 0.0, "R@5": 0.0, "R@10": 0.0, "MdR": 12.0, "MnR": 12.0})
    _approx(m["v2t"], {"R@1": 0.0, "MdR": 12.0, "MnR": 12.0})


def test_several_captions_per_video():
    text_video = [0, 0, 1, 1]
    sim = np.array([[0.8, 0.1],   # t0 -> v0: rank 1
                    [0.8, 0.6],   # t1 -> v0: rank 1
                    [0.7, 0.6],   # t2 -> v1: rank 2
                    [0.2, 0.6]])  # t3 -> v1: rank 1
    m = retrieval_metrics(sim, text_video)
    _approx(m["t2v"], {"R@1": 75.0, "R@5": 100.0, "MdR": 1.0, "MnR": 1.25})
    # v0 column [.8 .8 .7 .2]: its own t0, t1 tie at the top -> rank 1 (own ties do not count);
    # v1 column [.1 .6 .6 .6]: best own 0.6 tied with t1 of v0 -> rank 2 (pessimistic).
    _approx(m["v2t"], {"R@1": 50.0, "R@5": 100.0, "MdR": 1.5, "MnR": 1.5})


def test_a_video_without_captions_is_a_candidate_but_not_a_query():
    sim = np.array([[0.5, 0.9, 0.1],   # t0 -> v0, loses to the uncaptioned v1: rank 2
                    [0.1, 0.2, 0.8]])  # t1 -> v2: rank 1
    m = retrieval_metrics(sim, [0, 2])
    _approx(m["t2v"], {"R@1": 50.0, "MdR": 1.5, "MnR": 1.5})
    _approx(m["v2t"], {"R@1": 100.0, "MdR": 1.0, "MnR": 1.0})  # two queries, both rank 1


def test_dsl_softmax_runs_over_the_texts_and_damps_a_hub_video_for_text_to_video():
    # v0 is a "hub" close to both texts: plain t2v puts it first for t1 too.
    sim = np.array([[0.60, 0.55],   # t0 -> v0
                    [0.60, 0.58]])  # t1 -> v1
    plain = retrieval_metrics(sim, [0, 1])
    _approx(plain["t2v"], {"R@1": 50.0, "MnR": 1.5})
    _approx(plain["v2t"], {"R@1": 50.0, "MnR": 1.5})  # v0: t1 ties its own t0 -> rank 2

    # softmax over the texts (dim 0), column by column, by hand:
    # v0 [.6 .6] -> [.5 .5]; v1 [.55 .58] -> [1/(1+e^3), 1/(1+e^-3)]
    s = 1 / (1 + math.exp(3))
    expected = np.array([[0.3, 0.55 * s], [0.3, 0.58 * (1 - s)]])
    np.testing.assert_allclose(dual_softmax(sim), expected, rtol=1e-9)
    dsl = retrieval_metrics(sim, [0, 1], dsl=True)
    # t2v on `expected`: t0 [.3, .026] rank 1; t1 [.3, .552] rank 1.
    # (the other axis would give t1 [.528, .069] -> rank 2, so the axis matters)
    _approx(dsl["t2v"], {"R@1": 100.0, "MdR": 1.0, "MnR": 1.0})


def test_dsl_video_to_text_ranks_the_same_text_axis_matrix_as_the_reference():
    """The reference applies the dual softmax once, over the texts of [texts, videos], and ranks
    both directions on it; a per-video softmax for video->text would give other numbers."""
    sim = np.array([[0.55, 0.41],   # t0 -> v0
                    [0.32, 0.31]])  # t1 -> v1
    _approx(retrieval_metrics(sim, [0, 1])["v2t"], {"R@1": 50.0, "MdR": 1.5, "MnR": 1.5})  # v1: t0 .41 > t1 .31
    # by hand, column by column over the texts: v0 [55, 32] -> sigmoid(+-23); v1 [41, 31] -> sigmoid(+-10)
    def sigmoid(x):
        return 1 / (1 + math.exp(-x))

    expected = np.array([[0.55 * sigmoid(23), 0.41 * sigmoid(10)],     # [0.55,    0.40998]
                         [0.32 * sigmoid(-23), 0.31 * sigmoid(-10)]])  # [3.3e-11, 1.41e-5]
    np.testing.assert_allclose(dual_softmax(sim), expected, rtol=1e-9)
    dsl = retrieval_metrics(sim, [0, 1], dsl=True)
    _approx(dsl["t2v"], {"R@1": 100.0, "MdR": 1.0, "MnR": 1.0})   # rows: .55 > .41; 1.41e-5 > 3.3e-11
    # columns: v0 own t0 .55 first (rank 1); v1 own t1 1.41e-5 below t0's .40998 (rank 2)
    _approx(dsl["v2t"], {"R@1": 50.0, "MdR": 1.5, "MnR": 1.5})
    # a softmax over the videos (dim 1) instead: v1's column [.41 sigmoid(-14), .31 sigmoid(-1)] =
    # [3.4e-7, .083] would rank t1 first: R@1 100, not the reference's 50
    per_video = dual_softmax(sim, axis=1)
    assert per_video[1, 1] > per_video[0, 1]


def test_paragraph_mode_is_one_text_per_video():
    # DiDeMo / ActivityNet: each video's sentences joined into one paragraph = one text per video.
    paragraphs = ["a red square moves left. then a blue circle appears.",
                  "a green circle moves up.",
                  "a white square appears. it moves right. then it moves down."]
    text_video = np.arange(len(paragraphs))
    sim = np.array([[0.9, 0.1, 0.4],
                    [0.2, 0.3, 0.5],
                    [0.1, 0.6, 0.7]])
    m = retrieval_metrics(sim, text_video)
    _approx(m["t2v"], {"R@1": 200 / 3, "MdR": 1.0, "MnR": 4 / 3})      # ranks 1, 2, 1
    _approx(m["v2t"], {"R@1": 200 / 3, "MdR": 1.0, "MnR": 4 / 3})      # columns: 1, 2, 1
    # one text per video: v2t of sim is t2v of sim.T
    assert m["v2t"] == retrieval_metrics(sim.T, text_video)["t2v"]


def _brute_force_ranks(sim: np.ndarray, text_video: np.ndarray) -> tuple[list[int], list[int]]:
    """Sort each query's candidates by score, wrong ones before right ones among equals."""
    t2v = []
    for t, row in enumerate(sim):
        order = sorted(range(sim.shape[1]), key=lambda v: (-row[v], v == text_video[t]))
        t2v.append(order.index(text_video[t]) + 1)
    v2t = []
    for v in range(sim.shape[1]):
        own = set(np.flatnonzero(text_video == v).tolist())
        if not own:
            continue
        order = sorted(range(sim.shape[0]), key=lambda t: (-sim[t, v], t in own))
        v2t.append(min(order.index(t) for t in own) + 1)
    return t2v, v2t


def test_matches_a_brute_force_sort_with_many_ties():
    rng = np.random.default_rng(0)
    num_videos, captions = 15, 4
    text_video = np.repeat(np.arange(num_videos), captions)
    sim = rng.integers(0, 6, size=(len(text_video), num_videos)) / 5.0  # coarse values: many ties
    t2v, v2t = _brute_force_ranks(sim, text_video)
    m = retrieval_metrics(torch.from_numpy(sim).float(), torch.from_numpy(text_video))
    for name, ranks in (("t2v", t2v), ("v2t", v2t)):
        ranks = np.array(ranks)
        assert m[name]["R@1"] == pytest.approx(100 * np.mean(ranks <= 1))
        assert m[name]["R@5"] == pytest.approx(100 * np.mean(ranks <= 5))
        assert m[name]["R@10"] == pytest.approx(100 * np.mean(ranks <= 10))
        assert m[name]["MdR"] == pytest.approx(np.median(ranks))
        assert m[name]["MnR"] == pytest.approx(np.mean(ranks))


def test_torch_and_numpy_inputs_agree():
    sim = torch.randn(6, 3, generator=torch.Generator().manual_seed(1)).requires_grad_()
    text_video = torch.tensor([0, 0, 1, 1, 2, 2])
    assert retrieval_metrics(sim, text_video, dsl=True) == retrieval_metrics(
        sim.detach().numpy(), text_video.numpy(), dsl=True)


@pytest.mark.parametrize("sim, text_video, message", [
    (np.zeros((3, 2)), [0, 1], "one video index per text"),
    (np.zeros((2, 2)), [0, 2], "outside"),
    (np.array([[np.nan, 0.0], [0.0, 1.0]]), [0, 1], "non-finite"),
    (np.zeros(3), [0, 1, 2], "expected sim"),
])
def test_bad_inputs_say_what_was_expected(sim, text_video, message):
    with pytest.raises(ValueError, match=message):
        retrieval_metrics(sim, text_video)


# ------------------------------------------------------------------------------- evaluate_model
def test_evaluate_model_on_a_built_retrieval_set_from_a_model_object_or_its_folder(retrieval_set, stand_in_clip,
                                                                                  tmp_path):
    from model.clip_vip import CLIPViPModel
    from tests.retrieval_sets import CAPTION_TEMPLATES, COLOURS
    from train.evaluate import evaluate_model

    out_dir, _ = retrieval_set
    model = CLIPViPModel.from_clip(stand_in_clip)
    folder = model.save_pretrained(tmp_path / "ckpt")
    model.train()  # as the trainer hands it over mid-run
    in_memory = evaluate_model(model, out_dir, None, num_frames=4, batch_size=4, progress=False)
    assert model.training  # put back as found
    from_folder = evaluate_model(str(folder), out_dir, num_frames=4, batch_size=5, progress=False)
    assert set(in_memory) == {"plain", "dsl", "num_videos", "num_texts", "num_frames", "baseline", "seconds",
                              "expected_videos", "dropped"}
    assert in_memory["expected_videos"] == len(COLOURS) and in_memory["dropped"]["videos"] == 0
    assert in_memory["num_videos"] == len(COLOURS)
    assert in_memory["num_texts"] == len(COLOURS) * len(CAPTION_TEMPLATES)
    for kind in ("plain", "dsl"):
        for direction in ("t2v", "v2t"):
            for name, value in in_memory[kind][direction].items():  # same model, other batching
                assert value == pytest.approx(from_folder[kind][direction][name]), (kind, direction, name)
