"""Where and how a model runs: the model block of a task config turned into a model, and mixed precision."""

from __future__ import annotations

import contextlib
from typing import ContextManager

import torch

from .config import ModelConfig
from .model import CoCa, create_model


def load_model(cfg: ModelConfig) -> CoCa:
    """``create_model`` from a task's model block, on its device, in eval mode."""
    return create_model(cfg.name, pretrained=cfg.pretrained, device=cfg.device, image_size=cfg.image_size)


def autocast(device: str | torch.device, precision: str) -> ContextManager:
    """bf16 autocast on ``device`` for ``precision == "bf16"``; nothing for fp32."""
    if precision == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
