"""Image preprocessing as batched tensor ops, shared by still images and video frames.

Eval: resize the shortest side to the model's image size (antialiased, bicubic by default), centre-crop (uint8,
:meth:`ImageTransform.crops`), scale to [0, 1] and normalise with the model's mean/std
(:meth:`ImageTransform.normalise`, for video batches on the model's device). A PIL image, a uint8 (H, W, 3) array
or tensor, or a batch of frames (T, H, W, 3) all take the same ops, so a frame gives exactly what the same picture
gives as an image.
"""

from __future__ import annotations

import math
import platform
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from .config import ClipAugmentConfig  # noqa: F401 -- its home is coca_video.config (torch-free, for the CLI)
from .model.config import CoCaConfig

ImageLike = Union[Image.Image, np.ndarray, Tensor]


def native_uint8(mode: str, device: torch.device) -> bool:
    """Whether PyTorch resizes uint8 pixels itself in ``mode`` on ``device`` (bicubic on any CPU, bilinear on an
    AVX2/AVX-512 or ARM one); elsewhere pixels go through float32 and are rounded back (torchvision's rule)."""
    if device.type != "cpu":
        return False
    if mode == "bilinear":
        return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512") or platform.machine() in ("aarch64",
                                                                                                       "arm64")
    return mode == "bicubic"


def resize(images: Tensor, height: int, width: int, mode: str) -> Tensor:
    """(..., C, H, W) uint8 or float -> (..., C, height, width), antialiased, ``align_corners=False``: what
    torchvision's ``transforms.v2.functional.resize`` computes, value for value, without importing torchvision (whose
    import takes ``torch._dynamo`` with it, ~3 s of every decoding worker's start)."""
    *batch, channels, old_height, old_width = images.shape
    if (height, width) == (old_height, old_width):
        return images
    if images.numel() == 0:
        return images.reshape(*batch, channels, height, width)
    flat = images.reshape(-1, channels, old_height, old_width)
    if flat.shape[0] == 1 and flat.is_contiguous(memory_format=torch.channels_last) and flat.numel() != flat.stride(0):
        # one channels-last image: restrided so that interpolate keeps channels-last (torchvision does the same)
        flat = flat.as_strided(flat.shape, (flat.numel(), *flat.stride()[1:]))
    cast = flat.dtype == torch.uint8 and not native_uint8(mode, flat.device)
    resized = F.interpolate(flat.float() if cast else flat, size=(height, width), mode=mode, align_corners=False,
                            antialias=True)
    if cast:
        resized = (resized.clamp_(0, 255) if mode == "bicubic" else resized).round_().to(torch.uint8)
    return resized.reshape(*batch, channels, height, width)


def resize_short_side(images: Tensor, size: int, mode: str) -> Tensor:
    """(..., C, H, W) -> the shorter side ``size``, the longer ``int(size * long / short)`` (torchvision's rule)."""
    height, width = images.shape[-2:]
    short, long = min(height, width), max(height, width)
    other = int(size * long / short)
    return resize(images, size, other, mode) if height <= width else resize(images, other, size, mode)


def center_crop(images: Tensor, size: int) -> Tensor:
    """(..., C, H, W) with H, W >= ``size`` -> the centre ``size`` x ``size`` (offsets rounded, as torchvision)."""
    height, width = images.shape[-2:]
    top, left = int(round((height - size) / 2.0)), int(round((width - size) / 2.0))
    return images[..., top:top + size, left:left + size]


