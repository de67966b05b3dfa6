"""Metrics on small matrices worked by hand, including ties and several captions per video, and against naive
python-loop references of each video-to-text convention."""

from __future__ import annotations

import math

import pytest
import torch

from coca_video.metrics import (
    RETRIEVAL_CONVENTION,
    dual_softmax,
    mean_class_accuracy,
    retrieval_convention,
    retrieval_metrics,
    retrieval_metrics_from_embeddings,
    topk_accuracy,
)


# ---- naive references: python loops over the full matrix, nothing shared with the module ----

def naive_t2v_ranks(sim: list[list[float]], caption_video: list[int]) -> list[int]:
    return [sum(1 for v in range(len(row)) if v != caption_video[c] and row[v] >= row[caption_video[c]])
            for c, row in enumerate(sim)]


def naive_best_own(sim: list[list[float]], caption_video: list[int], v: int) -> float:
    return max(sim[c][v] for c in range(len(sim)) if caption_video[c] == v)


def naive_v2t_ranks_among_videos(sim: list[list[float]], caption_video: list[int]) -> list[int]:
    """CLIP4Clip: video v against every other video u's best caption (max over u's captions of sim[c][v])."""
    num_videos = len(sim[0])
    ranks = []
    for v in range(num_videos):
        own = naive_best_own(sim, caption_video, v)
        rank = 0
        for u in range(num_videos):
            if u != v and max(sim[c][v] for c in range(len(sim)) if caption_video[c] == u) >= own:
                rank += 1
        ranks.append(rank)
    return ranks


def naive_v2t_ranks_among_captions(sim: list[list[float]], caption_video: list[int]) -> list[int]:
    """collaborative-experts: video v against every other video's individual captions."""
    ranks = []
    for v in range(len(sim[0])):
        own = naive_best_own(sim, caption_video, v)
        ranks.append(sum(1 for c in range(len(sim)) if caption_video[c] != v and sim[c][v] >= own))
    return ranks


