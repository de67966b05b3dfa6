"""A model run at another resolution than it was trained at: position embeddings resampled on the patch grid (class
token kept), and the shipped 64 px model still names colours at 96 px."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from coca_video.config import ModelConfig
from coca_video.errors import ConfigError
from coca_video.model import create_model, get_tokenizer
from coca_video.runtime import load_model
from coca_video.tasks.pretrain import EvalConfig, evaluate_zero_shot
from coca_video.transforms import image_transform


def test_position_embeddings_are_resampled_bicubically_on_the_patch_grid(caplog):
    native = create_model("default")
    with caplog.at_level(logging.WARNING, logger="coca_video.model.factory"):
        model = load_model(ModelConfig(image_size=96))
    assert "resampled from 8x8 to 12x12 patches" in caplog.text
    assert model.cfg.vision.image_size == 96 and image_transform(model).image_size == 96
    assert model.image_encoder.num_tokens == 1 + 12 * 12
    old, new = native.image_encoder.vit.pos_embed, model.image_encoder.vit.pos_embed  # (1, 1 + grid^2, C)
    torch.testing.assert_close(new[:, 0], old[:, 0])  # the class token's position kept as is
    grid = old[0, 1:].T.reshape(1, -1, 8, 8)  # (1, C, 8, 8)
    expected = F.interpolate(grid, size=(12, 12), mode="bicubic", antialias=True, align_corners=False)
    torch.testing.assert_close(new[0, 1:], expected.reshape(-1, 144).T, atol=1e-5, rtol=1e-4)
    assert model.image_encoder(torch.zeros(2, 3, 96, 96)).shape == (2, 145, old.shape[-1])
    with pytest.raises(ConfigError, match=r"model.image_size=100: .* not a multiple of the patch size 8"):
        create_model("default", image_size=100)


@pytest.mark.slow
def test_default_model_at_96_px_still_names_colours():
    model = create_model("default", image_size=96)
    accuracy = evaluate_zero_shot(model, get_tokenizer("default"), EvalConfig(num_images=200, attributes=("colour",)))
    assert accuracy["zero_shot_colour"] > 90.0  # 200 held-out images rendered at 96 px; chance 16.7%
