"""Evaluation metrics as pure functions on tensors.

Retrieval (CLIP4Clip / mmaction2 convention, stated in every result):
  - similarity rows are queries; the 0-based rank of the ground truth is the number of OTHER candidates scoring at
    least as high (ties count against the model, so a constant similarity matrix scores R@1 = 0, never 100);
  - R@K = percent of queries with rank < K; MdR = median(rank) + 1 (``np.median``: the mean of the two middle values
    for an even count); MnR = mean(rank) + 1;
  - text-to-video: every caption is a query over all videos;
  - video-to-text with several captions per video: a video's rank is that of its best-scoring own caption among the
    other videos' captions (collaborative-experts / CLIP_benchmark "any matching caption in the top K").
Similarities are consumed in row chunks, so a 60,000 x 3,000 problem never holds the full matrix twice (and, from
embeddings, never at all).

Classification: top-k accuracy and mean class accuracy (mean per-class recall over the classes present, as sklearn's
``balanced_accuracy_score``), in percent.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import Tensor

RETRIEVAL_CONVENTION = (
    "rank = number of other candidates with similarity >= the ground truth's (ties count against); "
    "R@K = % of queries with rank < K; MdR = np.median(rank) + 1; MnR = mean(rank) + 1; "
    "t2v: every caption is a query; v2t: a video's rank is its best own caption's rank among other videos' captions"
)

RowFn = Callable[[int, int], Tensor]


def retrieval_metrics(sim: Tensor, caption_video: Tensor, chunk_size: int = 4096) -> dict[str, dict[str, float]]:
    """``sim`` (num_captions, num_videos); ``caption_video[i]`` is caption i's video index. See the module doc."""
    sim = torch.as_tensor(sim)
    return _metrics_from_rows(lambda a, b: sim[a:b], sim.shape[0], sim.shape[1], torch.as_tensor(caption_video),
                              chunk_size)


def retrieval_metrics_from_embeddings(text: Tensor, video: Tensor, caption_video: Tensor,
                                      chunk_size: int = 4096) -> dict[str, dict[str, float]]:
    """Same as :func:`retrieval_metrics` on ``text @ video.T``, computed chunk by chunk without the full matrix."""
    video_t = video.T.contiguous()
    return _metrics_from_rows(lambda a, b: text[a:b] @ video_t, text.shape[0], video.shape[0],
                              torch.as_tensor(caption_video), chunk_size)


def text_to_video_ranks(rows: RowFn, num_captions: int, num_videos: int, caption_video: Tensor,
                        chunk_size: int) -> tuple[Tensor, Tensor]:
    """Every caption's rank among the videos, and (on the way) each video's best own-caption similarity."""
    ranks, best_own = [], torch.full((num_videos,), float("-inf"))
    for start in range(0, num_captions, chunk_size):
        block = rows(start, min(start + chunk_size, num_captions)).float()  # (c, V)
        own = caption_video[start:start + block.shape[0]]
        truth = block.gather(1, own[:, None])  # (c, 1)
        ranks.append((block >= truth).sum(dim=1) - 1)
        best_own.scatter_reduce_(0, own, truth[:, 0], reduce="amax")
    return torch.cat(ranks), best_own


def video_to_text_ranks(rows: RowFn, num_captions: int, best_own: Tensor, caption_video: Tensor,
                        chunk_size: int) -> Tensor:
    """Each video's rank: how many other videos' captions score at least its best own caption."""
    if torch.isinf(best_own).any():
        missing = torch.nonzero(torch.isinf(best_own))[:5, 0].tolist()
        raise ValueError(f"videos without any caption (first indices {missing}): video-to-text rank is undefined")
    ranks = torch.zeros(best_own.shape[0], dtype=torch.long)
    for start in range(0, num_captions, chunk_size):
        block = rows(start, min(start + chunk_size, num_captions)).float()
        own = caption_video[start:start + block.shape[0]]
        beats = block >= best_own[None, :]
        beats[torch.arange(block.shape[0]), own] = False  # a video's own captions are not competitors
        ranks += beats.sum(dim=0)
    return ranks


def summarize_ranks(ranks: Tensor) -> dict[str, float]:
    """R@1/5/10 (percent), MdR, MnR from 0-based ranks."""
    ranks_np = ranks.cpu().numpy()
    summary = {f"R{k}": float(100.0 * (ranks_np < k).mean()) for k in (1, 5, 10)}
    summary["MdR"] = float(np.median(ranks_np) + 1)
    summary["MnR"] = float(ranks_np.mean() + 1)
    return summary


def _metrics_from_rows(rows: RowFn, num_captions: int, num_videos: int, caption_video: Tensor,
                       chunk_size: int) -> dict[str, dict[str, float]]:
    caption_video = caption_video.long()
    if caption_video.shape != (num_captions,):
        raise ValueError(f"caption_video has shape {tuple(caption_video.shape)}, expected ({num_captions},)")
    t2v, best_own = text_to_video_ranks(rows, num_captions, num_videos, caption_video, chunk_size)
    v2t = video_to_text_ranks(rows, num_captions, best_own, caption_video, chunk_size)
    return {"t2v": summarize_ranks(t2v), "v2t": summarize_ranks(v2t)}


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
