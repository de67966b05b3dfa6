"""Time (and place) in a set of frame tokens: one learned vector per frame, added to every token of that frame;
optionally one learned vector per token position in the frame, shared by all frames.

The generative pooler (VideoCoCa's video captioning input) and the probe's classifier read all frames' tokens of a
clip as one set, frame-major (B, T*N, C). Without a per-frame embedding that set has no order: "red, then blue" and
"blue, then red" give the same tokens. :class:`FrameTime` is the multimodal path's table, zero at initialisation so
an untrained model computes exactly what it computed without one; :func:`add_frame_embedding` is the one rule both
tables follow, including a clip with another frame count than the table's (linear resampling over time, as a ViT's
position table is resampled to another grid).

Telling which way something moves needs both "when" and "where": a query of the pooler has to find the object
early and late in the clip and read where it was each time. A frozen encoder whose output tokens barely say where
in the frame they are (the built-in default model's: a least-squares read-out of an object patch's row from its
layer-normed token explains 14% of the variance, of its column none) leaves the pooler nothing to compare;
:class:`FrameSpace` tags every token with its place in the frame, zero at initialisation too, as the probe's
``spatial_pos_embed`` does for its head.
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



class FrameSpace(nn.Module):
    """The multimodal path's spatial position embedding: one vector per token position of a frame
    (``tokens_per_frame``: the image encoder's tokens per image, class token included) x ``width``, shared by all
    frames, zero at initialisation."""

    def __init__(self, tokens_per_frame: int, width: int) -> None:
        super().__init__()
        self.embedding = nn.Parameter(torch.zeros(tokens_per_frame, width))

    def forward(self, tokens: Tensor, num_frames: int) -> Tensor:
        """(B, T*N, C) encoder tokens of ``num_frames`` frames -> the same, each token moved by its position's
        vector (N must be the table's: another image size gives another grid, refused)."""
        frames = rearrange(tokens, "b (t n) c -> b t n c", t=num_frames)
        if frames.shape[2] != self.embedding.shape[0]:
            raise ValueError(f"the spatial embedding holds {self.embedding.shape[0]} tokens a frame; these frames have "
                             f"{frames.shape[2]} (another image size)")
        return rearrange(frames + self.embedding.to(frames.dtype)[None, None], "b t n c -> b (t n) c")
