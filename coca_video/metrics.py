"""Evaluation metrics as pure functions on tensors.

Retrieval. Similarity rows are captions (queries for text-to-video), columns videos; ``caption_video[c]`` is caption
c's video. Every result key names one convention (``RETRIEVAL_CONVENTION`` states them; it goes into every result):
  - rank: the 0-based rank of the ground truth is the number of OTHER candidates scoring at least as high (ties count
    against the model, so a constant similarity matrix scores R@1 = 0, never 100);
  - R@K = percent of queries with rank < K; MnR = mean(rank) + 1; MdR = median(rank) + 1 where the median of an even
    count is, with ``median="mean"`` (default), ``np.median``'s mean of the two middle values, or with
    ``median="lower"``, ``torch.median``'s lower middle value. The option applies to every key. (CLIP4Clip takes
    ``np.median`` on 1k-A; on multi-caption splits ``torch.median`` for t2v and ``np.median`` for v2t.)
  - ``t2v``: every caption is a query over all videos;
  - ``v2t`` (``v2t="videos"``, the default; CLIP4Clip's multi-sentence evaluation): video v's score against video u is
    the best (max) similarity between v and u's captions; its rank is the number of other videos u whose best
    caption scores >= v's best own caption (a rank among videos);
  - ``v2t_captions`` (``v2t="captions"``; collaborative-experts / CLIP_benchmark "any matching caption in the top K"):
    the rank is the number of other videos' individual captions scoring >= v's best own caption (a rank among
    captions, so it can only be larger than or equal to the ``v2t`` rank);
  - ``v2t="both"`` returns ``t2v``, ``v2t`` and ``v2t_captions``;
  - ``rerank="dsl"`` adds the same keys with the suffix ``_dsl``, computed on the dual-softmax re-weighted matrix
    (:func:`dual_softmax`, an inference-time prior over the whole query set); the plain keys never change.
With one caption per video the two video-to-text conventions coincide.

Similarities are consumed in row (caption) chunks: from embeddings the full matrix is never held; what is held is a
(V, V) table of best-caption similarities (36 MB for MSR-VTT Full's 2,990 videos), and for DSL a (V,) column
log-sum-exp.

Captioning: :func:`caption_metrics` (BLEU-1..4, METEOR, ROUGE-L, CIDEr-D as coco-caption computes them), from
:mod:`coca_video.caption_metrics`.

Classification: top-k accuracy and mean class accuracy (mean per-class recall over the classes present, as sklearn's
``balanced_accuracy_score``), in percent.
"""

from __future__ import annotations

from typing import Callable, Literal

import numpy as np
import torch
from torch import Tensor

from .caption_metrics import CAPTION_METRIC_KEYS, CaptionScores, caption_metrics, caption_scores  # noqa: F401

V2TConvention = Literal["videos", "captions", "both"]
MedianRule = Literal["mean", "lower"]
Rerank = Literal["dsl"] | None

DSL_TEMPERATURE = 100.0
"""Multiplier of cosine similarities inside the dual softmax: CLIP's / CoCa's logit scale (exp of the learned log
scale, clipped at 100). CAMoE applies ``softmax(logits / temp)`` to logits = 100 * cosine with temp = 1 at inference,
i.e. the same thing."""

_MEDIAN_TEXT = {
    "mean": "np.median (the mean of the two middle values for an even count; median='lower' would take "
            "torch.median's lower middle value)",
    "lower": "torch.median (the lower middle value for an even count; median='mean' would take np.median's mean "
             "of the two middle values)",
}


