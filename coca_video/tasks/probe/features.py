"""The probe's inputs: the training and evaluation sets, and the frozen encoder's tokens of their clips, from the
run's feature cache (:mod:`coca_video.data.feature_cache`) or (``probe.cache: none``) decoded and encoded now."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from ...data.actions import ActionSet, load_actions, split_video_roots
from ...data.feature_cache import FeatureCache, StoredFormat, encode_clips
from ...data.labels import read_class_names
from ...data.video import ClipSampling, VideoItem, decode_loader
from ...distributed import gather_objects, get_info, print0
from ...engines.feature_fill import fill_cache
from ...model import CoCa, VideoClassifier
from ...model.linear_probe import LinearProbe
from ...model.state_dict import weights_digest
from ...transforms import image_transform
from .config import ProbeConfig, ProbeDataConfig


def load_sets(cfg: ProbeConfig) -> tuple[ActionSet, ActionSet]:
    """The training and evaluation sets (unlabelled training rows dropped); the evaluation set uses the training
    set's class order."""
    data, fmt = cfg.data, cfg.data.format
    if fmt == "synthetic":
        from ...data.synthetic import write_kinetics_format

        s = data.synthetic
        train_csv, val_csv = write_kinetics_format(data.video_root, s.train_videos, s.val_videos, s.task, s.size,
                                                   cfg.decode.num_frames, s.seed)
        data = ProbeDataConfig(**{**vars(data), "format": "kinetics", "train": str(train_csv), "val": str(val_csv)})
        fmt = "kinetics"
    classes = read_class_names(data.classes) if data.classes else None
    train_root, val_root = split_video_roots(data.video_root, data.val_video_root)
    if data.val_video_root is None and train_root != Path(data.video_root):
        print0(f"videos: training from {train_root}, evaluation from {val_root}")
    train = load_actions(fmt, data.train, train_root, classes)
    train.items = [item for item in train.items if item.label >= 0]
    val = load_actions(fmt, data.val, val_root, train.classes)
    return train, val


def cached_tokens(cfg: ProbeConfig, model: CoCa, action_set: ActionSet, sampling: ClipSampling,
                  name: str) -> FeatureCache:
    """``action_set``'s encoder tokens (mode linear: mean embeddings) under ``sampling``, from the run's feature
    cache (filled where missing, on ``cfg.engine``)."""
    digest = weights_digest(model.image_encoder) if cfg.mode == "finetune" else None
    fmt: StoredFormat = {"frozen": cfg.probe.cache, "finetune": "fp16", "linear": "embedding"}[cfg.mode]
    return fill_cache(Path(cfg.output_dir) / "feature_cache", action_set.items, model, cfg.model, sampling,
                      cfg.decode, name, digest, fmt, cfg.probe.token_pool, cfg.probe.cache_check, cfg.engine, cfg.ray)


def cache_name(cfg: ProbeConfig) -> str:
    """How the frozen tokens were stored, for the protocol: fp16, int8, pooled2, embedding (linear) or none
    (finetune, or probe.cache=none)."""
    if cfg.mode == "finetune" or cfg.probe.cache == "none":
        return "none"
    if cfg.mode == "linear":
        return "embedding"
    return f"pooled{cfg.probe.token_pool}" if cfg.probe.cache == "pooled" else cfg.probe.cache


def streamed_views(cfg: ProbeConfig, model: CoCa, probe: VideoClassifier | LinearProbe, items: list[VideoItem],
                   sampling: ClipSampling, reduce: Callable[[Callable[[slice], torch.Tensor], int], torch.Tensor],
                   batches: list[list[int]] | None = None,
                   epoch: int = 0) -> Iterator[tuple[list[int], torch.Tensor | None, list[tuple[int, str]]]]:
    """No cache (``probe.cache: none``): decode ``items`` in ``decode.workers`` worker processes (this rank's share,
    or the given ``batches`` of indices), encode each view as the cache fill would (:func:`encode_clips`), and yield
    per batch (dataset indices, ``reduce(read_views, number of views)``, failures as (index, reason)), where
    ``read_views(slice)`` gives those views' probe inputs: tokens (B, v, T*N, C) for an attentional probe, mean
    embeddings (B, v, D) for a linear one."""
    transform = image_transform(model)
    if batches is None:  # decode.batch_size clips at a time, each rank its share
        info, size = get_info(), cfg.decode.batch_size
        batches = [list(range(start, min(start + size, len(items))))[info.rank::info.world_size]
                   for start in range(0, len(items), size)]
    loader = decode_loader(items, transform, cfg.decode, sampling, cfg.train.seed, batches=batches, epoch=epoch,
                           model_device=cfg.model.device)
    for batch in loader:
        errors = [(index, reason) for index, _, reason in batch.errors]
        if batch.frames is None:
            yield [], None, errors
            continue

        def read(views: slice, frames: torch.Tensor = batch.frames) -> torch.Tensor:
            clips = frames[:, views]  # (B, v, T, 3, S, S) uint8
            fmt = "embedding" if isinstance(probe, LinearProbe) else "fp16"
            encoded = encode_clips(model, transform, clips, cfg.model, fmt)  # (B, v, T*N, C) or (B, v, 1, D)
            return encoded[..., 0, :] if fmt == "embedding" else encoded

        yield batch.indices, reduce(read, batch.frames.shape[1]), errors


def gathered(parts: Iterator[tuple[list[int], torch.Tensor | None, list[tuple[int, str]]]],
             empty: torch.Tensor) -> tuple[list[int], torch.Tensor, dict[int, str]]:
    """:func:`streamed_views` results of every rank united: (indices in order, their rows, failures)."""
    indices, values, failed = [], [empty], {}
    for batch_indices, batch_values, errors in parts:
        indices += batch_indices
        values += [] if batch_values is None else [batch_values.cpu()]
        failed.update(dict(errors))
    everyone = gather_objects((indices, torch.cat(values), failed))
    indices = [i for part in everyone for i in part[0]]
    order = np.argsort(indices, kind="stable")
    rows = torch.cat([part[1] for part in everyone])[torch.from_numpy(order)] if indices else empty
    return sorted(indices), rows, {k: v for part in everyone for k, v in part[2].items()}

