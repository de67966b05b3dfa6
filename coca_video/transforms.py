"""Image preprocessing as batched tensor ops, shared by still images and video frames.

Eval: resize the shortest side to the model's image size (antialiased, bicubic by default), centre-crop, scale to
[0, 1], normalise with the model's mean/std. A PIL image, a uint8 (H, W, 3) array or tensor, or a batch of frames
(T, H, W, 3) all take the same ops, so a frame gives exactly what the same picture gives as an image.
"""

from __future__ import annotations

from typing import Union

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torch import Tensor
from torchvision.transforms import InterpolationMode

from .model.config import CoCaConfig

ImageLike = Union[Image.Image, np.ndarray, Tensor]


class ImageTransform:
    """Callable preprocessing: one image -> (3, S, S) float tensor; :meth:`frames` for (T, H, W, 3) uint8 batches."""

    def __init__(self, image_size: int, mean: tuple[float, ...], std: tuple[float, ...], interpolation: str) -> None:
        self.image_size = image_size
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)
        self.interpolation = InterpolationMode(interpolation)

    def __call__(self, image: ImageLike) -> Tensor:
        return self.frames(as_uint8_hwc(image)[None])[0]

    def frames(self, frames: np.ndarray | Tensor) -> Tensor:
        """(T, H, W, 3) uint8 RGB -> (T, 3, S, S) float32, normalised."""
        frames = torch.as_tensor(frames)
        if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"expected uint8 frames of shape (T, H, W, 3), got {frames.dtype} {tuple(frames.shape)}")
        chw = frames.permute(0, 3, 1, 2)  # (T, 3, H, W)
        resized = TF.resize(chw, [self.image_size], interpolation=self.interpolation, antialias=True)
        cropped = TF.center_crop(resized, [self.image_size, self.image_size])
        return (cropped.float() / 255.0 - self.mean) / self.std

    def __repr__(self) -> str:
        return f"ImageTransform(size={self.image_size}, interpolation={self.interpolation.value})"


def as_uint8_hwc(image: ImageLike) -> Tensor:
    """A PIL image (any mode), or a uint8 (H, W, 3) array/tensor -> uint8 (H, W, 3) RGB tensor."""
    if isinstance(image, Image.Image):
        return torch.from_numpy(np.asarray(image.convert("RGB")).copy())
    tensor = torch.as_tensor(image)
    if tensor.ndim == 2:
        tensor = tensor[..., None].expand(-1, -1, 3)
    if tensor.dtype != torch.uint8 or tensor.ndim != 3 or tensor.shape[-1] != 3:
        raise ValueError(f"expected a PIL image or uint8 (H, W, 3) array, got {tensor.dtype} {tuple(tensor.shape)}")
    return tensor


def image_transform(model_or_config: torch.nn.Module | CoCaConfig) -> ImageTransform:
    """The eval preprocessing a model expects (open_clip's: 224 bicubic resize + centre crop + OpenAI mean/std)."""
    cfg = model_or_config if isinstance(model_or_config, CoCaConfig) else model_or_config.cfg
    return ImageTransform(cfg.vision.image_size, cfg.preprocess.mean, cfg.preprocess.std, cfg.preprocess.interpolation)
