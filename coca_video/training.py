"""Pieces shared by the training tasks (pretraining, the probe, caption finetuning): the ``train.*`` keys
(:class:`TrainLoop`), optimiser, schedule, checkpoints that resume exactly (one restore path), DDP wrapping, metric
logging, and the one training loop (:func:`fit`). A task hands the loop a :class:`TrainTask` (its module, its
batches, its forward and loss); the loop owns everything else, nanoGPT-style, top to bottom."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
import re
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, NamedTuple

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .config import check, check_at_least
from .distributed import barrier, get_info, is_distributed, print0
from .errors import CheckpointError, ConfigError, InputError
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
    ema: float | None = None  # decay of an EMA of the trained weights, which evaluate and are saved (null/0: off)

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
        check(self.ema is None or (isinstance(self.ema, (int, float)) and 0 <= self.ema < 1), "ema",
              "be in [0, 1) or null (0 and null: off)", self.ema)


@dataclass
class TrainLoop:
    """The training loop's keys, at ``train.*`` in every training task (a task subclasses it to add its own). A run
    lasts ``max_steps`` optimiser steps when set (the last epoch cut short), else ``epochs`` passes over the data."""

    seed: int = 0  # random seed (weights, data order, augmentation)
    epochs: int | None = 10  # passes over the training data (max_steps, when set, decides instead)
    max_steps: int | None = None  # the run's optimiser steps, as papers count them (null: epochs decide)
    batch_size: int = 128  # examples per optimiser step (global, across ranks)
    accum_steps: int = 1  # each rank's share of a batch runs as this many micro-batches (less memory, same step)
    grad_checkpointing: bool = False  # recompute activations in the backward pass (less memory)
    log_every: int = 0  # optimiser steps between step records in metrics.jsonl (0: none; epoch runs log each epoch)

    def __post_init__(self) -> None:
        check(self.epochs is None or (isinstance(self.epochs, int) and self.epochs >= 1), "epochs",
              "be >= 1 or null (max_steps decides)", self.epochs)
        check(self.max_steps is None or (isinstance(self.max_steps, int) and self.max_steps >= 1), "max_steps",
              "be >= 1 or null (epochs decide)", self.max_steps)
        check(self.epochs is not None or self.max_steps is not None, "epochs", "be set when max_steps is null",
              self.epochs)
        for key in ("batch_size", "accum_steps"):
            check_at_least(key, getattr(self, key), 1)
        check_at_least("log_every", self.log_every, 0)

    def total_steps(self, steps_per_epoch: int | None) -> int:
        """The run's optimiser steps: ``max_steps``, or every batch of every epoch."""
        if self.max_steps:
            return self.max_steps
        if steps_per_epoch is None:
            raise ConfigError("train.max_steps: set it (this task streams its data, so epochs cannot end the run)")
        return self.epochs * steps_per_epoch


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


RESUMABLE_CHANGES = ("log_every", "keep_last", "checkpoint_every", "grad_checkpointing", "distributed")  # train.*


def check_resumable(output_dir: str | Path, resume: str | None, config: Any) -> None:
    """Before a run writes anything: ``resume=auto`` into an ``output_dir`` that holds a run's checkpoints continues
    that run only with its settings, the ``train.*`` and ``optim.*`` keys of its config.json (all but
    :data:`RESUMABLE_CHANGES`, which change no step). Other settings would restart the schedule mid-run and
    overwrite its results, so they are a ConfigError naming the keys that differ and how to start a new run."""
    from .config import to_dict

    folder = Path(output_dir)
    saved = folder / "config.json"
    if resume != "auto" or not CheckpointManager(folder).all() or not saved.is_file():
        return
    earlier, now = json.loads(saved.read_text()), json.loads(json.dumps(to_dict(config)))
    differ = [f"{block}.{key} {json.dumps(earlier.get(block, {}).get(key, '(unset)'))} -> {json.dumps(value)}"
              for block in ("train", "optim") for key, value in now[block].items()
              if key not in RESUMABLE_CHANGES and earlier.get(block, {}).get(key, "(unset)") != value]
    if differ:
        raise ConfigError(f"output_dir={folder} holds a run with other settings ({', '.join(differ)}); nothing "
                          "was changed: rerun with its settings to resume it, or start a new run with another "
                          "output_dir (or resume=null, which overwrites this one)")


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


