"""Time in a set of frame tokens: one learned vector per frame, added to every token of that frame.

The generative pooler (VideoCoCa's video captioning input) and the probe's classifier read all frames' tokens of a
clip as one set, frame-major (B, T*N, C). Without a per-frame embedding that set has no order: "red, then blue" and
"blue, then red" give the same tokens. :class:`FrameTime` is the multimodal path's table, zero at initialisation so
an untrained model computes exactly what it computed without one; :func:`add_frame_embedding` is the one rule both
tables follow, including a clip with another frame count than the table's (linear resampling over time, as a ViT's
position table is resampled to another grid).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


def resample_frames(table: Tensor, num_frames: int) -> Tensor:
    """(T', C) per-frame table -> (T, C) for a clip of ``num_frames`` frames: itself when T' = T, else linearly
    interpolated over time (frame centres aligned, as ``align_corners=False`` does)."""
    if table.shape[0] == num_frames:
        return table
    resampled = F.interpolate(rearrange(table, "t c -> 1 c t"), size=num_frames, mode="linear", align_corners=False)
    return rearrange(resampled, "1 c t -> t c")


def add_frame_embedding(tokens: Tensor, table: Tensor, num_frames: int) -> Tensor:
    """(B, T*N, C) frame-major tokens + the (T', C) table's vector of each token's frame -> (B, T*N, C)."""
    frames = rearrange(tokens, "b (t n) c -> b t n c", t=num_frames)
    frames = frames + resample_frames(table, num_frames).to(frames.dtype)[None, :, None]
    return rearrange(frames, "b t n c -> b (t n) c")


class FrameTime(nn.Module):
    """The multimodal path's temporal position embedding: ``num_frames`` (the frames it was trained at) x ``width``
    (the image encoder's width), zero at initialisation."""

    def __init__(self, num_frames: int, width: int) -> None:
        super().__init__()
        self.embedding = nn.Parameter(torch.zeros(num_frames, width))

    def forward(self, tokens: Tensor, num_frames: int) -> Tensor:
        """(B, T*N, C) encoder tokens of ``num_frames`` frames -> the same, each frame's tokens moved by its vector."""
        return add_frame_embedding(tokens, self.embedding, num_frames)