def naive_summary(ranks: list[int], median: str) -> dict[str, float]:
    n, ordered = len(ranks), sorted(ranks)
    if median == "lower":
        middle = ordered[(n - 1) // 2]
    else:
        middle = (ordered[(n - 1) // 2] + ordered[n // 2]) / 2
    out = {f"R{k}": 100.0 * sum(r < k for r in ranks) / n for k in (1, 5, 10)}
    out["MdR"] = middle + 1
    out["MnR"] = sum(ranks) / n + 1
    return out


def random_tied_problem(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """3-10 videos with 1-5 captions each (at least one video with 1), captions shuffled, similarities drawn from 5
    exactly representable values so ties are frequent."""
    gen = torch.Generator().manual_seed(seed)
    num_videos = int(torch.randint(3, 11, (1,), generator=gen))
    counts = torch.randint(1, 6, (num_videos,), generator=gen)
    counts[int(torch.randint(0, num_videos, (1,), generator=gen))] = 1
    caption_video = torch.repeat_interleave(torch.arange(num_videos), counts)
    caption_video = caption_video[torch.randperm(len(caption_video), generator=gen)]
    sim = torch.randint(0, 5, (len(caption_video), num_videos), generator=gen).float() / 4
    return sim, caption_video


def assert_summary_equal(got: dict[str, float], expected: dict[str, float]) -> None:
    assert got.keys() == expected.keys()
    for key in got:
        assert got[key] == pytest.approx(expected[key], abs=1e-9), key


def test_one_caption_per_video_by_hand():
    # captions x videos; caption i belongs to video i.
    sim = torch.tensor([
        [0.9, 0.1, 0.2],   # gt 0.9, nothing higher            -> rank 0
        [0.5, 0.4, 0.6],   # gt 0.4, 0.5 and 0.6 higher        -> rank 2
        [0.3, 0.8, 0.7],   # gt 0.7, 0.8 higher                -> rank 1
    ])
    out = retrieval_metrics(sim, torch.tensor([0, 1, 2]))
    assert out["t2v"]["R1"] == pytest.approx(100 / 3)
    assert out["t2v"]["R5"] == 100.0
    assert out["t2v"]["MdR"] == 2.0  # ranks 0,2,1 -> median 1 -> +1
    assert out["t2v"]["MnR"] == 2.0  # mean 1 -> +1
    # v2t = columns: video 0 gt 0.9 (rank 0); video 1 gt 0.4, 0.8 higher (rank 1); video 2 gt 0.7, none of 0.2/0.6
    # higher (rank 0)
    assert out["v2t"]["R1"] == pytest.approx(200 / 3)
    assert out["v2t"]["MnR"] == pytest.approx(1 + 1 / 3)


def test_ties_count_against_the_model():
    sim = torch.ones(4, 4)  # a model that says nothing
    out = retrieval_metrics(sim, torch.arange(4))
    assert out["t2v"]["R1"] == 0.0 and out["v2t"]["R1"] == 0.0
    assert out["t2v"]["MdR"] == 4.0  # every rank is 3
    sim = torch.tensor([[0.5, 0.5], [0.1, 0.9]])  # caption 0 ties with video 1
    out = retrieval_metrics(sim, torch.tensor([0, 1]))
    assert out["t2v"]["R1"] == 50.0


def test_several_captions_per_video():
    # 4 captions, 2 videos; captions 0,1 -> video 0; 2,3 -> video 1.
    sim = torch.tensor([
        [0.2, 0.9],  # caption 0: its video scores lower -> t2v rank 1
        [0.8, 0.1],  # caption 1: rank 0
        [0.3, 0.4],  # caption 2: rank 0
        [0.6, 0.5],  # caption 3: rank 1
    ])
    out = retrieval_metrics(sim, torch.tensor([0, 0, 1, 1]), v2t="both")
    assert out["t2v"]["R1"] == 50.0
    assert out["t2v"]["MdR"] == 1.5  # ranks 1,0,0,1 -> np.median 0.5 -> +1
    # v2t="captions": video 0: best own caption 0.8; other captions 0.3, 0.6 -> rank 0.
    # video 1: best own caption 0.5; other captions 0.9 (caption 0) beats it -> rank 1.
    assert out["v2t_captions"]["R1"] == 50.0
    assert out["v2t_captions"]["MnR"] == 1.5
    # v2t="videos" (default) agrees here: video 1's best caption 0.6 < 0.8; video 0's best caption 0.9 >= 0.5.
    assert out["v2t"] == out["v2t_captions"]
    assert retrieval_metrics(sim, torch.tensor([0, 0, 1, 1]), v2t="captions") == {
        "t2v": out["t2v"], "v2t_captions": out["v2t_captions"]}
    # median="lower" (torch.median): ranks 0,0,1,1 -> lower middle 0 -> MdR 1.
    assert retrieval_metrics(sim, torch.tensor([0, 0, 1, 1]), median="lower")["t2v"]["MdR"] == 1.0


def test_chunked_from_embeddings_equals_full_matrix():
    gen = torch.Generator().manual_seed(0)
    text = torch.nn.functional.normalize(torch.randn(50, 8, generator=gen), dim=-1)
    video = torch.nn.functional.normalize(torch.randn(12, 8, generator=gen), dim=-1)
    caption_video = torch.arange(50) % 12
    for v2t in ("videos", "captions", "both"):
        full = retrieval_metrics(text @ video.T, caption_video, v2t=v2t, chunk_size=1000)
        assert retrieval_metrics_from_embeddings(text, video, caption_video, v2t=v2t, chunk_size=7) == full


@pytest.mark.parametrize("median", ["mean", "lower"])
@pytest.mark.parametrize("seed", range(25))
def test_each_v2t_convention_matches_naive_loops_with_ties(seed, median):
    sim, caption_video = random_tied_problem(seed)
    sim_list, cv_list = sim.tolist(), caption_video.tolist()
    out = retrieval_metrics(sim, caption_video, v2t="both", median=median, chunk_size=4)
    assert set(out) == {"t2v", "v2t", "v2t_captions"}
    assert_summary_equal(out["t2v"], naive_summary(naive_t2v_ranks(sim_list, cv_list), median))
    assert_summary_equal(out["v2t"], naive_summary(naive_v2t_ranks_among_videos(sim_list, cv_list), median))
    assert_summary_equal(out["v2t_captions"],
                         naive_summary(naive_v2t_ranks_among_captions(sim_list, cv_list), median))
    # each single-convention call returns the same numbers under its own key only
    assert retrieval_metrics(sim, caption_video, median=median) == {"t2v": out["t2v"], "v2t": out["v2t"]}
    assert retrieval_metrics(sim, caption_video, v2t="captions", median=median) == {
        "t2v": out["t2v"], "v2t_captions": out["v2t_captions"]}


@pytest.mark.parametrize("seed", range(5))
def test_from_embeddings_equals_full_matrix_with_ties(seed):
    # integer embeddings: exact integer dot products, so ties are frequent and chunking cannot change a comparison
    gen = torch.Generator().manual_seed(seed)
    _, caption_video = random_tied_problem(seed)
    num_videos = int(caption_video.max()) + 1
    text = torch.randint(-1, 2, (len(caption_video), 3), generator=gen).float()
    video = torch.randint(-1, 2, (num_videos, 3), generator=gen).float()
    for median in ("mean", "lower"):
        full = retrieval_metrics(text @ video.T, caption_video, v2t="both", median=median)
        chunked = retrieval_metrics_from_embeddings(text, video, caption_video, v2t="both", median=median,
                                                    chunk_size=3)
        assert chunked == full


def test_the_two_v2t_conventions_differ_by_hand():
    # 3 videos, 2 captions each: captions 0,1 -> video 0; 2,3 -> video 1; 4,5 -> video 2.
    #                  v0    v1    v2
    sim = torch.tensor([
        [0.60, 0.10, 0.50],  # c0 (v0)
        [0.40, 0.20, 0.30],  # c1 (v0)
        [0.70, 0.90, 0.50],  # c2 (v1)
        [0.65, 0.80, 0.50],  # c3 (v1)
        [0.10, 0.30, 0.50],  # c4 (v2)
        [0.20, 0.40, 0.45],  # c5 (v2)
    ])
    caption_video = torch.tensor([0, 0, 1, 1, 2, 2])
    # video 0: best own 0.60. Video 1's best caption 0.70 beats it, video 2's best 0.20 does not -> "videos" rank 1;
    #          captions 0.70 and 0.65 beat it -> "captions" rank 2.
    # video 1: best own 0.90; nothing else reaches it -> rank 0 in both.
    # video 2: best own 0.50. Video 0's best 0.50 and video 1's best 0.50 tie (ties count against) -> "videos" rank 2;
    #          captions c0, c2, c3 (all 0.50) -> "captions" rank 3.
    # videos ranks   [1, 0, 2] -> R@1 1/3, median 1 -> MdR 2, mean 1   -> MnR 2
    # captions ranks [2, 0, 3] -> R@1 1/3, median 2 -> MdR 3, mean 5/3 -> MnR 8/3
    out = retrieval_metrics(sim, caption_video, v2t="both")
    assert out["v2t"] == {"R1": pytest.approx(100 / 3), "R5": 100.0, "R10": 100.0, "MdR": 2.0, "MnR": 2.0}
    assert out["v2t_captions"] == {"R1": pytest.approx(100 / 3), "R5": 100.0, "R10": 100.0, "MdR": 3.0,
                                   "MnR": pytest.approx(8 / 3)}
    assert retrieval_metrics(sim, caption_video)["v2t"] == out["v2t"]  # "videos" is the default


def test_dual_softmax_closed_form_by_hand():
    # sim (captions x videos), caption i -> video i; temperature 10 so the exponents are 10 * sim.
    sim = torch.tensor([[0.5, 0.2],
                        [0.4, 0.3]])
    e = math.exp
    # dim=0 (t2v): softmax down each column.
    # column 0: e^5 / (e^5 + e^4), e^4 / (e^5 + e^4); column 1: e^2 / (e^2 + e^3), e^3 / (e^2 + e^3)
    expected_t2v = [[0.5 * e(5) / (e(5) + e(4)), 0.2 * e(2) / (e(2) + e(3))],
                    [0.4 * e(4) / (e(5) + e(4)), 0.3 * e(3) / (e(2) + e(3))]]  # ~[[0.366, 0.054], [0.108, 0.219]]
    got = dual_softmax(sim, temperature=10.0, dim=0)
    assert got.flatten().tolist() == pytest.approx([x for row in expected_t2v for x in row], rel=1e-6)
    # dim=1 (v2t): softmax along each row. row 0: e^5, e^2; row 1: e^4, e^3
    expected_v2t = [[0.5 * e(5) / (e(5) + e(2)), 0.2 * e(2) / (e(5) + e(2))],
                    [0.4 * e(4) / (e(4) + e(3)), 0.3 * e(3) / (e(4) + e(3))]]  # ~[[0.476, 0.009], [0.292, 0.081]]
    got = dual_softmax(sim, temperature=10.0, dim=1)
    assert got.flatten().tolist() == pytest.approx([x for row in expected_v2t for x in row], rel=1e-6)
    # Caption 1: plain 0.4 (video 0) > 0.3 (its video 1) -> rank 1; after DSL 0.108 < 0.219 -> rank 0.
    out = retrieval_metrics(sim, torch.tensor([0, 1]), rerank="dsl", dsl_temperature=10.0)
    assert out["t2v"]["R1"] == 50.0 and out["t2v_dsl"]["R1"] == 100.0
    # v2t: video 0 own 0.476 vs 0.292, video 1 own 0.081 vs 0.009 -> both rank 0 (as without DSL)
    assert out["v2t"]["R1"] == 100.0 and out["v2t_dsl"]["R1"] == 100.0
    assert set(out) == {"t2v", "v2t", "t2v_dsl", "v2t_dsl"}


def test_dsl_is_reported_under_its_own_keys_and_matches_the_full_matrix():
    gen = torch.Generator().manual_seed(1)
    text = torch.nn.functional.normalize(torch.randn(40, 8, generator=gen), dim=-1)
    video = torch.nn.functional.normalize(torch.randn(11, 8, generator=gen), dim=-1)
    caption_video = torch.arange(40) % 11
    sim = text @ video.T
    plain = retrieval_metrics(sim, caption_video, v2t="both")
    out = retrieval_metrics(sim, caption_video, v2t="both", rerank="dsl", chunk_size=7)
    assert set(out) == {"t2v", "v2t", "v2t_captions", "t2v_dsl", "v2t_dsl", "v2t_captions_dsl"}
    assert {key: out[key] for key in plain} == plain  # re-ranking never touches the default numbers
    # chunked DSL (column log-sum-exp pass, then rows) == ranking the full re-weighted matrices
    t2v_full = retrieval_metrics(dual_softmax(sim, 100.0, dim=0), caption_video)
    v2t_full = retrieval_metrics(dual_softmax(sim, 100.0, dim=1), caption_video, v2t="both")
    assert out["t2v_dsl"] == t2v_full["t2v"]
    assert out["v2t_dsl"] == v2t_full["v2t"] and out["v2t_captions_dsl"] == v2t_full["v2t_captions"]
    assert retrieval_metrics_from_embeddings(text, video, caption_video, v2t="both", rerank="dsl",
                                             chunk_size=5) == out


def test_convention_text_names_every_key_and_median():
    for key in ("t2v:", "v2t (CLIP4Clip", "v2t_captions (collaborative-experts", "_dsl"):
        assert key in RETRIEVAL_CONVENTION
    assert RETRIEVAL_CONVENTION == retrieval_convention("mean")
    assert "np.median" in RETRIEVAL_CONVENTION and "torch.median" in RETRIEVAL_CONVENTION
    assert retrieval_convention("lower").index("torch.median") < retrieval_convention("lower").index("np.median")


def test_unknown_options_are_errors():
    sim = torch.eye(2)
    for kwargs in ({"v2t": "best"}, {"median": "upper"}, {"rerank": "qb-norm"}):
        with pytest.raises(ValueError):
            retrieval_metrics(sim, torch.arange(2), **kwargs)


def test_video_without_caption_is_an_error():
    for v2t in ("videos", "captions"):
        with pytest.raises(ValueError, match="videos without any caption"):
            retrieval_metrics(torch.rand(2, 3), torch.tensor([0, 1]), v2t=v2t)


def test_topk_and_mean_class_accuracy_by_hand():
    scores = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    labels = torch.tensor([1, 1, 2, 2])
    # predictions 1, 0, 2, 0 -> top1 2/4; top2 sets {1,2},{0,1},{2,1},{0,1}: label in 3 of 4
    out = topk_accuracy(scores, labels, ks=(1, 2))
    assert out == {"top1": 50.0, "top2": 75.0}
    # class 1: 1 of 2 right; class 2: 1 of 2 right -> 50
    assert mean_class_accuracy(scores.argmax(1), labels) == 50.0
    # imbalance: class 0 with one sample right, class 1 with 3 samples, 0 right -> (100 + 0) / 2
    assert mean_class_accuracy(torch.tensor([0, 0, 0, 0]), torch.tensor([0, 1, 1, 1])) == 50.0
