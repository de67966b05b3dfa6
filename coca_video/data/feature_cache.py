"""Frozen encoder tokens of a video set on disk, filled once and read by every epoch of a frozen probe.

Tokens of every (video, view) are stored as fp16 in one memory-mapped ``.npy``, named by a digest of what they
depend on (model, weights, video list and windows, sampling, precision). Each rank records the rows it finished (and
the failures with their reasons) in its own state file, so an interrupted fill resumes and ranks never write the
same file; :meth:`FeatureCache.reload` unites them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import DecodeConfig, ModelConfig, to_dict
from ..distributed import barrier, get_info
from ..io import atomic_write_text
from ..model import CoCa
from ..runtime import autocast
from ..transforms import image_transform
from .video import ClipSampling, VideoItem, decode_loader


class FeatureCache:
    """The token array ``tokens`` (videos, views, T*N, C) and which rows are ``done`` or ``failed`` (row -> reason)."""

    def __init__(self, folder: Path, key: dict[str, Any], shape: tuple[int, ...], rank: int = 0) -> None:
        digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        folder.mkdir(parents=True, exist_ok=True)
        self.tokens_path = folder / f"{digest}.tokens.npy"
        self.state_pattern = f"{digest}.state.rank*.json"
        self.state_path = folder / f"{digest}.state.rank{rank}.json"
        if rank == 0 and not self.tokens_path.exists():
            np.lib.format.open_memmap(self.tokens_path, mode="w+", dtype=np.float16, shape=shape).flush()
        barrier()
        self.tokens = np.lib.format.open_memmap(self.tokens_path, mode="r+")
        self.done: set[int] = set()
        self.failed: dict[int, str] = {}
        self.mine: dict[str, Any] = {"done": [], "failed": {}}
        self.reload()

    def reload(self) -> None:
        """Rows done and failed according to every rank's state file."""
        self.done, self.failed = set(), {}
        for path in sorted(self.tokens_path.parent.glob(self.state_pattern)):
            state = json.loads(path.read_text())
            self.done.update(state["done"])
            self.failed.update({int(k): v for k, v in state["failed"].items()})
        self.mine = json.loads(self.state_path.read_text()) if self.state_path.exists() else {"done": [], "failed": {}}

    def todo(self) -> list[int]:
        """Rows neither done nor failed, in order."""
        return [i for i in range(self.tokens.shape[0]) if i not in self.done and i not in self.failed]

    def store(self, rows: list[int], tokens: torch.Tensor, errors: list[tuple[int, str]]) -> None:
        """Write ``tokens`` (len(rows), views, T*N, C) into ``rows`` and record them, and ``errors`` (row, reason)."""
        for position, row in enumerate(rows):
            self.tokens[row] = tokens[position].to(torch.float16).numpy()
        self.tokens.flush()
        self.done.update(rows)
        self.failed.update(dict(errors))
        self.mine["done"] = sorted({*self.mine["done"], *rows})
        self.mine["failed"].update({str(row): reason for row, reason in errors})
        atomic_write_text(self.state_path, json.dumps(self.mine))


@torch.no_grad()
def encode_clips(model: CoCa, frames: torch.Tensor, precision: str) -> torch.Tensor:
    """(B, V, T, 3, S, S) -> encoder tokens (B, V, T*N, C)."""
    with autocast(frames.device, precision):
        tokens = model.encode_video(frames.flatten(0, 1)).tokens
    return tokens.float().unflatten(0, frames.shape[:2])


def fill_cache(folder: Path, items: list[VideoItem], model: CoCa, model_cfg: ModelConfig, sampling: ClipSampling,
               decode: DecodeConfig, seed: int, name: str, weights_digest: str | None = None) -> FeatureCache:
    """The cache of ``items`` under ``sampling``, encoding only what is not in it yet (under torchrun each rank
    encodes its share). ``weights_digest``: set for a finetuned encoder, whose tokens are valid for its weights only."""
    views = sampling.temporal_views * sampling.spatial_crops
    key = {"model": model_cfg.name, "pretrained": model_cfg.pretrained, "videos": [i.path for i in items],
           "windows": [(i.start_sec, i.end_sec) for i in items], "sampling": to_dict(sampling),
           "precision": model_cfg.precision, "finetuned": weights_digest}
    shape = (len(items), views, sampling.num_frames * model.image_encoder.num_tokens, model.cfg.vision.width)
    info = get_info()
    cache = FeatureCache(folder, key, shape, info.rank)
    todo = cache.todo()[info.rank::info.world_size]
    if todo:
        print(f"encoding {len(todo)} {name} videos into the feature cache {cache.tokens_path}")
        model.eval()
        loader = decode_loader([items[i] for i in todo], image_transform(model), decode, sampling, seed)
        for batch in loader:
            tokens = encode_clips(model, batch.frames.to(model_cfg.device), model_cfg.precision) \
                if batch.frames is not None else torch.empty(0)
            cache.store([todo[i] for i in batch.indices], tokens.cpu(), [(todo[i], r) for i, _, r in batch.errors])
    barrier()
    cache.reload()
    return cache