# -- the training loop -----------------------------------------------------------------------------------------------
class Batch(NamedTuple):
    """This rank's share of one global batch: model inputs, each (b, ...) and split along dim 0 into micro-batches,
    and their targets ((b, ...), or None when the loss reads none)."""

    inputs: tuple[torch.Tensor, ...]
    targets: torch.Tensor | None = None


@dataclass
class TrainTask:
    """What a task hands :func:`fit`: what trains, its data and its loss; the loop does the rest. A run by epochs
    gives ``epoch_batches`` and ``steps_per_epoch``; a run by ``max_steps`` over an endless source gives ``stream``."""

    module: nn.Module  # the trained modules as one nn.Module (unwrapped): optimised, checkpointed, averaged (EMA)
    forward: Callable[..., Any]  # (wrapped module, *micro-batch inputs) -> outputs
    loss_sum: Callable[[Any, Any], torch.Tensor]  # (outputs, micro-batch targets) -> the micro-batch's summed loss
    stand_in: Callable[[], tuple[torch.Tensor, ...]] | None = None  # one example's inputs for an empty micro-batch
    epoch_batches: Callable[[int, int], Iterable[Batch]] | None = None  # (epoch, n) -> the epoch's first n batches
    steps_per_epoch: int = 0  # global batches in an epoch (runs by epochs)
    stream: Callable[[int], Iterable[Batch]] | None = None  # step -> the batches from that step on (runs by steps)
    terms: Callable[[Any], int] = len  # how many terms a micro-batch's targets add to the global batch's mean loss
    lr_scale: Callable[[str], float] | None = None  # per-parameter learning-rate factor by name (None: all 1)
    clip_groups: list[list[nn.Parameter]] | None = None  # each clipped to grad_clip on its own (None: all together)
    wrap: Callable[[nn.Module], nn.Module] = wrap_ddp  # DDP (or FSDP) around the module under torchrun
    lr_figures: dict[str, float] = field(default_factory=dict)  # other peak rates to log as the schedule scales them
    step_figures: Callable[[], dict[str, float]] | None = None  # more entries of a step record (loss terms, ...)
    after_step: Callable[[int, int], dict[str, float]] | None = None  # (step, total) -> figures to log (evaluation)
    checkpoint_every: int = 0  # runs by steps: steps between checkpoints (and one at the end)


@dataclass
class Optimisation:
    """The loop's state besides the module: the wrapped module, optimiser, schedule, EMA, this epoch's gradient
    norms (total, before clipping)."""

    wrapped: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    ema: WeightEma | None
    grad_norms: list[float] = field(default_factory=list)


