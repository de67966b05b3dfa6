"""The optimiser side of training: the optimiser and schedule that :class:`OptimConfig` (``optim.*``) builds, the
weights' EMA and the classification loss. The keys themselves, :class:`OptimConfig` and the loop's :class:`TrainLoop`
(``train.*`` in every task), live in :mod:`coca_video.config`, so the command line reads them without torch."""

from __future__ import annotations

import math
import re
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..config import OptimConfig, TrainLoop  # noqa: F401 -- their home is coca_video.config (torch-free)


def build_optimizer(model: nn.Module, cfg: OptimConfig,
                    lr_scale: Callable[[str], float] | None = None) -> torch.optim.Optimizer:
    """AdamW or Adafactor; no weight decay on biases, norms, position embeddings, tokens, queries and scales.
    ``lr_scale(name)``, when given, multiplies a parameter's learning rate (layer-wise decay): one group per
    (scale, decay or not), each with ``lr = cfg.lr * scale``, which the schedule then scales over time."""
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {(1.0, True): [], (1.0, False): []}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decays = not (param.ndim < 2 or _is_no_decay(name))
        groups.setdefault((lr_scale(name) if lr_scale else 1.0, decays), []).append(param)
    param_groups = [{"params": params, "weight_decay": cfg.weight_decay if decays else 0.0, "lr": cfg.lr * scale}
                    for (scale, decays), params in groups.items() if params or scale == 1.0]
    if cfg.name == "adamw":
        return torch.optim.AdamW(param_groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    from timm.optim import AdafactorBigVision

    return AdafactorBigVision(param_groups, lr=cfg.lr, momentum=cfg.betas[0], beta2_cap=cfg.betas[1],
                              momentum_dtype=torch.float32)


def _is_no_decay(name: str) -> bool:
    return bool(re.search(r"(pos_embed|temporal_pos|spatial_pos|frame_time|frame_space|cls_token|query|logit_scale|"
                          r"token_embedding)", name))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, max_steps: int):
    """Linear warmup from 0 to ``lr`` over ``warmup_steps``, then cosine or linear (``cfg.schedule``) decay to
    ``min_lr_ratio * lr`` at ``max_steps``."""

    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = min((step - cfg.warmup_steps) / max(1, max_steps - cfg.warmup_steps), 1.0)
        remaining = 0.5 * (1 + math.cos(math.pi * progress)) if cfg.schedule == "cosine" else 1 - progress
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * remaining

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class WeightEma:
    """An exponential moving average of a module's weights (every floating-point entry of its state dict; other
    entries are copied). Update t averages with ``min(decay, (1 + t) / (10 + t))``, TensorFlow's
    ``ExponentialMovingAverage(num_updates=)`` rule: early on the average follows the weights closely, so a short run
    averages its last steps instead of keeping its initial weights; after ~10 / (1 - decay) updates it is ``decay``."""

    def __init__(self, module: nn.Module, decay: float) -> None:
        self.decay, self.updates = float(decay), 0
        self.shadow = {k: v.detach().clone() for k, v in module.state_dict().items()}

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        decay = self.current_decay()
        for key, value in module.state_dict().items():
            if value.is_floating_point():
                self.shadow[key].lerp_(value.detach().to(self.shadow[key].dtype), 1 - decay)
            else:
                self.shadow[key].copy_(value)
        self.updates += 1

    def copy_to(self, module: nn.Module) -> None:
        module.load_state_dict(self.shadow)

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "weights": self.shadow}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = set(self.shadow) ^ set(state["weights"])
        if missing:
            raise KeyError(f"EMA weights do not fit the module ({sorted(missing)[0]})")
        self.updates = int(state["updates"])
        for key, value in state["weights"].items():
            self.shadow[key].copy_(value)


def classification_loss_sum(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Summed cross-entropy of (B, classes) logits: against (B,) integer labels, smoothed by ``label_smoothing``,
    or against (B, classes) soft targets (rows summing to 1, smoothing already in them: see :func:`soft_targets`).
    No rows (B = 0): a zero that still runs backward, so every rank joins DDP's gradient reduction."""
    if len(targets) == 0:
        return logits.float().sum() * 0.0
    if targets.is_floating_point():
        return F.cross_entropy(logits.float(), targets.float(), reduction="sum")
    return F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing, reduction="sum")


def soft_targets(labels: torch.Tensor, num_classes: int, label_smoothing: float = 0.0) -> torch.Tensor:
    """(B,) integer labels -> (B, classes) one-hot rows smoothed as ``F.cross_entropy(label_smoothing=)`` does:
    ``(1 - eps) * one_hot + eps / classes``."""
    one_hot = F.one_hot(labels, num_classes).float()
    return one_hot * (1 - label_smoothing) + label_smoothing / num_classes
