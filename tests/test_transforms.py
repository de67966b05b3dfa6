"""Preprocessing without torchvision: resizing and cropping written on ``torch.nn.functional.interpolate`` give
torchvision's values exactly (uint8 and float, bicubic and bilinear, one image or a clip, down and up), and the
modules every decoding worker and Ray actor imports pull in neither torchvision, timm nor ``torch._dynamo`` (their
import is ~3 s of CPU in every process that only decodes frames or runs a ViT)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

from coca_video.transforms import ImageTransform, center_crop, resize, resize_short_side

SHAPES = [(1, 48, 80), (4, 240, 320), (3, 81, 57), (2, 20, 30), (1, 64, 64)]


@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_resize_and_centre_crop_equal_torchvision(mode, dtype):
    rng = np.random.default_rng(0)
    for frames, height, width in SHAPES:
        hwc = torch.from_numpy(rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8))
        chw = hwc.permute(0, 3, 1, 2).to(dtype)  # channels-last strides, as decoded frames arrive
        for images in (chw, chw.contiguous(), chw[0]):  # a clip (either layout) and one image
            for size in (32, 56, 100):
                expected = TF.resize(images, [size], interpolation=InterpolationMode(mode), antialias=True)
                got = resize_short_side(images, size, mode)
                assert got.dtype == expected.dtype and torch.equal(got, expected), (mode, dtype, images.shape, size)
                assert torch.equal(center_crop(got, size), TF.center_crop(expected, [size, size]))
            box = images[..., 3:3 + height // 2, 5:5 + width // 2]
            assert torch.equal(resize(box, 24, 24, mode),
                               TF.resized_crop(images, 3, 5, height // 2, width // 2, [24, 24],
                                               interpolation=InterpolationMode(mode), antialias=True))


def test_an_unknown_interpolation_is_refused():
    with pytest.raises(ValueError, match="interpolation must be 'bicubic' or 'bilinear', got 'lanczos'"):
        ImageTransform(32, (0.5,) * 3, (0.5,) * 3, "lanczos")


def test_decoding_and_model_modules_import_without_torchvision_timm_or_dynamo():
    code = ("import sys, coca_video.model, coca_video.transforms, coca_video.data.video, coca_video.engines.ray_engine;"
            "print(sorted({m.split('.')[0] if m != 'torch._dynamo' else m for m in sys.modules} & "
            "{'torchvision', 'timm', 'torch._dynamo'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
