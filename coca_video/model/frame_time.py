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



def time_ramp(num_frames: int) -> Tensor:
    """(T,) each frame's centre on a line from -1 (the clip's start) to 1 (its end): ``2 (t + 1/2) / T - 1``
    (4 frames: -0.75, -0.25, 0.25, 0.75), the same for any frame count."""
    return (torch.arange(num_frames) + 0.5) * (2.0 / num_frames) - 1.0


def with_motion(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """A CoCa state dict saved before :class:`FrameSpace` had its motion table (``frame_space.embedding`` alone) ->
    the same with a zero motion table: the model it was saved from. Any other state dict comes back as it was."""
    table = state_dict.get("frame_space.embedding")
    if table is None or "frame_space.motion" in state_dict:
        return state_dict
    return {**state_dict, "frame_space.motion": torch.zeros_like(table)}


class FrameSpace(nn.Module):
    """The multimodal path's spatial position embedding: one vector per token position of a frame
    (``tokens_per_frame``: the image encoder's tokens per image, class token included) x ``width``, shared by all
    frames (``embedding``: where), and a second such table scaled by the frame's place in the clip (``motion``,
    times :func:`time_ramp`: where, early or late); both zero at initialisation.

    Why the second table: which way an object moves is where it was late minus where it was early. A table of places
    shared by all frames (and one of frames shared by all places) takes, at a place, the gradient of every clip whose
    object passed there, early or late, moving one way or the other: those cancel, so the pooler learns direction
    only once a query has come to single out early (or late) frames, after a long plateau. The motion table's
    gradient at a place is signed by when the object was there, and a place right of centre is passed late by
    objects moving right and early by objects moving left: the gradient no longer cancels, and what the pooler
    reads off a moving object's tokens, the sum over frames of ``ramp(t) * motion[place(t)]``, is its displacement."""

    def __init__(self, tokens_per_frame: int, width: int) -> None:
        super().__init__()
        self.embedding = nn.Parameter(torch.zeros(tokens_per_frame, width))
        self.motion = nn.Parameter(torch.zeros(tokens_per_frame, width))

    def forward(self, tokens: Tensor, num_frames: int) -> Tensor:
        """(B, T*N, C) encoder tokens of ``num_frames`` frames -> the same, the token at position n of frame t moved
        by ``embedding[n] + ramp(t) * motion[n]`` (N must be the tables': another image size gives another grid,
        refused)."""
        frames = rearrange(tokens, "b (t n) c -> b t n c", t=num_frames)
        if frames.shape[2] != self.embedding.shape[0]:
            raise ValueError(f"the spatial embedding holds {self.embedding.shape[0]} tokens a frame; these frames have "
                             f"{frames.shape[2]} (another image size)")
        ramp = time_ramp(num_frames).to(frames.device, frames.dtype)[:, None, None]  # (T, 1, 1)
        moved = self.embedding.to(frames.dtype)[None] + ramp * self.motion.to(frames.dtype)[None]  # (T, N, C)
        return rearrange(frames + moved[None], "b t n c -> b (t n) c")
