"""Shared fixtures; shared plain helpers live in helpers.py."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_config

import coca_video


@pytest.fixture
def tiny_model() -> coca_video.CoCa:
    torch.manual_seed(0)
    return coca_video.CoCa(tiny_config()).eval()
