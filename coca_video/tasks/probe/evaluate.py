"""The probe's evaluation, multi-view testing (softmax probabilities averaged over temporal views x spatial crops),
and the protocol written beside every number."""

from __future__ import annotations

from typing import Any

import torch

from ...data.actions import ActionSet
from ...data.video import ClipSampling
from ...distributed import gather_rows, get_info
from ...metrics import mean_class_accuracy, topk_accuracy
from ...model import CoCa, VideoClassifier
from ...model.linear_probe import LinearProbe
from ...model.video_classifier import view_averaged_probabilities
from ...report import ProbeResult
from .config import ProbeConfig
from .features import cache_name, cached_tokens, gathered, streamed_views
from .linear import LinearSweep


@torch.no_grad()
def evaluate(cfg: ProbeConfig, model: CoCa, classifier: VideoClassifier | LinearProbe,
             val_set: ActionSet) -> ProbeResult:
    """Multi-view testing: softmax probabilities averaged over temporal views x spatial crops, classified one view
    of a batch at a time. Videos that fail to decode are excluded and listed, never replaced."""
    sampling = ClipSampling(cfg.decode.num_frames, mode=cfg.decode.sampling, temporal_views=cfg.eval.temporal_views,
                            spatial_crops=cfg.eval.spatial_crops)
    model.eval()
    classifier.eval()
    rows, probs, failed = (streamed_probabilities if cfg.probe.cache == "none" else cached_probabilities)(
        cfg, model, classifier, val_set, sampling)
    labels = torch.tensor([val_set.items[i].label for i in rows], dtype=torch.long)
    predictions = probs.argmax(-1)
    top = topk_accuracy(probs, labels, (1, 5))
    return ProbeResult(top["top1"], top["top5"], mean_class_accuracy(predictions, labels), probs, labels,
                       [val_set.items[i].path for i in rows],
                       [(val_set.items[i].path, reason) for i, reason in sorted(failed.items())])


def cached_probabilities(cfg: ProbeConfig, model: CoCa, classifier: VideoClassifier | LinearProbe,
                         val_set: ActionSet, sampling: ClipSampling) -> tuple[list[int], torch.Tensor, dict[int, str]]:
    """(rows evaluated, their (rows, classes) probabilities, failures row -> reason) from the feature cache."""
    cache = cached_tokens(cfg, model, val_set, sampling, "val")
    info = get_info()
    rows = sorted(cache.done)
    mine = rows[info.rank::info.world_size]  # each video scored by exactly one rank, gathered in row order
    linear = isinstance(classifier, LinearProbe)
    probabilities = [torch.empty(0, len(val_set.classes))]
    for start in range(0, len(mine), cfg.train.batch_size):
        batch = mine[start:start + cfg.train.batch_size]

        def read(views: slice, rows: list[int] = batch) -> torch.Tensor:  # (B, v, T*N, C) or (B, v, D)
            values = cache.read(rows, views).to(cfg.model.device)
            return values[..., 0, :] if linear else values

        probabilities.append(view_averaged_probabilities(classifier, read, cache.tokens.shape[1]).cpu())
    return rows, gather_rows(torch.cat(probabilities), len(rows)), cache.failed


def streamed_probabilities(cfg: ProbeConfig, model: CoCa, classifier: VideoClassifier | LinearProbe,
                           val_set: ActionSet, sampling: ClipSampling) -> tuple[list[int], torch.Tensor,
                                                                                dict[int, str]]:
    """The same as :func:`cached_probabilities` with no cache: every view decoded and encoded now."""
    average = lambda read, views: view_averaged_probabilities(classifier, read, views).cpu()  # noqa: E731
    return gathered(streamed_views(cfg, model, classifier, val_set.items, sampling, average),
                    torch.empty(0, len(val_set.classes)))


def protocol(cfg: ProbeConfig, train_set: ActionSet, val_set: ActionSet, result: ProbeResult,
             sweep: LinearSweep | None = None) -> dict[str, Any]:
    """What was measured, so a number is never read without its conditions (mode linear: its C sweep instead of
    the head's training)."""
    head = {"linear": sweep.protocol(cfg.linear)} if sweep else {
        "temporal_pos_embed": cfg.probe.temporal_pos_embed, "spatial_pos_embed": cfg.probe.spatial_pos_embed,
        "lr": cfg.optim.lr, "head_lr": cfg.optim.head_lr, "max_steps": cfg.train.max_steps,
        "drop_path": cfg.drop_path, "weights": f"ema {cfg.optim.ema}" if cfg.optim.ema else "last step",
        "init": cfg.probe.init}
    return {"mode": cfg.mode, "model": cfg.model.name, "checkpoint": cfg.model.pretrained or cfg.model.name,
            "precision": cfg.model.precision, "image_size": cfg.model.image_size,
            "frames": cfg.decode.num_frames, "views": f"{cfg.eval.temporal_views}x{cfg.eval.spatial_crops}",
            "feature_cache": cache_name(cfg), **head, "train_videos": len(train_set.items),
            "val_videos_evaluated": len(result.paths), "val_videos_missing": len(val_set.missing),
            "val_videos_failed": result.failed}
