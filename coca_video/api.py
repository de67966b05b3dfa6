"""Conveniences in open_clip's shapes: a model with both preprocessings, one video file to its embeddings.

    model, preprocess_train, preprocess_val = coca_video.create_model_and_transforms("default")
    video = coca_video.encode_video_file(model, "clip.mp4", num_frames=16)
"""

from __future__ import annotations

import os

import torch

from .model import CoCa, create_model
from .model.coca import VideoEncoding, VideoPooling
from .transforms import ImageTransform, image_transform
from .video import VideoReader, sample_indices



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
    parameter = next(model.parameters())
    pixels = image_transform(model).frames(frames).to(parameter.device, parameter.dtype)
    return model.encode_video(pixels[None], pooling=pooling)
