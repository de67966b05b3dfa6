"""The paper's video action-recognition head: ONE learned query attends over the spatio-temporal tokens of all
frames (each frame encoded by the shared image encoder), then a linear classifier.

    tokens (B, T*N, C) -> [+ temporal position embedding] -> attentional pooler (1 query) -> LayerNorm -> Linear
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn

from .layers import layer_norm
from .pooler import AttentionalPooler


class VideoClassifier(nn.Module):
    """Classifies a clip from its encoder tokens. ``num_frames`` is only needed for the optional learned temporal
    position embedding (off by default, as in the paper: without it the pooler sees a bag of tokens)."""

    def __init__(self, width: int, num_classes: int, heads: int = 8, num_frames: int = 16,
                 temporal_pos_embed: bool = False) -> None:
        super().__init__()
        self.num_frames = num_frames
        self.temporal_pos = nn.Parameter(torch.zeros(num_frames, width)) if temporal_pos_embed else None
        self.pool = AttentionalPooler(width, width, n_queries=1, heads=heads)
        self.norm = layer_norm(width)
        self.head = nn.Linear(width, num_classes)
        nn.init.zeros_(self.head.bias)
        nn.init.normal_(self.head.weight, std=0.01)

    def forward(self, tokens: Tensor) -> Tensor:
        """(B, T*N, C) encoder tokens, frame-major -> (B, num_classes) logits."""
        if self.temporal_pos is not None:
            tokens = rearrange(tokens, "b (t n) c -> b t n c", t=self.num_frames)
            tokens = rearrange(tokens + self.temporal_pos[None, :, None], "b t n c -> b (t n) c")
        return self.head(self.norm(self.pool(tokens)[:, 0]))
