"""Image-text pretraining of CoCa: lambda_con * contrastive + lambda_cap * captioning from one forward pass.

    coca-video pretrain --config configs/pretrain/tiny_synthetic.yaml train.max_steps=100 output_dir=runs/x
    torchrun --nproc_per_node 2 pipelines/pretrain.py --config ... train.batch_size=256

Runs on one process or under torchrun (DDP; FSDP with ``train.distributed=fsdp``). ``train.batch_size`` is the
global batch; the contrastive loss sees all of it through a differentiable all-gather. ``resume=auto`` continues
from the newest checkpoint in ``output_dir`` exactly (model, optimiser, schedule, step, data position, RNG).
"""

from __future__ import annotations

import itertools
import json
import math
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from ..config import to_dict
from ..data.image_text import build_loader
from ..distributed import DistInfo, barrier, init_distributed, is_distributed, mean_over_ranks, print0
from ..errors import DataError
from ..io import atomic_write_text, check_output_dir
from ..model import CoCa, CoCaLoss, save_pretrained
from ..runtime import autocast, load_model
from ..training import (Batch, CheckpointManager, TrainTask, architecture_id, best_validation, check_resumable, fit,
                        wrap_ddp)
from ..training.curves import plot_curves
from ..transforms import image_transform
from .pretrain_config import EvalConfig, PretrainConfig, TokenizerConfig, TrainConfig  # noqa: F401 -- the keys' home


def run(cfg: PretrainConfig) -> dict[str, Any]:
    """Train, checkpoint, and write ``output_dir/model`` (a coca-video checkpoint folder). Returns final metrics."""
    check_output_dir(cfg.output_dir)
    check_resumable(cfg.output_dir, cfg.resume, cfg)
    info = init_distributed()
    output = Path(cfg.output_dir)
    torch.manual_seed(cfg.train.seed)
    model = load_model(cfg.model, training=True).train()
    tokenizer, tokenizer_files = prepare_tokenizer(cfg, model, output, info)
    model.set_grad_checkpointing(cfg.train.grad_checkpointing)
    if info.is_main:
        atomic_write_text(output / "config.json", json.dumps(to_dict(cfg), indent=2) + "\n")
    checkpoints = CheckpointManager(output, cfg.train.keep_last, architecture_id(cfg.model.name, model.cfg))
    task = pretrain_task(cfg, model, tokenizer, info)
    before = task.validate() if task.validate else {}  # the model as built, before any step (or checkpoint)
    if before:
        print0(f"validation loss before training: {before['val_loss']:.4g}", file=sys.stderr)
    history = fit(task, cfg.train, cfg.optim, output, cfg.resume, checkpoints)
    if info.is_main:
        save_pretrained(model, output / "model", tokenizer_files)
        plot_curves(output, history, "val_loss", "validation loss")
    return summary(history, before)


def summary(history: list[dict[str, float]], before: dict[str, float]) -> dict[str, float]:
    """What a run returns: the last step record's figures, the last validation's, the validation loss before
    training and the best validated step (its weights: checkpoints/best.pt)."""
    steps = [h for h in history if "loss" in h]
    validations = [h for h in history if "val_loss" in h]
    result = {k: v for k, v in (steps[-1] if steps else {}).items() if k != "step"}
    if validations:
        result |= {k: v for k, v in validations[-1].items() if k != "step"}
        result |= {"val_loss_before": before["val_loss"], **best_validation(history, "-val_loss")}
    return result