class ImageTransform:
    """Callable preprocessing: one image -> (3, S, S) float tensor, a uint8 clip (T, H, W, 3) -> (T, 3, S, S)."""

    def __init__(self, image_size: int, mean: tuple[float, ...], std: tuple[float, ...], interpolation: str) -> None:
        self.image_size = image_size
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)
        if interpolation not in ("bicubic", "bilinear"):
            raise ValueError(f"interpolation must be 'bicubic' or 'bilinear', got {interpolation!r}")
        self.interpolation = interpolation

    def __call__(self, image: ImageLike) -> Tensor:
        """One image -> (3, S, S); a uint8 clip (T, H, W, 3), array or tensor -> (T, 3, S, S) (:meth:`frames`)."""
        if not isinstance(image, Image.Image) and getattr(image, "ndim", 0) == 4:
            return self.frames(image)
        return self.frames(as_uint8_hwc(image)[None])[0]

    def frames(self, frames: np.ndarray | Tensor) -> Tensor:
        """(T, H, W, 3) uint8 RGB -> (T, 3, S, S) float32, normalised: :meth:`crops` then :meth:`normalise`."""
        return self.normalise(self.crops(frames)[0])

    def frame_crops(self, frames: np.ndarray | Tensor, num_crops: int = 1) -> Tensor:
        """(T, H, W, 3) uint8 -> (num_crops, T, 3, S, S) float32, normalised: :meth:`crops` then :meth:`normalise`."""
        return self.normalise(self.crops(frames, num_crops))

    def crops(self, frames: np.ndarray | Tensor, num_crops: int = 1, rng: np.random.Generator | None = None) -> Tensor:
        """(T, H, W, 3) uint8 RGB -> (num_crops, T, 3, S, S) uint8, resized (shorter side S) and cropped, not yet
        normalised: 1 centre crop, or 3 crops (start, centre, end) along the longer side (SlowFast/mmaction 3-crop
        testing). What decoding workers hand over: a quarter of the bytes of float32 frames. ``rng``: the clip's
        generator, which these deterministic crops do not draw from (training transforms do)."""
        frames = torch.as_tensor(frames)
        if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"expected uint8 frames of shape (T, H, W, 3), got {frames.dtype} {tuple(frames.shape)}")
        chw = frames.permute(0, 3, 1, 2)  # (T, 3, H, W)
        resized = resize_short_side(chw, self.image_size, self.interpolation)
        size = self.image_size
        if num_crops == 1:
            return center_crop(resized, size)[None]
        height, width = resized.shape[-2:]
        starts = [0, (max(height, width) - size) // 2, max(height, width) - size]
        crops = [resized[..., s:s + size, (width - size) // 2:(width - size) // 2 + size] if height > width
                 else resized[..., (height - size) // 2:(height - size) // 2 + size, s:s + size] for s in starts]
        return torch.stack(crops)

    def normalise(self, pixels: Tensor, device: torch.device | str | None = None,
                  dtype: torch.dtype = torch.float32) -> Tensor:
        """uint8 pixels (..., 3, S, S) -> the encoder's input: scaled to [0, 1] and normalised with the model's
        mean/std, computed in float32 on ``device`` (default: where ``pixels`` are), returned as ``dtype`` (the
        encoder's: bf16 for bf16 weights). The one place preprocessing turns pixels into floats."""
        pixels = pixels.to(device, non_blocking=True) if device is not None else pixels  # pinned batches overlap
        scale = (1.0 / (255.0 * self.std)).view(3, 1, 1).to(pixels.device)
        shift = (-self.mean / self.std).view(3, 1, 1).to(pixels.device)
        # one float copy scaled and shifted in place: a batch of 8 x 16 frames at 224 px in 33 ms vs 105 ms for
        # (x / 255 - mean) / std's four passes (2 cores; same values within 5e-7): 0.3 s of the 2 s a 32-clip B-32 int8
        # scoring run lost against encoding the same frames from memory
        return pixels.to(torch.float32, copy=True).mul_(scale).add_(shift).to(dtype)

    def __repr__(self) -> str:
        return f"ImageTransform(size={self.image_size}, interpolation={self.interpolation})"


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


class RandomResizedCrop(ImageTransform):
    """Training preprocessing (open_clip's): a random crop of ``scale`` of the area (aspect 3/4..4/3), resized to
    the model's size. Deterministic given the ``generator`` passed per call."""

    def __init__(self, *args, scale: tuple[float, float] = (0.9, 1.0)) -> None:
        super().__init__(*args)
        self.scale = scale

    def __call__(self, image: ImageLike, generator: torch.Generator | None = None) -> Tensor:
        chw = as_uint8_hwc(image).permute(2, 0, 1)
        top, left, height, width = self.crop_box(chw.shape[1], chw.shape[2], generator)
        crop = resize(chw[..., top:top + height, left:left + width], self.image_size, self.image_size,
                      self.interpolation)
        return self.normalise(crop)

    def crop_box(self, height: int, width: int, generator: torch.Generator | None) -> tuple[int, int, int, int]:
        area = height * width
        for _ in range(10):
            draw = torch.rand(4, generator=generator).tolist()
            target = area * (self.scale[0] + draw[0] * (self.scale[1] - self.scale[0]))
            aspect = math.exp(math.log(3 / 4) + draw[1] * (math.log(4 / 3) - math.log(3 / 4)))
            w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                return int(draw[2] * (height - h + 1)), int(draw[3] * (width - w + 1)), h, w
        side = min(height, width)  # fall back to a centre crop
        return (height - side) // 2, (width - side) // 2, side, side


def sample_crop_box(height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float],
                    rng: np.random.Generator) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a box covering a uniform ``scale`` share of the area with a log-uniform ``ratio``
    aspect (width / height), placed uniformly (torchvision's RandomResizedCrop rule). After 10 boxes that do not
    fit: the centre crop of the whole frame with the aspect clamped into ``ratio``."""
    area = height * width
    for _ in range(10):
        share, log_aspect, y, x = rng.uniform(size=4)
        target = area * (scale[0] + share * (scale[1] - scale[0]))
        aspect = math.exp(math.log(ratio[0]) + log_aspect * (math.log(ratio[1]) - math.log(ratio[0])))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return int(y * (height - h + 1)), int(x * (width - w + 1)), h, w
    aspect = min(max(width / height, ratio[0]), ratio[1])
    h, w = (height, round(height * aspect)) if width / height >= aspect else (round(width / aspect), width)
    return (height - h) // 2, (width - w) // 2, h, w


class ClipTrainTransform(ImageTransform):
    """Finetuning preprocessing of a uint8 clip: one random resized crop box and one horizontal flip drawn per clip
    from the caller's ``rng`` (the dataset's per-(seed, epoch, index) generator) and applied to every frame."""

    def __init__(self, *args, augment: ClipAugmentConfig) -> None:
        super().__init__(*args)
        self.augment = augment

    def crops(self, frames: np.ndarray | Tensor, num_crops: int = 1,
              rng: np.random.Generator | None = None) -> Tensor:
        """(T, H, W, 3) uint8 -> (1, T, 3, S, S) uint8: the clip's frames, all cut by one box and flipped alike."""
        if num_crops != 1 or rng is None:
            raise ValueError("a training clip takes one random crop drawn from the dataset's rng")
        chw = torch.as_tensor(frames).permute(0, 3, 1, 2)  # (T, 3, H, W)
        top, left, h, w = sample_crop_box(chw.shape[-2], chw.shape[-1], self.augment.scale, self.augment.ratio, rng)
        crop = resize(chw[..., top:top + h, left:left + w], self.image_size, self.image_size,
                      self.interpolation)  # (T, 3, S, S)
        if self.augment.flip and rng.uniform() < 0.5:
            crop = crop.flip(-1)
        return crop[None]

    def frame_crops(self, frames: np.ndarray | Tensor, num_crops: int = 1,
                    rng: np.random.Generator | None = None) -> Tensor:
        """(T, H, W, 3) uint8 -> (1, T, 3, S, S) float32, normalised: :meth:`crops` then :meth:`normalise`."""
        return self.normalise(self.crops(frames, num_crops, rng))

    def __repr__(self) -> str:
        return f"ClipTrainTransform(size={self.image_size}, {self.augment})"


def clip_train_transform(model_or_config: torch.nn.Module | CoCaConfig,
                         augment: ClipAugmentConfig) -> ClipTrainTransform:
    """The model's preprocessing (size, interpolation, mean/std) with finetuning's per-clip augmentation."""
    cfg = model_or_config if isinstance(model_or_config, CoCaConfig) else model_or_config.cfg
    return ClipTrainTransform(cfg.vision.image_size, cfg.preprocess.mean, cfg.preprocess.std,
                              cfg.preprocess.interpolation, augment=augment)


def image_transform(model_or_config: torch.nn.Module | CoCaConfig, train: bool = False) -> ImageTransform:
    """The preprocessing a model expects: eval (open_clip's 224 bicubic resize + centre crop + OpenAI mean/std) or,
    with ``train=True``, a random resized crop of 90-100% of the area."""
    cfg = model_or_config if isinstance(model_or_config, CoCaConfig) else model_or_config.cfg
    args = (cfg.vision.image_size, cfg.preprocess.mean, cfg.preprocess.std, cfg.preprocess.interpolation)
    return RandomResizedCrop(*args) if train else ImageTransform(*args)