def retrieval_convention(median: MedianRule = "mean", dsl_temperature: float = DSL_TEMPERATURE) -> str:
    """The text stated in a result computed with these options: what each key means."""
    return (
        "rank = number of other candidates with similarity >= the ground truth's (ties count against); "
        f"R@K = % of queries with rank < K; MdR = median(rank) + 1 with {_MEDIAN_TEXT[median]}; MnR = mean(rank) + 1; "
        "t2v: every caption is a query over all videos; "
        "v2t (CLIP4Clip, rank among videos): video v scores each other video u by the max similarity between v and "
        "u's captions; rank = number of other videos whose best caption scores >= v's best own caption; "
        "v2t_captions (collaborative-experts, rank among captions): rank = number of other videos' captions scoring "
        ">= v's best own caption; "
        f"*_dsl (only if requested): the same on the dual-softmax re-ranked matrix sim * softmax({dsl_temperature:g} "
        "* sim) with the softmax over captions (dim 0) for t2v and over videos (dim 1) for v2t"
    )


RETRIEVAL_CONVENTION = retrieval_convention()

RowFn = Callable[[int, int], Tensor]
"""``rows(start, stop)`` -> similarities of captions start:stop to every video, (stop - start, V)."""


def retrieval_metrics(sim: Tensor, caption_video: Tensor, v2t: V2TConvention = "videos", median: MedianRule = "mean",
                      rerank: Rerank = None, dsl_temperature: float = DSL_TEMPERATURE,
                      chunk_size: int = 4096) -> dict[str, dict[str, float]]:
    """R@1/5/10, MdR, MnR per direction from ``sim`` (num_captions, num_videos).

    ``caption_video[c]`` is caption c's video index. Keys: ``t2v``; ``v2t`` (``v2t="videos"``, default),
    ``v2t_captions`` (``v2t="captions"``), both (``v2t="both"``); with ``rerank="dsl"`` also each key + ``_dsl``.
    See the module doc and :func:`retrieval_convention`.
    """
    sim = torch.as_tensor(sim)
    return _metrics_from_rows(lambda a, b: sim[a:b], sim.shape[0], sim.shape[1], torch.as_tensor(caption_video),
                              v2t, median, rerank, dsl_temperature, chunk_size)


def retrieval_metrics_from_embeddings(text: Tensor, video: Tensor, caption_video: Tensor,
                                      v2t: V2TConvention = "videos", median: MedianRule = "mean",
                                      rerank: Rerank = None, dsl_temperature: float = DSL_TEMPERATURE,
                                      chunk_size: int = 4096) -> dict[str, dict[str, float]]:
    """Same as :func:`retrieval_metrics` on ``text @ video.T`` (text (C, D), video (V, D)), computed chunk by chunk
    without the full matrix."""
    video_t = video.T.contiguous()  # (D, V)
    return _metrics_from_rows(lambda a, b: text[a:b] @ video_t, text.shape[0], video.shape[0],
                              torch.as_tensor(caption_video), v2t, median, rerank, dsl_temperature, chunk_size)


def dual_softmax(sim: Tensor, temperature: float = DSL_TEMPERATURE, dim: int = 0) -> Tensor:
    """Dual-softmax re-ranking (Cheng et al. 2021, CAMoE): ``sim * softmax(sim * temperature, dim)``.

    The softmax is a prior over the QUERIES: with captions as rows, ``dim=0`` (over captions, per video) re-weights
    for text-to-video, ``dim=1`` (over videos, per caption) for video-to-text. ``temperature`` multiplies the
    similarities (it is a logit scale, not a divisor): 100 on cosines equals CAMoE's temp 1 on logits 100 * cosine.
    CAMoE also multiplies by the number of rows, a positive constant that changes no rank, left out here.
    """
    return sim * torch.softmax(sim * temperature, dim=dim)


def column_logsumexp(rows: RowFn, num_captions: int, num_videos: int, temperature: float,
                     chunk_size: int) -> Tensor:
    """(V,) ``logsumexp(sim[:, v] * temperature)`` over all captions, accumulated chunk by chunk."""
    lse = torch.full((num_videos,), float("-inf"))
    for start in range(0, num_captions, chunk_size):
        block = rows(start, min(start + chunk_size, num_captions)).float()  # (c, V)
        lse = torch.logaddexp(lse, torch.logsumexp(block * temperature, dim=0))
    return lse


