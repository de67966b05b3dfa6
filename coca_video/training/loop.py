"""The one training loop (:func:`fit`): a task hands it a :class:`TrainTask` (its module, its batches, its forward
and loss); the loop owns the epoch, the micro-batch step, clipping, schedule, EMA, logging, checkpoints and exact
resume, nanoGPT-style, top to bottom."""

from __future__ import annotations

import itertools
import json
import math
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple

import numpy as np
import torch
from torch import nn

from ..distributed import barrier, get_info, is_distributed, print0, sum_over_ranks
from .checkpoints import CheckpointManager
from .optim import OptimConfig, TrainLoop, WeightEma, build_optimizer, build_scheduler


def wrap_ddp(module: nn.Module) -> nn.Module:
    """``module`` in DistributedDataParallel under torchrun (on this rank's GPU when there is one); itself otherwise."""
    if not is_distributed():
        return module
    device_ids = [torch.cuda.current_device()] if torch.cuda.is_available() else None
    return nn.parallel.DistributedDataParallel(module, device_ids=device_ids)



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
    validate: Callable[[], dict[str, float]] | None = None  # held-out figures ({"val_top1": ...}), every eval_every
    # epochs, or steps in a run by steps
    best: str = ""  # the entry of validate's figures that picks checkpoints/best.pt ("-val_loss": lower is better)


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
    checkpoint after each epoch, by steps one every ``task.checkpoint_every``. ``task.validate`` runs every
    ``train.eval_every`` epochs (by steps: steps, with a checkpoint there) and after the last; its figures join the
    epoch's record (by steps: a record of their own), and the checkpoint of the record best by ``task.best`` is kept
    as ``checkpoints/best.pt`` (chosen from the history, so a resumed run keeps a straight run's best). With
    ``optim.ema`` the module ends holding the EMA weights. Returns the history: ``{"epoch", "train_loss"}`` (and the
    validation's figures) per epoch, or the step records (and the validations' ``{"step", ...}``)."""
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
            validated = task.stream is not None and task.validate is not None and loop.validates_after(step, total)
            if validated:
                figures = task.validate()
                logger.log(step, figures)
                history += [{"step": step, **figures}]
            if validated or (task.checkpoint_every and (step % task.checkpoint_every == 0 or step == total)):
                save_training_state(checkpoints, step, epoch, task.module, run, history)
            if validated and get_info().is_main and best_record(history, task.best) is history[-1]:
                checkpoints.keep_as_best(checkpoints.all()[-1])
        if task.stream is None:
            kept = [loss for loss in losses if not math.isnan(loss)]  # a global batch that decoded nothing: none
            record = {"epoch": epoch + 1, "train_loss": float(np.mean(kept)) if kept else float("nan")}
            if task.validate and loop.validates_after(epoch + 1, epochs):
                record |= task.validate()
            history.append(record)
            logger.log(step, {**record, **epoch_figures(run, optim, task.lr_figures)})
            save_training_state(checkpoints, step, epoch + 1, task.module, run, history)
            if get_info().is_main and best_record(history, task.best) is history[-1]:
                checkpoints.keep_as_best(checkpoints.all()[-1])
    logger.close()
    if run.ema:
        run.ema.copy_to(task.module)
    return history


def best_record(history: list[dict[str, float]], best: str) -> dict[str, float] | None:
    """The record of ``history`` with the best value of ``best`` (the highest; ``-key``: the lowest), the first of
    equals; None when no record has it (nothing validated yet)."""
    key, sign = (best[1:], -1.0) if best.startswith("-") else (best, 1.0)
    scored = [(sign * h[key], -i) for i, h in enumerate(history) if key and not math.isnan(h.get(key, math.nan))]
    return history[-max(scored)[1]] if scored else None


def best_epoch(history: list[dict[str, float]], best: str) -> int | None:
    """The epoch (1-based) of ``history`` with the best value of ``best`` (see :func:`best_record`), or None."""
    record = best_record(history, best)
    return None if record is None else int(record["epoch"])


def best_validation(history: list[dict[str, float]], best: str) -> dict[str, Any]:
    """For metrics.json: ``{"best_epoch": 12, "best_val_top1": 56.7}`` (a run by steps: ``best_step``), the record
    whose ``best`` was best (its weights are ``checkpoints/best.pt``); empty when nothing was validated
    (``train.eval_every: 0``, a linear probe)."""
    record = best_record(history, best)
    if record is None:
        return {}
    unit, key = ("epoch" if "epoch" in record else "step"), best.lstrip("-")
    return {f"best_{unit}": int(record[unit]), f"best_{key}": record[key]}


def optimiser_step(task: TrainTask, run: Optimisation, batch: Batch, accum_steps: int, grad_clip: float) -> float:
    """One optimiser step on this rank's share of a global batch, in ``accum_steps`` micro-batches whose gradients
    add up before the step, which therefore equals one step over their union. The loss is the mean over the whole
    global batch whatever the shares' sizes: each micro-batch's summed loss scaled by world size / the global
    batch's terms (DDP then averages over ranks). An empty micro-batch runs ``task.stand_in`` and counts zero, so
    every rank runs the same passes; a global batch with no term at all takes no step (nan). Returns the mean."""
    parts = torch.tensor_split(torch.arange(len(batch.inputs[0])), accum_steps)
    micro = [micro_batch(task, batch, part, accum_steps) for part in parts]
    count = sum_over_ranks(torch.tensor([float(sum(task.terms(targets) for _, targets in micro))]))
    scale = get_info().world_size / max(count.item(), 1.0)
    run.optimizer.zero_grad(set_to_none=True)
    loss_total = 0.0
    for i, (inputs, targets) in enumerate(micro):
        no_sync = getattr(run.wrapped, "no_sync", None)  # DDP: reduce gradients once, after the last
        with nullcontext() if i == len(micro) - 1 or no_sync is None else no_sync():
            loss_sum = task.loss_sum(task.forward(run.wrapped, *inputs), targets)
            (loss_sum * scale).backward()
        loss_total += loss_sum.item()
    totals = sum_over_ranks(torch.tensor([loss_total]))
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
