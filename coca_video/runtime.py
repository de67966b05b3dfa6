"""Where and how a model runs: the model block of a task config turned into a model, and mixed precision.

``model.precision`` means two things, one per use: for inference (scoring, retrieval, the frozen probe's cache) the
weights themselves compute in it (``bf16``: cast; ``int8``: dynamically quantised Linear layers; see
:mod:`coca_video.model.precision`); for training (pretraining, finetuning) the fp32 weights train under bf16
autocast, and ``int8`` is refused."""

from __future__ import annotations

import contextlib
from typing import ContextManager

import torch

from .config import ModelConfig
from .errors import ConfigError
from .model import CoCa, create_model


def load_model(cfg: ModelConfig, training: bool = False) -> CoCa:
    """``create_model`` from a task's model block, on its device, in eval mode; for inference in its precision,
    for ``training`` with fp32 weights (bf16 then means autocast; int8 cannot train)."""
    if training and cfg.precision == "int8":
        raise ConfigError("model.precision=int8 is for inference only: training needs fp32 weights (bf16 autocast)")
    if not training and cfg.precision == "int8" and torch.device(cfg.device).type != "cpu":
        raise ConfigError(f"model.precision=int8 runs on the CPU only, not model.device={cfg.device}; use bf16")
    return create_model(cfg.name, pretrained=cfg.pretrained, device=cfg.device,
                        precision="fp32" if training else cfg.precision, image_size=cfg.image_size)


def autocast(device: str | torch.device, precision: str) -> ContextManager:
    """bf16 autocast on ``device`` for ``precision == "bf16"`` (a no-op on bf16 weights); nothing otherwise."""
    if precision == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
