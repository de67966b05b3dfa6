"""The paper's video action-recognition head: ONE learned query attends over the spatio-temporal tokens of all
frames (each frame encoded by the shared image encoder), then a linear classifier.

    tokens (B, T*N, C) -> [+ temporal and/or spatial position embedding] -> attentional pooler (1 query)
                       -> LayerNorm -> Linear
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from einops import rearrange
from torch import Tensor, nn

from ..config import from_dict, to_dict
from .layers import layer_norm
from .pooler import AttentionalPooler


@dataclass
class VideoClassifierConfig:
    """Everything that fixes a :class:`VideoClassifier`'s shape; saved beside its weights as data."""

    width: int  # encoder token width C
    num_classes: int
    heads: int = 8
    num_frames: int = 16  # T: frames per clip the tokens come from
    tokens_per_frame: int = 0  # N: encoder tokens per frame (needed by spatial_pos_embed)
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
    other cues (see configs/probe/synthetic.yaml for the measurements).
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

    def forward(self, tokens: Tensor) -> Tensor:
        """(B, T*N, C) encoder tokens, frame-major -> (B, num_classes) logits."""
        if self.temporal_pos is not None or self.spatial_pos is not None:
            tokens = rearrange(tokens, "b (t n) c -> b t n c", t=self.cfg.num_frames)
            if self.temporal_pos is not None:
                tokens = tokens + self.temporal_pos[None, :, None]
            if self.spatial_pos is not None:
                tokens = tokens + self.spatial_pos[None, None]
            tokens = rearrange(tokens, "b t n c -> b (t n) c")
        return self.head(self.norm(self.pool(tokens)[:, 0]))
