"""The paper's video action-recognition head: ONE learned query attends over the spatio-temporal tokens of all
frames (each frame encoded by the shared image encoder), then a linear classifier.

    tokens (B, T*N, C) -> [+ temporal and/or spatial position embedding] -> attentional pooler (1 query)
                       -> LayerNorm -> Linear
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ..config import from_dict, to_dict
from .coca import VideoEncoding
from .frame_time import add_frame_embedding
from .layers import layer_norm
from .pooler import AttentionalPooler


@dataclass
class VideoClassifierConfig:
    """Everything that fixes a :class:`VideoClassifier`'s shape; saved beside its weights as data."""

    width: int  # encoder token width C
    num_classes: int
    heads: int = 8
    num_frames: int = 16  # T: frames per clip the tokens come from
    tokens_per_frame: int = 0  # N: tokens per frame the classifier sees (after token_pool; for spatial_pos_embed)
    token_pool: int = 1  # >1: patch tokens were averaged in token_pool x token_pool squares (probe.cache=pooled)
    temporal_pos_embed: bool = False
    spatial_pos_embed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "classifier config") -> "VideoClassifierConfig":
        return from_dict(cls, data, source)


class VideoClassifier(nn.Module):
    """Classifies a clip from its encoder tokens.

    Without position embeddings (the paper's head, the default) the pooler sees a bag of tokens: it cannot tell
    when a token was seen, nor where, except through what the frozen features themselves encode. The optional
    learned embeddings tag every token with its frame (``temporal_pos_embed``, one vector per frame) and its place
    in the frame (``spatial_pos_embed``, one vector per token position, shared by all frames). Telling motion
    directions apart needs both: "where was the object early, where late". They start at the scale of the
    LayerNorm'd encoder tokens (std 1): started at zero they grow too slowly to matter before the pooler has fitted
    other cues (see configs/probe/synthetic.yaml for the measurements). The probe can start them at zero instead
    (``probe.pos_embed_init: zero``, as AIM and UniFormerV2 start their new modules), and does for a head started from
    a trained probe (``probe.init``) that had none: the head then computes exactly what that probe computed.
    """

    def __init__(self, cfg: VideoClassifierConfig) -> None:
        super().__init__()
        if cfg.spatial_pos_embed and cfg.tokens_per_frame <= 0:
            raise ValueError("spatial_pos_embed needs tokens_per_frame (the encoder's tokens per image)")
        self.cfg = cfg
        width = cfg.width
        self.temporal_pos = nn.Parameter(torch.randn(cfg.num_frames, width)) if cfg.temporal_pos_embed else None
        self.spatial_pos = nn.Parameter(torch.randn(cfg.tokens_per_frame, width)) if cfg.spatial_pos_embed else None
        self.pool = AttentionalPooler(width, width, n_queries=1, heads=cfg.heads)
        self.norm = layer_norm(width)
        self.head = nn.Linear(width, cfg.num_classes)
        nn.init.zeros_(self.head.bias)
        nn.init.normal_(self.head.weight, std=0.01)

    def input_tokens(self, encoder_tokens: Tensor) -> Tensor:
        """(B, T*N, C) tokens as the encoder gives them -> the tokens this classifier was trained on (pooled when
        ``token_pool`` > 1), so ``score --probe`` feeds what the feature cache fed."""
        return pool_patch_tokens(encoder_tokens, self.cfg.num_frames, self.cfg.token_pool)

    def features(self, encoding: VideoEncoding) -> Tensor:
        """A clip's encoding -> what this classifier reads: its (B, T*N', C) :meth:`input_tokens`."""
        return self.input_tokens(encoding.tokens.float())

    def forward(self, tokens: Tensor) -> Tensor:
        """(B, T*N, C) encoder tokens, frame-major -> (B, num_classes) logits."""
        if self.temporal_pos is not None:
            tokens = add_frame_embedding(tokens, self.temporal_pos, self.cfg.num_frames)
        if self.spatial_pos is not None:
            tokens = rearrange(tokens, "b (t n) c -> b t n c", t=self.cfg.num_frames) + self.spatial_pos[None, None]
            tokens = rearrange(tokens, "b t n c -> b (t n) c")
        return self.head(self.norm(self.pool(tokens)[:, 0]))


def pooled_tokens_per_frame(num_tokens: int, pool: int) -> int:
    """Tokens per frame after :func:`pool_patch_tokens`: the class token plus ceil(grid / pool)^2 patch tokens."""
    grid = _patch_grid(num_tokens)
    return 1 + math.ceil(grid / pool) ** 2


def pool_patch_tokens(tokens: Tensor, num_frames: int, pool: int) -> Tensor:
    """(..., T*N, C) frame-major encoder tokens, N = 1 class token + grid^2 patch tokens -> (..., T*N', C): each
    frame's patch tokens averaged over pool x pool squares of the patch grid (an edge square that the grid does not
    fill, e.g. 7x7 -> 4x4, averages the tokens it holds), the class token kept as it is. ``pool`` 1: unchanged."""
    if pool == 1:
        return tokens
    lead, width = tokens.shape[:-2], tokens.shape[-1]
    frames = tokens.reshape(-1, num_frames, tokens.shape[-2] // num_frames, width)  # (B, T, N, C)
    grid = _patch_grid(frames.shape[2])
    cls, patches = frames[:, :, :1], frames[:, :, 1:]
    images = rearrange(patches, "b t (h w) c -> (b t) c h w", h=grid)
    pooled = F.avg_pool2d(images.float(), pool, ceil_mode=True).to(tokens.dtype)  # ((B*T), C, h', w')
    pooled = rearrange(pooled, "(b t) c h w -> b t (h w) c", b=frames.shape[0])
    return torch.cat([cls, pooled], dim=2).flatten(1, 2).reshape(*lead, -1, width)


def _patch_grid(num_tokens: int) -> int:
    """Side of the square patch grid behind ``num_tokens`` = 1 class token + grid^2 patches."""
    grid = math.isqrt(num_tokens - 1)
    if grid * grid != num_tokens - 1:
        raise ValueError(f"{num_tokens} tokens per frame are not a class token plus a square patch grid")
    return grid


def view_averaged_probabilities(classifier: Callable[[Tensor], Tensor], read_views: Callable[[slice], torch.Tensor],
                                num_views: int, views_per_pass: int = 1) -> torch.Tensor:
    """Softmax probabilities (B, classes) averaged over ``num_views`` views, classifying ``views_per_pass`` views
    of the batch at a time (``read_views(slice)`` -> (B, v, ...) the classifier's inputs: (B, v, T*N, C) tokens for
    a :class:`VideoClassifier`, (B, v, D) embeddings for a linear probe): peak memory follows batch x
    views_per_pass, not batch x views."""
    total = None
    for first in range(0, num_views, views_per_pass):
        inputs = read_views(slice(first, first + views_per_pass))  # (B, v, ...)
        logits = classifier(inputs.flatten(0, 1)).unflatten(0, inputs.shape[:2])  # (B, v, classes)
        summed = logits.float().softmax(-1).sum(1)
        total = summed if total is None else total + summed
    return total / num_views