def dsl_text_to_video_rows(rows: RowFn, column_lse: Tensor, temperature: float) -> RowFn:
    """Rows of ``dual_softmax(sim, temperature, dim=0)`` given the (V,) column log-sum-exp of ``sim * temperature``."""
    def dsl_rows(start: int, stop: int) -> Tensor:
        block = rows(start, stop).float()  # (c, V)
        return block * torch.exp(block * temperature - column_lse[None, :])
    return dsl_rows


def dsl_video_to_text_rows(rows: RowFn, temperature: float) -> RowFn:
    """Rows of ``dual_softmax(sim, temperature, dim=1)``: the softmax is within a row, so rows stay independent."""
    return lambda start, stop: dual_softmax(rows(start, stop).float(), temperature, dim=1)


def text_to_video_ranks_and_best_captions(rows: RowFn, num_captions: int, num_videos: int, caption_video: Tensor,
                                          chunk_size: int) -> tuple[Tensor, Tensor]:
    """One pass: every caption's rank among the videos (C,), and the best-caption table (V, V) whose ``[u, v]`` is
    the max similarity between video v and video u's captions (-inf for a video u without captions)."""
    ranks = []
    best_caption_sim = torch.full((num_videos, num_videos), float("-inf"))  # [caption's video u, video v]
    for start in range(0, num_captions, chunk_size):
        block = rows(start, min(start + chunk_size, num_captions)).float()  # (c, V)
        own = caption_video[start:start + block.shape[0]]  # (c,)
        truth = block.gather(1, own[:, None])  # (c, 1)
        ranks.append((block >= truth).sum(dim=1) - 1)
        best_caption_sim.scatter_reduce_(0, own[:, None].expand_as(block), block, reduce="amax")
    return torch.cat(ranks), best_caption_sim


def best_own_caption_sim(best_caption_sim: Tensor) -> Tensor:
    """(V,) each video's similarity with its best own caption; an error if a video has no caption."""
    best_own = best_caption_sim.diagonal().clone()
    if torch.isinf(best_own).any():
        missing = torch.nonzero(torch.isinf(best_own))[:5, 0].tolist()
        raise ValueError(f"videos without any caption (first indices {missing}): video-to-text rank is undefined")
    return best_own


def video_ranks_among_videos(best_caption_sim: Tensor) -> Tensor:
    """(V,) CLIP4Clip's video-to-text rank: how many other videos' best captions score >= the best own caption."""
    best_own = best_own_caption_sim(best_caption_sim)  # (V,)
    return (best_caption_sim >= best_own[None, :]).sum(dim=0) - 1  # minus the video itself


def video_ranks_among_captions(rows: RowFn, num_captions: int, best_own: Tensor, caption_video: Tensor,
                               chunk_size: int) -> Tensor:
    """(V,) collaborative-experts' video-to-text rank: how many other videos' captions score >= the best own one."""
    ranks = torch.zeros(best_own.shape[0], dtype=torch.long)
    for start in range(0, num_captions, chunk_size):
        block = rows(start, min(start + chunk_size, num_captions)).float()  # (c, V)
        own = caption_video[start:start + block.shape[0]]
        beats = block >= best_own[None, :]
        beats[torch.arange(block.shape[0]), own] = False  # a video's own captions are not competitors
        ranks += beats.sum(dim=0)
    return ranks


