"""Conveniences in open_clip's shapes: a model with both preprocessings, one video file to its embeddings.

    model, preprocess_train, preprocess_val = coca_video.create_model_and_transforms("default")
    video = coca_video.encode_video_file(model, "clip.mp4", num_frames=16)
    windows, frame_embeddings = coca_video.encode_video_frames(model, "talk.mp4", fps=1.0)   # per-second
"""

from __future__ import annotations

import os

import numpy as np
import torch

from .model import CoCa, create_model
from .model.coca import VideoEncoding, VideoPooling
from .model.precision import compute_dtype
from .transforms import ImageTransform, image_transform
from .video import VideoReader, fps_indices, fps_rate, fps_windows, sample_indices


def create_model_and_transforms(
    name: str = "default", pretrained: str | os.PathLike | None = None, device: str | torch.device | None = None,
    precision: str | None = None,
) -> tuple[CoCa, ImageTransform, ImageTransform]:
    """``(model, preprocess_train, preprocess_val)`` as open_clip's function returns them.

    ``precision``: ``fp32`` (default), ``bf16`` (weights cast, as open_clip does for that name; the image encoder
    casts its input) or ``int8`` (dynamically quantised Linear layers, CPU); for mixed-precision training keep fp32
    and use ``torch.autocast``.
    """
    model = create_model(name, pretrained=pretrained, device=device, precision=precision or "fp32")
    return model, image_transform(model, train=True), image_transform(model)


@torch.no_grad()
def encode_video_file(model: CoCa, path: str | os.PathLike, num_frames: int = 16,
                      pooling: VideoPooling = "mean") -> VideoEncoding:
    """The :class:`VideoEncoding` of one video file (batch of one): ``num_frames`` frames at the centres of equal
    segments (``sample_indices``), read with :class:`VideoReader`, preprocessed for ``model``, encoded."""
    reader = VideoReader(path)
    frames = reader.get_frames(sample_indices(reader.num_frames, num_frames))
    return model.encode_video(encoder_input(model, frames)[None], pooling=pooling)


@torch.no_grad()
def encode_video_frames(model: CoCa, path: str | os.PathLike, fps: float = 1.0, max_frames: int | None = None,
                        chunk: int = 64) -> tuple[list[tuple[float, float]], torch.Tensor]:
    """Frame embeddings at a fixed rate, as ``score`` with ``decode.sampling=fps`` stores them: one frame per
    ``1 / fps`` seconds (the frame shown at the middle of each interval; fewer per second where the video would give
    more than ``max_frames``). Returns each frame's [start, end) interval in seconds and the (F, D) L2-normalised
    image embeddings. Frames are decoded and encoded ``chunk`` at a time, so memory does not grow with the video."""
    reader = VideoReader(path)
    windows = fps_windows(0.0, reader.duration, fps_rate(reader.duration, fps, max_frames))
    indices = fps_indices(reader.fps, reader.num_frames, windows)
    embeddings = [model.encode_image(encoder_input(model, reader.get_frames(indices[begin:begin + chunk]))).float()
                  for begin in range(0, len(indices), chunk)]
    return windows, torch.cat(embeddings)


def encoder_input(model: CoCa, frames: np.ndarray) -> torch.Tensor:
    """uint8 (T, H, W, 3) frames -> (T, 3, S, S) preprocessed for ``model``, on its device in its compute dtype."""
    return image_transform(model).frames(frames).to(next(model.parameters()).device, compute_dtype(model))