def fit(task: TrainTask, loop: TrainLoop, optim: OptimConfig, output_dir: str | Path, resume: str | None,
        checkpoints: CheckpointManager | None = None) -> list[dict[str, float]]:
    """Train ``task`` over the run's steps not yet done (resuming from ``resume`` exactly): per global batch
    :func:`optimiser_step`; a step record every ``train.log_every`` steps; by epochs, an epoch record and a
    checkpoint after each epoch, by steps one every ``task.checkpoint_every``. With ``optim.ema`` the module ends
    holding the EMA weights. Returns the history: ``{"epoch", "train_loss"}`` per epoch, or the step records."""
    checkpoints = checkpoints or CheckpointManager(output_dir, keep_last=2)
    total = loop.total_steps(None if task.stream else task.steps_per_epoch)
    epochs = 1 if task.stream else math.ceil(total / task.steps_per_epoch)
    wrapped = task.wrap(task.module)  # before the optimiser: FSDP replaces the parameters
    optimizer = build_optimizer(task.module, optim, task.lr_scale)
    scheduler = build_scheduler(optimizer, optim, total)
    run = Optimisation(wrapped, optimizer, scheduler, WeightEma(task.module, optim.ema) if optim.ema else None)
    if optim.warmup_steps > total / 2:
        print0(f"warning: optim.warmup_steps={optim.warmup_steps} covers more than half of the run's {total} steps: "
               "the learning rate peaks late and barely decays", file=sys.stderr)
    state = checkpoints.restore(resume, lambda s: load_training_state(task.module, run, s))
    step, first_epoch = (int(state["step"]), int(state["epoch"])) if state else (0, 0)
    history = json.loads(state["history"]) if state else []
    if state:
        where = f"step {step} of {total}" if task.stream else f"epoch {first_epoch} of {epochs}"
        print0(f"resuming from {where}", file=sys.stderr)
    logger = MetricLogger(output_dir, enabled=get_info().is_main, total_steps=total)
    for epoch in range(first_epoch, epochs):
        task.module.train()
        run.grad_norms, losses = [], []
        batches = task.stream(step) if task.stream else \
            task.epoch_batches(epoch, min(task.steps_per_epoch, total - epoch * task.steps_per_epoch))
        for batch in itertools.islice(batches, total - step):
            losses.append(optimiser_step(task, run, batch, loop.accum_steps, optim.grad_clip))
            step += 1
            if loop.log_every and (step % loop.log_every == 0 or step == total):
                record = {"loss": losses[-1], **schedule_figures(run, optim, task.lr_figures),
                          **({"grad_norm": run.grad_norms[-1]} if run.grad_norms else {}),
                          **(task.step_figures() if task.step_figures else {})}
                logger.log(step, record, samples=loop.batch_size * loop.log_every)
                history += [{"step": step, **record}] if task.stream else []
            figures = task.after_step(step, total) if task.after_step else None
            if figures:
                logger.log(step, figures)
            if task.checkpoint_every and (step % task.checkpoint_every == 0 or step == total):
                save_training_state(checkpoints, step, epoch, task.module, run, history)
        if task.stream is None:
            kept = [loss for loss in losses if not math.isnan(loss)]  # a global batch that decoded nothing: none
            loss = float(np.mean(kept)) if kept else float("nan")
            history.append({"epoch": epoch + 1, "train_loss": loss})
            logger.log(step, {"epoch": epoch + 1, "train_loss": loss, **epoch_figures(run, optim, task.lr_figures)})
            save_training_state(checkpoints, step, epoch + 1, task.module, run, history)
    logger.close()
    if run.ema:
        run.ema.copy_to(task.module)
    return history


def optimiser_step(task: TrainTask, run: Optimisation, batch: Batch, accum_steps: int, grad_clip: float) -> float:
    """One optimiser step on this rank's share of a global batch, in ``accum_steps`` micro-batches whose gradients
    add up before the step, which therefore equals one step over their union. The loss is the mean over the whole
    global batch whatever the shares' sizes: each micro-batch's summed loss scaled by world size / the global
    batch's terms (DDP then averages over ranks). An empty micro-batch runs ``task.stand_in`` and counts zero, so
    every rank runs the same passes; a global batch with no term at all takes no step (nan). Returns the mean."""
    parts = torch.tensor_split(torch.arange(len(batch.inputs[0])), accum_steps)
    micro = [micro_batch(task, batch, part, accum_steps) for part in parts]
    count = torch.tensor([float(sum(task.terms(targets) for _, targets in micro))])
    if is_distributed():
        dist.all_reduce(count)
    scale = get_info().world_size / max(count.item(), 1.0)
    run.optimizer.zero_grad(set_to_none=True)
    loss_total = 0.0
    for i, (inputs, targets) in enumerate(micro):
        no_sync = getattr(run.wrapped, "no_sync", None)  # DDP: reduce gradients once, after the last
        with nullcontext() if i == len(micro) - 1 or no_sync is None else no_sync():
            loss_sum = task.loss_sum(task.forward(run.wrapped, *inputs), targets)
            (loss_sum * scale).backward()
        loss_total += loss_sum.item()
    totals = torch.tensor([loss_total])
    if is_distributed():
        dist.all_reduce(totals)
    if count.item() == 0:
        return float("nan")
    groups = task.clip_groups or [list(task.module.parameters())]
    norms = [torch.nn.utils.clip_grad_norm_(group, grad_clip) for group in groups]
    run.grad_norms.append(float(norms[0] if len(norms) == 1 else torch.stack(norms).square().sum().sqrt()))
    run.optimizer.step()
    run.scheduler.step()
    if run.ema:
        run.ema.update(task.module)
    return totals[0].item() / count.item()


