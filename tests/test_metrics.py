"""Metrics on small matrices worked by hand, including ties and several captions per video."""

from __future__ import annotations

import pytest
import torch

from coca_video.metrics import (
    mean_class_accuracy,
    retrieval_metrics,
    retrieval_metrics_from_embeddings,
    topk_accuracy,
)


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
    out = retrieval_metrics(sim, torch.tensor([0, 0, 1, 1]))
    assert out["t2v"]["R1"] == 50.0
    assert out["t2v"]["MdR"] == 1.5  # ranks 1,0,0,1 -> np.median 0.5 -> +1
    # v2t video 0: best own caption 0.8; other captions 0.3, 0.6 -> rank 0.
    # video 1: best own caption 0.5; other captions 0.9 (caption 0) beats it -> rank 1.
    assert out["v2t"]["R1"] == 50.0
    assert out["v2t"]["MnR"] == 1.5


def test_chunked_from_embeddings_equals_full_matrix():
    gen = torch.Generator().manual_seed(0)
    text = torch.nn.functional.normalize(torch.randn(50, 8, generator=gen), dim=-1)
    video = torch.nn.functional.normalize(torch.randn(12, 8, generator=gen), dim=-1)
    caption_video = torch.arange(50) % 12
    full = retrieval_metrics(text @ video.T, caption_video, chunk_size=1000)
    assert retrieval_metrics_from_embeddings(text, video, caption_video, chunk_size=7) == full


def test_video_without_caption_is_an_error():
    with pytest.raises(ValueError, match="videos without any caption"):
        retrieval_metrics(torch.rand(2, 3), torch.tensor([0, 1]))


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
