"""Pieces shared by the training tasks (pretraining, the probe, caption finetuning): optimiser, schedule, checkpoints
that resume exactly (one restore path), DDP wrapping, metric logging, and the epoch loop of the probe and of caption
finetuning (which overrides its loss: :meth:`EpochTrainer.loss_sum`)."""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .config import check, check_at_least
from .distributed import barrier, get_info, is_distributed
from .errors import CheckpointError, InputError
from .io import atomic_path


@dataclass
class OptimConfig:
    """Optimiser and schedule. ``adafactor`` is big_vision's Adafactor as kept in timm (``AdafactorBigVision``):
    factored second moments with beta2 capped at ``betas[1]`` and a first moment with ``betas[0]`` -- the paper's
    beta1=0.9, beta2=0.999. (``torch.optim.Adafactor`` has no first moment, so it cannot express beta1.)"""

    name: Literal["adamw", "adafactor"] = "adamw"  # optimiser
    lr: float = 5e-4  # peak learning rate
    weight_decay: float = 0.01  # on weights only (not biases, norms, embeddings)
    betas: tuple[float, float] = (0.9, 0.999)  # first and second moment decay
    eps: float = 1e-8  # added to the denominator
    warmup_steps: int = 100  # linear warmup from 0 to lr
    schedule: Literal["cosine", "linear"] = "cosine"  # decay after warmup, down to min_lr_ratio * lr
    min_lr_ratio: float = 0.0  # the decay ends at lr * min_lr_ratio
    grad_clip: float = 1.0  # gradients are scaled down to at most this total norm
    clip_per_module: bool = False  # probe finetuning: the encoder's and the new modules' gradients each to grad_clip
    layer_decay: float = 1.0  # probe finetuning: block i of L trains at lr * layer_decay^(L - i) (1.0 = off)
    head_lr: float | None = None  # probe: peak lr of the new modules (pooler, position embeddings, classifier); null: lr
    ema: float | None = None  # probe: decay of an EMA of the trained weights, which evaluate and are saved (null/0: off)

    def __post_init__(self) -> None:
        check(isinstance(self.lr, (int, float)) and self.lr > 0, "lr", "be > 0", self.lr)
        check_at_least("weight_decay", self.weight_decay, 0)
        check(all(isinstance(b, (int, float)) and 0 <= b < 1 for b in self.betas), "betas", "be two numbers in [0, 1)",
              self.betas)
        check(isinstance(self.eps, (int, float)) and self.eps > 0, "eps", "be > 0", self.eps)
        check_at_least("warmup_steps", self.warmup_steps, 0)
        check(isinstance(self.min_lr_ratio, (int, float)) and 0 <= self.min_lr_ratio <= 1, "min_lr_ratio",
              "be in [0, 1]", self.min_lr_ratio)
        check(isinstance(self.grad_clip, (int, float)) and self.grad_clip > 0, "grad_clip", "be > 0", self.grad_clip)
        check(0 < self.layer_decay <= 1, "layer_decay", "be in (0, 1] (1.0 = off)", self.layer_decay)
        check(self.head_lr is None or (isinstance(self.head_lr, (int, float)) and self.head_lr > 0), "head_lr",
              "be > 0 or null (= lr)", self.head_lr)
        check(self.ema is None or (isinstance(self.ema, (int, float)) and 0 <= self.ema < 1), "ema",
              "be in [0, 1) or null (0 and null: off)", self.ema)


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
    return bool(re.search(r"(pos_embed|temporal_pos|spatial_pos|cls_token|query|logit_scale|token_embedding)", name))


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

    def __init__(self, output_dir: str | Path, keep_last: int = 3, architecture: str | None = None) -> None:
        self.folder = Path(output_dir) / "checkpoints"
        self.keep_last, self.architecture = keep_last, architecture  # architecture: see architecture_id

    def save(self, step: int, state: dict[str, Any]) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"step_{step:08d}.pt"
        with atomic_path(path) as tmp:
            extra = {"architecture": self.architecture} if self.architecture else {}
            torch.save({**state, **extra, "step": step, "rng": rng_state()}, tmp)
        for old in self.all()[: -self.keep_last]:
            old.unlink(missing_ok=True)
        return path

    def all(self) -> list[Path]:
        return sorted(self.folder.glob("step_*.pt"))

    def resolve(self, resume: str | None) -> list[Path]:
        """The checkpoints to try, best first: ``auto`` -> every checkpoint, newest first (none yet: empty); a path
        -> that file."""
        if resume is None:
            return []
        if resume == "auto":
            return self.all()[::-1]
        path = Path(resume)
        if not path.is_file():
            raise InputError(f"resume={resume}: no such checkpoint file")
        return [path]

    @staticmethod
    def load(path: Path) -> dict[str, Any]:
        """A checkpoint's contents (tensors and plain values only); a damaged file raises CheckpointError naming it."""
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 -- truncated, empty or foreign: the file is named in one line
            raise CheckpointError(f"{path}: unreadable or truncated checkpoint ({type(err).__name__})") from None
        if not isinstance(state, dict) or not {"step", "rng"} <= set(state):
            raise CheckpointError(f"{path}: not a coca-video training checkpoint (no step/rng entries)")
        return state

    def restore(self, resume: str | None, load_states: Callable[[dict[str, Any]], None]) -> dict[str, Any] | None:
        """Load the checkpoint ``resume`` names, hand it to ``load_states`` (model, optimiser, schedule), then
        restore the RNG states. Returns the checkpoint, or None when starting fresh. With ``auto`` a damaged newest
        checkpoint is skipped with a warning naming it, for the previous good one. A checkpoint written for another
        architecture than this manager's (or whose tensors do not fit) is a CheckpointError naming both."""
        for path in self.resolve(resume):
            try:
                state = self.load(path)
            except CheckpointError as err:
                if resume != "auto":
                    raise
                print(f"warning: {err}; resuming from the previous checkpoint instead", file=sys.stderr)
                continue
            written_for = state.get("architecture")
            if self.architecture and written_for and written_for.split()[-1] != self.architecture.split()[-1]:
                raise CheckpointError(f"{path}: written for model {written_for}, but this run builds "
                                      f"{self.architecture}; "
                                      "use another output_dir or resume=null to start fresh")
            try:
                load_states(state)
            except (RuntimeError, KeyError, ValueError) as err:
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise CheckpointError(f"{path}: does not fit this run ({first})") from None
            set_rng_state(state["rng"])
            return state
        if resume == "auto" and self.all():
            print(f"warning: no readable checkpoint in {self.folder}; starting from step 0", file=sys.stderr)
        return None