def micro_batch(task: TrainTask, batch: Batch, part: torch.Tensor, accum_steps: int) -> tuple[tuple, Any]:
    """(inputs, targets) of the micro-batch of rows ``part``: the batch itself when there is one micro-batch, the
    task's stand-in input (with no targets' rows) when ``part`` is empty."""
    targets = None if batch.targets is None else batch.targets[part]
    if len(part) == 0 and task.stand_in is not None:
        return task.stand_in(), targets
    if accum_steps == 1:
        return batch.inputs, batch.targets
    return tuple(x[part] for x in batch.inputs), targets


def schedule_figures(run: Optimisation, optim: OptimConfig, lr_figures: dict[str, float]) -> dict[str, float]:
    """The learning rate now, and each of ``lr_figures``' peak rates (name -> peak) scaled alike."""
    factor = run.scheduler.get_last_lr()[0] / run.optimizer.param_groups[0]["initial_lr"]
    return {"lr": optim.lr * factor, **{name: peak * factor for name, peak in lr_figures.items()}}


def epoch_figures(run: Optimisation, optim: OptimConfig, lr_figures: dict[str, float]) -> dict[str, float]:
    """What an epoch record shows beside the loss: the learning rates now, the mean total gradient norm before
    clipping and the share of steps that clipping scaled down."""
    figures = schedule_figures(run, optim, lr_figures)
    if run.grad_norms:
        figures["grad_norm"] = float(np.mean(run.grad_norms))
        figures["clipped"] = float(np.mean([n > optim.grad_clip for n in run.grad_norms]))
    return figures


def is_fsdp(module: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


def save_training_state(checkpoints: CheckpointManager, step: int, epoch: int, module: nn.Module, run: Optimisation,
                        history: list[dict[str, float]]) -> None:
    """Checkpoint ``step`` (rank 0 writes; under FSDP every rank gathers the full state first): module,
    optimiser, schedule, EMA, epochs done and the history so far."""
    if is_fsdp(module):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        model_state, optim_state = get_state_dict(module, run.optimizer, options=options)
    else:
        model_state, optim_state = module.state_dict(), run.optimizer.state_dict()
    if get_info().is_main:
        extra = {"ema": run.ema.state_dict()} if run.ema else {}
        checkpoints.save(step, {"model": model_state, "optimizer": optim_state, "scheduler": run.scheduler.state_dict(),
                                "epoch": epoch, "history": json.dumps(history), **extra})
    barrier()


def load_training_state(module: nn.Module, run: Optimisation, state: dict[str, Any]) -> None:
    """The inverse of :func:`save_training_state` (strict: every key must fit)."""
    if is_fsdp(module):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        set_state_dict(module, run.optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"],
                       options=StateDictOptions(full_state_dict=True, strict=True))
    else:
        module.load_state_dict(state["model"])
        run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    if run.ema:
        if "ema" not in state:
            raise KeyError("the checkpoint has no EMA weights (written with optim.ema off)")
        run.ema.load_state_dict(state["ema"])

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