def median_rank(ranks: np.ndarray, median: MedianRule = "mean") -> float:
    """Median of 0-based ranks: ``"mean"`` = np.median; ``"lower"`` = torch.median (lower middle value)."""
    if median == "mean":
        return float(np.median(ranks))
    if median == "lower":
        return float(np.sort(ranks)[(len(ranks) - 1) // 2])
    raise ValueError(f"median must be 'mean' or 'lower', got {median!r}")


def summarize_ranks(ranks: Tensor, median: MedianRule = "mean") -> dict[str, float]:
    """R@1/5/10 (percent), MdR, MnR from 0-based ranks."""
    ranks_np = ranks.cpu().numpy()
    summary = {f"R{k}": float(100.0 * (ranks_np < k).mean()) for k in (1, 5, 10)}
    summary["MdR"] = median_rank(ranks_np, median) + 1
    summary["MnR"] = float(ranks_np.mean() + 1)
    return summary


def _ranks_by_key(rows: RowFn, num_captions: int, num_videos: int, caption_video: Tensor, v2t: V2TConvention,
                  chunk_size: int) -> dict[str, Tensor]:
    t2v_ranks, best_caption_sim = text_to_video_ranks_and_best_captions(rows, num_captions, num_videos, caption_video,
                                                                        chunk_size)
    ranks = {"t2v": t2v_ranks}
    if v2t in ("videos", "both"):
        ranks["v2t"] = video_ranks_among_videos(best_caption_sim)
    if v2t in ("captions", "both"):
        ranks["v2t_captions"] = video_ranks_among_captions(rows, num_captions, best_own_caption_sim(best_caption_sim),
                                                           caption_video, chunk_size)
    return ranks


def _metrics_from_rows(rows: RowFn, num_captions: int, num_videos: int, caption_video: Tensor, v2t: V2TConvention,
                       median: MedianRule, rerank: Rerank, dsl_temperature: float,
                       chunk_size: int) -> dict[str, dict[str, float]]:
    if v2t not in ("videos", "captions", "both"):
        raise ValueError(f"v2t must be 'videos', 'captions' or 'both', got {v2t!r}")
    if median not in ("mean", "lower"):
        raise ValueError(f"median must be 'mean' or 'lower', got {median!r}")
    if rerank not in (None, "dsl"):
        raise ValueError(f"rerank must be None or 'dsl', got {rerank!r}")
    caption_video = caption_video.long()
    if caption_video.shape != (num_captions,):
        raise ValueError(f"caption_video has shape {tuple(caption_video.shape)}, expected ({num_captions},)")
    if num_captions and (caption_video.min() < 0 or caption_video.max() >= num_videos):
        raise ValueError(f"caption_video must index the {num_videos} videos")
    ranks = _ranks_by_key(rows, num_captions, num_videos, caption_video, v2t, chunk_size)
    if rerank == "dsl":
        column_lse = column_logsumexp(rows, num_captions, num_videos, dsl_temperature, chunk_size)
        t2v_rows = dsl_text_to_video_rows(rows, column_lse, dsl_temperature)
        ranks["t2v_dsl"] = _ranks_by_key(t2v_rows, num_captions, num_videos, caption_video, "videos", chunk_size)["t2v"]
        v2t_ranks = _ranks_by_key(dsl_video_to_text_rows(rows, dsl_temperature), num_captions, num_videos,
                                  caption_video, v2t, chunk_size)
        ranks.update({f"{key}_dsl": r for key, r in v2t_ranks.items() if key != "t2v"})
    return {key: summarize_ranks(r, median) for key, r in ranks.items()}


def topk_accuracy(scores: Tensor, labels: Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Percent of rows whose label is among the ``k`` highest scores, for each k (capped at the class count)."""
    order = scores.topk(min(max(ks), scores.shape[1]), dim=1).indices
    hits = order == labels[:, None]
    return {f"top{k}": 100.0 * hits[:, :k].any(dim=1).float().mean().item() for k in ks}


def mean_class_accuracy(predictions: Tensor, labels: Tensor) -> float:
    """Mean over the classes present in ``labels`` of the percent of their samples predicted correctly."""
    recalls = [(predictions[labels == c] == c).float().mean().item() for c in labels.unique()]
    return 100.0 * float(np.mean(recalls))


def per_class_accuracy(predictions: Tensor, labels: Tensor, num_classes: int) -> list[float | None]:
    """Percent correct per class (None where a class has no samples)."""
    return [100.0 * (predictions[labels == c] == c).float().mean().item() if (labels == c).any() else None
            for c in range(num_classes)]
