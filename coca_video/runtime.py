"""Where and how a model runs: the model block of a task config turned into a model, and mixed precision.

``model.precision`` means two things, one per use: for inference (scoring, retrieval, the frozen probe's cache) the
weights themselves compute in it (``bf16``/``fp16``: cast; ``int8``: dynamically quantised Linear layers; see
:mod:`coca_video.model.precision`); for training (pretraining, finetuning) the fp32 weights train under bf16
autocast, and ``fp16`` and ``int8`` are refused. ``auto`` becomes one of them when the model loads (the choice is
written back to the model block, so every output records the precision that ran)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys
from collections.abc import Callable
from typing import Any, ContextManager, TypeVar

import torch
from torch import nn

from .config import ModelConfig
from .distributed import from_rank0, is_distributed
from .errors import ConfigError
from .model import CoCa, create_model
from .model.factory import runs_with
from .model.precision import auto_precision, precision_of, warn_if_emulated_bf16

logger = logging.getLogger(__name__)


def load_model(cfg: ModelConfig, training: bool = False) -> CoCa:
    """``create_model`` from a task's model block, on its device, in eval mode; for inference in its precision,
    for ``training`` with fp32 weights (bf16 then means autocast; int8 cannot train). ``cfg.precision=auto`` is
    replaced by the precision chosen."""
    if training and cfg.precision in ("int8", "fp16"):
        raise ConfigError(f"model.precision={cfg.precision} is for inference only: training needs fp32 weights "
                          f"(precision=bf16 trains under bf16 autocast)")
    if training and cfg.precision == "auto":
        cfg.precision = auto_precision(cfg.device, training=True)
    if training and cfg.precision == "bf16":
        warn_if_emulated_bf16(cfg.device)
    requested = cfg.precision
    model = create_model(cfg.name, pretrained=cfg.pretrained, device=cfg.device,
                         precision="fp32" if training else cfg.precision, image_size=cfg.image_size)
    if not training:
        cfg.precision = precision_of(model)
        if requested == "auto" and is_distributed():  # every rank measured; all compute as rank 0 chose
            agreed = from_rank0(cfg.precision)
            if agreed != cfg.precision:
                model = create_model(cfg.name, pretrained=cfg.pretrained, device=cfg.device, precision=agreed,
                                     image_size=cfg.image_size)
                cfg.precision = agreed
    if compiles(cfg, training):
        compile_forward(model.image_encoder)
    return model


def compiles(cfg: ModelConfig, training: bool = False) -> bool:
    """Whether the image encoder runs through ``torch.compile``: as ``model.compile`` says, or when that is null,
    for inference on CUDA with bf16 or fp16 weights (where compiling pays off; on the CPU it did not here)."""
    if cfg.compile is not None:
        return cfg.compile
    return not training and torch.device(cfg.device).type == "cuda" and cfg.precision in ("bf16", "fp16")


def compile_forward(module: nn.Module) -> None:
    """In place: ``module``'s forward runs through ``torch.compile``; if compiling fails, now or at any call (no
    compiler, an unsupported op), it runs eager from then on, after one warning naming the reason. The module stays
    itself (same attributes and state dict), so nothing that holds it changes."""
    eager = module.forward
    try:
        compiled = torch.compile(eager)
    except Exception as err:  # noqa: BLE001 -- any reason to compile is a reason to run eager
        _warn_eager(err)
        return
    module.forward = EagerFallback(compiled, eager)


class EagerFallback:
    """Calls ``compiled``; from its first failure on, ``eager`` (which then raises for inputs that are wrong)."""

    def __init__(self, compiled: Callable[..., Any], eager: Callable[..., Any]) -> None:
        self.compiled, self.eager = compiled, eager

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.compiled is not None:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as err:  # noqa: BLE001 -- see compile_forward
                _warn_eager(err)
                self.compiled = None
        return self.eager(*args, **kwargs)


def _warn_eager(err: Exception) -> None:
    """One log line: why compiling failed (the first line of the error), and that the model runs eager."""
    reason = str(err).strip().splitlines()[0] if str(err).strip() else "no message"
    logger.warning("model.compile: torch.compile failed (%s: %s); running eager", type(err).__name__, reason)


def autocast(device: str | torch.device, precision: str) -> ContextManager:
    """bf16 autocast on ``device`` for ``precision == "bf16"`` (a no-op on bf16 weights); nothing otherwise."""
    if precision == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


T = TypeVar("T")


def with_trained_settings(cfg: T, command: str, blocks: tuple[str, ...] = ("caption", "decode")) -> T:
    """``cfg`` with the settings its model folder was trained to run with (:func:`coca_video.model.factory.runs_with`:
    a caption-finetuned folder's caption source and decoding, frames and sampling) wherever ``cfg`` leaves them at
    their defaults; a value the user set that differs from training is kept and said in one line on stderr. A block
    that is off (score's ``caption: null``) stays off."""
    trained = runs_with(cfg.model.name)
    used, differ = [], []
    for block in (b for b in blocks if b in trained and getattr(cfg, b, None) is not None):
        current = getattr(cfg, block)
        defaults, changes = type(current)(), {}
        for key, value in trained[block].items():
            if not hasattr(current, key) or getattr(current, key) == value:
                continue
            if getattr(current, key) == getattr(defaults, key):
                changes[key] = value
                used.append(f"{block}.{key}={value}")
            else:
                differ.append(f"{block}.{key}={getattr(current, key)} (its own: {value})")
        cfg = dataclasses.replace(cfg, **{block: dataclasses.replace(current, **changes)}) if changes else cfg
    if used:
        print(f"coca-video {command}: {cfg.model.name} runs as its folder says (as it was trained): "
              f"{', '.join(used)}", file=sys.stderr)
    if differ:
        print(f"coca-video {command}: warning: {', '.join(differ)}: set here, unlike {cfg.model.name}'s own settings",
              file=sys.stderr)
    return cfg
