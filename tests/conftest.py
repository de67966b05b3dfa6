"""Shared fixtures: small seeded models built from the shipped tiny config."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import coca_video
from coca_video.model import CoCaConfig


def tiny_config(**overrides) -> CoCaConfig:
    """The shipped ``tiny`` architecture with nested overrides, e.g. ``tiny_config(pooler={"layout": "cascade"})``."""
    cfg = coca_video.get_model_config("tiny")
    for section, values in overrides.items():
        if isinstance(values, dict):
            setattr(cfg, section, dataclasses.replace(getattr(cfg, section), **values))
        else:
            setattr(cfg, section, values)
    return cfg


@pytest.fixture
def tiny_model() -> coca_video.CoCa:
    torch.manual_seed(0)
    return coca_video.CoCa(tiny_config()).eval()