def pretrain_task(cfg: PretrainConfig, model: CoCa, tokenizer: Callable, info: DistInfo) -> TrainTask:
    """What the shared loop trains: lambda_con * contrastive + lambda_cap * captioning of one forward pass over the
    stream of image-text pairs (resumed at the step it is asked for). The loss is already the global batch's mean
    (the contrastive term sees the gathered batch): one term per rank, which DDP averages."""
    loss_fn = CoCaLoss(model.cfg.text.pad_id, cfg.train.contrastive_weight, cfg.train.caption_weight)
    device = next(model.parameters()).device
    last: dict[str, Any] = {"skipped": 0}  # the last step's loss terms, the samples skipped so far

    def stream(start_step: int) -> Iterator[Batch]:
        loader = build_loader(cfg.data, image_transform(model, train=True), tokenizer, cfg.train.batch_size,
                              info.rank, info.world_size, cfg.train.seed, start_step, model.cfg.vision.image_size)
        for batch in loader:
            last["skipped"] += batch["skipped"]
            yield Batch((batch["images"], batch["text"]))

    def forward(wrapped: nn.Module, images: torch.Tensor, text: torch.Tensor) -> dict[str, torch.Tensor]:
        with autocast(device, cfg.model.precision):
            last["losses"] = loss_fn(wrapped(images.to(device), text.to(device)))
        return last["losses"]

    def step_figures() -> dict[str, float]:
        return {**loss_terms(last["losses"]), "logit_scale": model.scaled_logit_scale().item(),
                "skipped": last["skipped"]}

    batches = validation_batches(cfg, model, tokenizer, info) if cfg.train.eval_every else []

    def validate() -> dict[str, float]:
        zero_shot = evaluate_zero_shot(model, tokenizer, cfg.eval) if cfg.data.kind == "synthetic" else {}
        return {**validation_loss(model, loss_fn, batches, cfg.model.precision), **zero_shot}

    return TrainTask(model, forward, lambda losses, _: losses["loss"], stream=stream, terms=lambda _: 1,
                     wrap=lambda module: wrap_model(module, cfg.train.distributed), step_figures=step_figures,
                     checkpoint_every=cfg.train.checkpoint_every, validate=validate if batches else None,
                     best="-val_loss")


def validation_batches(cfg: PretrainConfig, model: CoCa, tokenizer: Callable,
                       info: DistInfo) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """This rank's share of the held-out (images, text) batches every validation reads: ``eval.val_pairs`` pairs
    (rounded up to whole batches of ``train.batch_size``) of the synthetic world's test split (pairs training never
    draws), or of ``data.val_path``; none for a table or shards without one."""
    if cfg.data.kind != "synthetic" and not cfg.data.val_path:
        return []
    data = replace(cfg.data, workers=0, path=cfg.data.val_path)
    loader = build_loader(data, image_transform(model, train=True), tokenizer, cfg.train.batch_size, info.rank,
                          info.world_size, cfg.train.seed, 0, model.cfg.vision.image_size, synthetic_split="test")
    count = math.ceil(cfg.eval.val_pairs / cfg.train.batch_size)
    return [(batch["images"], batch["text"]) for batch in itertools.islice(loader, count)]


@torch.no_grad()
def validation_loss(model: CoCa, loss_fn: CoCaLoss, batches: list[tuple[torch.Tensor, torch.Tensor]],
                    precision: str) -> dict[str, float]:
    """``{"val_loss", "val_contrastive_loss", "val_caption_loss"}``: the training loss and its two terms on the
    held-out batches, each batch's (the contrastive term compares a whole global batch, as in training), averaged."""
    was_training, device = model.training, next(model.parameters()).device
    model.eval()
    sums = torch.zeros(3)
    for images, text in batches:
        with autocast(device, precision):
            losses = loss_fn(model(images.to(device), text.to(device)))
        sums += torch.stack([losses[k].detach().float().cpu() for k in ("loss", "contrastive_loss", "caption_loss")])
    model.train(was_training)
    loss, contrastive, caption = (sums / len(batches)).tolist()
    return {"val_loss": loss, "val_contrastive_loss": contrastive, "val_caption_loss": caption}


