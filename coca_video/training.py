"""Pieces shared by the two training tasks (pretraining and the finetuned probe): optimiser, schedule,
checkpoints that resume exactly, and metric logging."""

from __future__ import annotations

import json
import math
import os
import random
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn


@dataclass
class OptimConfig:
    """Optimiser and schedule. ``adafactor`` is big_vision's Adafactor as kept in timm (``AdafactorBigVision``):
    factored second moments with beta2 capped at ``betas[1]`` and a first moment with ``betas[0]`` -- the paper's
    beta1=0.9, beta2=0.999. (``torch.optim.Adafactor`` has no first moment, so it cannot express beta1.)"""

    name: Literal["adamw", "adafactor"] = "adamw"
    lr: float = 5e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_steps: int = 100
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW or Adafactor; no weight decay on biases, norms, position embeddings, tokens, queries and scales."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or _is_no_decay(name) else decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    from timm.optim import AdafactorBigVision

    return AdafactorBigVision(groups, lr=cfg.lr, momentum=cfg.betas[0], beta2_cap=cfg.betas[1],
                              momentum_dtype=torch.float32)


def _is_no_decay(name: str) -> bool:
    return bool(re.search(r"(pos_embed|temporal_pos|spatial_pos|cls_token|query|logit_scale|token_embedding)", name))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, max_steps: int):
    """Linear warmup from 0 to ``lr`` over ``warmup_steps``, then cosine decay to ``min_lr_ratio * lr``."""

    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = (step - cfg.warmup_steps) / max(1, max_steps - cfg.warmup_steps)
        cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# -- checkpoints -------------------------------------------------------------------------------------------------------
def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as plain types and tensors (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    numpy_state = {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                   "has_gauss": int(has_gauss), "gauss": float(gauss)}
    return {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])


class CheckpointManager:
    """``output_dir/checkpoints/step_{N:08d}.pt``, written atomically (temp file + rename), newest ``keep_last`` kept.

    A checkpoint holds everything a run needs to continue exactly: model, optimiser, scheduler, step, the data
    position (a step count: data streams are deterministic functions of it) and RNG states. Only rank 0 writes.
    Everything is stored as tensors and plain Python values, so resuming reads it with ``weights_only=True``.
    """

    def __init__(self, output_dir: str | Path, keep_last: int = 3) -> None:
        self.folder = Path(output_dir) / "checkpoints"
        self.keep_last = keep_last

    def save(self, step: int, state: dict[str, Any]) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"step_{step:08d}.pt"
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save({**state, "step": step, "rng": rng_state()}, tmp)
        os.replace(tmp, path)
        for old in self.all()[: -self.keep_last]:
            old.unlink(missing_ok=True)
        return path

    def all(self) -> list[Path]:
        return sorted(self.folder.glob("step_*.pt"))

    def resolve(self, resume: str | None) -> Path | None:
        """``auto`` -> the newest checkpoint (None when there is none yet); a path -> that file."""
        if resume is None:
            return None
        if resume == "auto":
            found = self.all()
            return found[-1] if found else None
        path = Path(resume)
        if not path.is_file():
            raise FileNotFoundError(f"resume={resume}: no such checkpoint file")
        return path

    @staticmethod
    def load(path: Path) -> dict[str, Any]:
        return torch.load(path, map_location="cpu", weights_only=True)


# -- logging -------------------------------------------------------------------------------------------------------
class MetricLogger:
    """Appends one JSON object per logged step to ``metrics.jsonl``; mirrors to TensorBoard when it is installed;
    prints a one-line progress report. Same methods whatever is installed; silent on ranks other than 0."""

    def __init__(self, output_dir: str | Path, enabled: bool = True, total_steps: int | None = None) -> None:
        self.enabled = enabled
        self.total_steps = total_steps
        self.path = Path(output_dir) / "metrics.jsonl"
        self.tensorboard = None
        self.last_time = time.perf_counter()
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(str(Path(output_dir) / "tensorboard"))
        except ImportError:
            pass

    def log(self, step: int, metrics: dict[str, float], samples: int | None = None) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if samples is not None:
            metrics = {**metrics, "samples_per_s": samples / max(now - self.last_time, 1e-9)}
        self.last_time = now
        record = {"step": step, **{k: float(v) for k, v in metrics.items()}}
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.tensorboard is not None:
            for key, value in record.items():
                if key != "step":
                    self.tensorboard.add_scalar(key, value, step)
        total = f"/{self.total_steps}" if self.total_steps else ""
        shown = "  ".join(f"{k} {v:.4g}" for k, v in record.items() if k != "step")
        print(f"step {step}{total}  {shown}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