def architecture_id(name: str, config: Any) -> str:
    """``name [digest]``: what a checkpoint was written for; two ids match when their config digests do."""
    from .config import to_dict

    digest = hashlib.sha1(json.dumps(to_dict(config), sort_keys=True).encode()).hexdigest()[:10]
    return f"{name} [{digest}]"


def wrap_ddp(module: nn.Module) -> nn.Module:
    """``module`` in DistributedDataParallel under torchrun (on this rank's GPU when there is one); itself otherwise."""
    if not is_distributed():
        return module
    device_ids = [torch.cuda.current_device()] if torch.cuda.is_available() else None
    return nn.parallel.DistributedDataParallel(module, device_ids=device_ids)


# -- logging -------------------------------------------------------------------------------------------------------
class MetricLogger:
    """Appends one JSON object per logged step to ``metrics.jsonl``; mirrors to TensorBoard when it is installed;
    prints a one-line progress report. Same methods whatever is installed; silent on ranks other than 0."""

    def __init__(self, output_dir: str | Path, enabled: bool = True, total_steps: int | None = None,
                 unit: str = "step") -> None:
        self.enabled, self.unit = enabled, unit
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
        print(f"{self.unit} {step}{total}  {shown}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()


# -- epoch loop ----------------------------------------------------------------------------------------------------
class EpochTrainer:
    """Training by epochs (classification, unless a subclass overrides :meth:`loss_sum`): optimiser, schedule,
    atomic per-epoch checkpoints, exact resume, DDP. Subclasses say what trains (:meth:`trainable`), how many steps
    an epoch takes and how an epoch runs (calling :meth:`step` on :meth:`epoch_batches`, which ends the last epoch
    early when ``max_steps`` says so)."""

    def __init__(self, output_dir: str | Path, epochs: int, optim: OptimConfig, label_smoothing: float = 0.0,
                 resume: str | None = None, max_steps: int | None = None) -> None:
        self.epochs, self.optim_cfg, self.label_smoothing, self.resume = epochs, optim, label_smoothing, resume
        self.max_steps = max_steps  # when set, the run's length in optimiser steps (epochs then follow from it)
        self.info = get_info()
        self.checkpoints = CheckpointManager(output_dir, keep_last=2)
        self.logger = MetricLogger(output_dir, enabled=self.info.is_main, total_steps=epochs, unit="epoch")
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        self.wrapped: nn.Module | None = None
        self.ema: WeightEma | None = None
        self.grad_norms: list[float] = []  # this epoch's total gradient norms before clipping

    def trainable(self) -> nn.Module:
        raise NotImplementedError

    def steps_per_epoch(self) -> int:
        raise NotImplementedError

    def train_epoch(self, epoch: int) -> float:
        raise NotImplementedError

    def fit(self) -> list[dict[str, float]]:
        """Train epochs not yet done (resuming from ``resume``); returns the loss history of every epoch. With
        ``optim.ema`` the trained module ends holding the EMA weights (what evaluation and the saved probe use)."""
        module = self.trainable()
        if self.max_steps:
            self.epochs = self.logger.total_steps = math.ceil(self.max_steps / self.steps_per_epoch())
        self.optimizer = build_optimizer(module, self.optim_cfg, self.lr_scale())
        self.scheduler = build_scheduler(self.optimizer, self.optim_cfg, self.total_steps())
        self.ema = WeightEma(module, self.optim_cfg.ema) if self.optim_cfg.ema else None
        state = self.checkpoints.restore(self.resume, lambda s: self._load_states(module, s))
        start, history = (int(state["step"]), json.loads(state["history"])) if state else (0, [])
        self.wrapped = wrap_ddp(module)
        for epoch in range(start, self.epochs):
            self.grad_norms = []
            loss = self.train_epoch(epoch)
            history.append({"epoch": epoch + 1, "train_loss": loss})
            self.logger.log(epoch + 1, {"train_loss": loss, **self.epoch_figures()})
            if self.info.is_main:
                extra = {"ema": self.ema.state_dict()} if self.ema else {}
                self.checkpoints.save(epoch + 1, {"trainable": module.state_dict(),
                                                  "optimizer": self.optimizer.state_dict(),
                                                  "scheduler": self.scheduler.state_dict(),
                                                  "history": json.dumps(history), **extra})
            barrier()
        self.logger.close()
        if self.ema:
            self.ema.copy_to(module)
        return history

    def total_steps(self) -> int:
        """The run's optimiser steps: ``max_steps``, or every batch of every epoch."""
        return self.max_steps or self.epochs * self.steps_per_epoch()

    def epoch_batches(self, batches: list, epoch: int) -> list:
        """``epoch``'s global batches (one optimiser step each), cut where ``max_steps`` ends the run."""
        return batches[:max(0, self.total_steps() - epoch * self.steps_per_epoch())]

    def epoch_figures(self) -> dict[str, float]:
        """What the epoch log shows beside the loss: the learning rate now (and the head's, when it has its own),
        the mean total gradient norm before clipping and the share of steps that clipping scaled down."""
        factor = self.scheduler.get_last_lr()[0] / self.optimizer.param_groups[0]["initial_lr"]
        figures = {"lr": self.optim_cfg.lr * factor}
        if self.optim_cfg.head_lr is not None:
            figures["head_lr"] = self.optim_cfg.head_lr * factor
        if self.grad_norms:
            figures["grad_norm"] = float(np.mean(self.grad_norms))
            figures["clipped"] = float(np.mean([n > self.optim_cfg.grad_clip for n in self.grad_norms]))
        return figures

    def _load_states(self, module: nn.Module, state: dict[str, Any]) -> None:
        module.load_state_dict(state["trainable"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema:
            if "ema" not in state:
                raise KeyError("the checkpoint has no EMA weights (written with optim.ema off)")
            self.ema.load_state_dict(state["ema"])

    def lr_scale(self) -> Callable[[str], float] | None:
        """Per-parameter learning-rate factor by name (layer-wise decay), or None: every parameter at ``lr``."""
        return None

    def clip_groups(self) -> list[list[nn.Parameter]]:
        """The parameters whose gradients are clipped together to ``optim.grad_clip``: all of them, by default."""
        return [list(self.trainable().parameters())]

    def loss_sum(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The summed loss of one micro-batch (its mean is this over :meth:`target_count`): classification's
        cross-entropy of (b, classes) logits; a subclass with another objective overrides both."""
        return classification_loss_sum(outputs, targets, self.label_smoothing)

    def target_count(self, targets: torch.Tensor) -> int:
        """How many terms ``targets`` adds to the global batch's mean loss: one per clip here."""
        return len(targets)

    def step(self, logits: torch.Tensor, targets: torch.Tensor) -> float:
        """One optimiser step on this rank's share of a global batch: :meth:`accumulated_step` of one micro-batch
        whose logits are already computed."""
        return self.accumulated_step(lambda _: logits, [targets])

    def accumulated_step(self, forward: Callable[[int], torch.Tensor], targets: Sequence[torch.Tensor]) -> float:
        """One optimiser step on this rank's share of a global batch, given as micro-batches: ``forward(i)`` ->
        (b_i, classes) logits of micro-batch i, ``targets[i]`` its (b_i,) integer labels or (b_i, classes) soft
        targets. Gradients of all micro-batches add up before the step, which therefore equals one step over their
        union. The loss is the mean over the whole global batch whatever the shares' sizes (an empty micro-batch,
        targets of length 0, contributes zero), so any number of processes takes the same step; a global batch
        with no video at all takes none. Returns that mean."""
        count = torch.tensor([float(sum(self.target_count(t) for t in targets))])
        if is_distributed():
            dist.all_reduce(count)
        scale = self.info.world_size / max(count.item(), 1.0)  # DDP then averages the gradients over ranks
        self.optimizer.zero_grad(set_to_none=True)
        loss_total = 0.0
        for i, micro_targets in enumerate(targets):
            last = i == len(targets) - 1
            no_sync = getattr(self.wrapped, "no_sync", None)  # DDP: reduce gradients once, after the last
            with nullcontext() if last or no_sync is None else no_sync():
                loss_sum = self.loss_sum(forward(i), micro_targets)
                (loss_sum * scale).backward()
            loss_total += loss_sum.item()
        totals = torch.tensor([loss_total])
        if is_distributed():
            dist.all_reduce(totals)
        if count.item() == 0:
            return float("nan")
        norms = [torch.nn.utils.clip_grad_norm_(group, self.optim_cfg.grad_clip) for group in self.clip_groups()]
        self.grad_norms.append(float(torch.stack(norms).square().sum().sqrt()))  # the total norm, before clipping
        self.optimizer.step()
        self.scheduler.step()
        if self.ema:
            self.ema.update(self.trainable())
        return totals[0].item() / max(count.item(), 1.0)


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