def prepare_tokenizer(cfg: PretrainConfig, model: CoCa, output: Path, info: DistInfo) -> tuple[Callable, list[Path]]:
    """The model's tokenizer and the files to ship with it; trains one (rank 0) when the architecture needs its own."""
    from ..model import get_tokenizer
    from ..tokenizer import HFTokenizer, default_bpe_path

    if model.cfg.tokenizer == "clip_bpe":
        return get_tokenizer(cfg.model.name), [default_bpe_path()]
    source = Path(cfg.model.name)
    path = source / "tokenizer.json" if (source / "tokenizer.json").is_file() else output / "tokenizer.json"
    if info.is_main and not path.is_file():
        output.mkdir(parents=True, exist_ok=True)
        HFTokenizer.train(training_captions(cfg), model.cfg.text.vocab_size, path, model.cfg.text.context_length)
    barrier()
    tokenizer = HFTokenizer(path, model.cfg.text.context_length)
    ids = (tokenizer.pad_token_id, tokenizer.sot_token_id, tokenizer.eot_token_id)
    expected = (model.cfg.text.pad_id, model.cfg.text.sot_id, model.cfg.text.eot_id)
    if ids != expected or tokenizer.vocab_size > model.cfg.text.vocab_size:
        raise DataError(f"{path}: special ids (pad, sot, eot) {ids} / vocab {tokenizer.vocab_size} do not fit the "
                         f"model's {expected} / {model.cfg.text.vocab_size}")
    return tokenizer, [path]


def training_captions(cfg: PretrainConfig) -> list[str]:
    """Captions to train a tokenizer on: the first ``tokenizer.corpus_size`` of the data source."""
    from ..data.image_text import ImageTable
    from ..data.synthetic import SyntheticImageText

    if cfg.data.kind == "table":
        table = ImageTable(cfg.data.path, cfg.data.img_key, cfg.data.caption_key)
        return [str(c) for c in table.captions[: cfg.tokenizer.corpus_size]]
    if cfg.data.kind != "synthetic":
        raise DataError("training a tokenizer needs data.kind synthetic or table; pass a model folder with one")
    pairs = SyntheticImageText(cfg.tokenizer.corpus_size, size=8, seed=cfg.train.seed)
    return [pairs.caption(i) for i in range(len(pairs))]


def wrap_model(model: CoCa, strategy: str) -> nn.Module:
    """DDP or FSDP around the model when running under torchrun; the model itself otherwise."""
    if not is_distributed():
        return model
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for block in [*model.image_encoder.vit.blocks, *model.text.layers, *model.decoder.layers]:
            fully_shard(block)
        return fully_shard(model)
    return wrap_ddp(model)


def loss_terms(losses: dict[str, torch.Tensor]) -> dict[str, float]:
    """The contrastive and captioning terms of the last step, averaged over ranks."""
    values = mean_over_ranks(torch.stack([losses[k].detach().float() for k in ("contrastive_loss", "caption_loss")]))
    con, cap = values.tolist()
    return {"contrastive_loss": con, "caption_loss": cap}


@torch.no_grad()
def evaluate_zero_shot(model: CoCa, tokenizer: Callable, cfg: EvalConfig) -> dict[str, float]:
    """Zero-shot accuracy (percent) per attribute on held-out synthetic images."""
    from ..data.synthetic import zero_shot_image_set
    from ..zero_shot import zero_shot_accuracy

    was_training = model.training
    model.eval()
    transform = image_transform(model)
    results = {}
    for attribute in cfg.attributes:
        images, labels, names = zero_shot_image_set(cfg.num_images, model.cfg.vision.image_size, seed=0,
                                                    attribute=attribute)
        batch = transform.frames(images)
        templates = synthetic_templates(attribute)
        results[f"zero_shot_{attribute}"] = zero_shot_accuracy(model, tokenizer, batch, torch.as_tensor(labels),
                                                               names, templates)
    model.train(was_training)
    return results


def synthetic_templates(attribute: str) -> tuple[str, ...]:
    """Prompts for one attribute of the synthetic world, in the language of its captions: an ensemble over the
    other attribute ("a red {}" for shapes, "a {} circle" for colours)."""
    from ..data.synthetic import COLOURS, SHAPES

    if attribute == "shape":
        return tuple(f"a {colour} {{}}" for colour in COLOURS)
    return tuple(f"a {{}} {shape}" for shape in SHAPES)
