"""Caption finetuning: the captioning loss alone on video-text pairs (the CoCa paper finetunes captioning so),
in VideoCoCa's "LiT" setting by default: the image encoder frozen, the poolers and the text decoder trained.

    coca-video finetune-captions --config configs/captioning/synthetic_finetune.yaml source.captions=clips/captions.csv
    coca-video finetune-captions --videos MSRVTT/videos --msrvtt-data MSRVTT_data.json \\
        --msrvtt-split train_list_full.txt output_dir=runs/ft
    coca-video captioning --model runs/ft/model --videos MSRVTT/videos --msrvtt-data MSRVTT_data.json

Inputs are captioning's (``source.*``, :func:`coca_video.data.retrieval.load_set`): a (video, caption) CSV, several rows a video
being several captions, or MSR-VTT, every video with all its sentences (a video-id list such as
``train_list_full.txt`` picks the training split).
Every frame goes through the image encoder; the generative pooler reads all frames' tokens (``caption.source:
all_frames``, VideoCoCa's input) or the middle frame's, and the multimodal decoder learns the caption by teacher
forcing (mean next-token cross-entropy over the global batch's non-pad tokens). An epoch takes every video once with
one of its captions, drawn per (seed, epoch, video), so any number of processes draws the same.
``temporal_embedding: true`` first gives the model a temporal position embedding (one vector a frame, zero at the start,
:mod:`coca_video.model.frame_time`) on the frame tokens the generative pooler reads, trained with the poolers and kept
in the model folder, so a caption can tell "red, then blue" from "blue, then red" (all frames only).
``train.freeze`` names the groups that do not train (``image_encoder``, ``poolers``, ``text``: the unimodal text
decoder and the token embedding, ``decoder``: the multimodal decoder and its vocabulary head). With the encoder
frozen its tokens come from the probe's feature cache (:mod:`coca_video.data.feature_cache`: encoded once, read
every epoch); trained, fresh TSN-sampled clips are decoded every epoch. Schedule, EMA, gradient accumulation,
DDP under torchrun and exact resume (``resume=auto``) are the shared loop's (:func:`coca_video.training.fit`).
Outputs in ``output_dir``: ``model/``, a checkpoint folder that ``score --model`` and ``captioning --model`` load
(with the EMA weights when ``optim.ema`` is set), config.json, metrics.jsonl, metrics.json (the loss per epoch and
the protocol) and checkpoints/.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import to_dict
from ..data.feature_cache import FeatureCache
from ..data.retrieval import RetrievalSet, load_set
from ..data.video import ClipSampling, VideoItem, decode_loader
from ..distributed import barrier, batch_shards, init_distributed, print0
from ..engines.feature_fill import fill_cache
from ..errors import DataError
from ..io import atomic_write_text, check_output_dir
from ..model import CoCa, get_tokenizer, save_pretrained, tokenizer_files
from ..runtime import autocast, load_model
from ..scoring import caption_source_tokens
from ..training import Batch, TrainTask, best_validation, check_resumable, fit
from ..training.curves import plot_curves
from ..transforms import ClipAugmentConfig, ImageTransform, clip_train_transform, image_transform
from .captioning import CAPTION_SOURCES, references_by_video
from .finetune_captions_config import (FREEZE_GROUPS, CaptionTrainConfig,  # noqa: F401 -- the keys' home
                                       FinetuneCaptionsConfig)


def run(cfg: FinetuneCaptionsConfig) -> dict[str, Any]:
    """Train on the pairs (resuming if asked), validating every ``train.eval_every`` epochs, write
    ``output_dir/model`` and the loss history."""
    output = check_output_dir(cfg.output_dir)
    check_resumable(output, cfg.resume, cfg)
    info = init_distributed()
    torch.manual_seed(cfg.train.seed)
    dataset = load_set(cfg.source, "finetune-captions", every_sentence=True)
    train_videos, val_videos = split_videos(cfg, dataset)
    print0(f"{dataset.split}: {len(dataset.videos)} videos, {len(dataset.captions)} captions; "
           f"{len(train_videos)} train, {len(val_videos)} validate")
    model = load_model(cfg.model, training=True)
    if cfg.temporal_embedding:
        model.add_frame_time(cfg.decode.num_frames)  # zero: the model starts out as it was
    output.mkdir(parents=True, exist_ok=True)
    if info.is_main:
        atomic_write_text(output / "config.json", json.dumps(to_dict(cfg), indent=2) + "\n")
    tokenizer = get_tokenizer(cfg.model.name)
    pairs = CaptionPairs(cfg, model, train_videos, "train")
    task = caption_task(cfg, model, pairs, tokenizer)
    validation = CaptionPairs(cfg, model, val_videos, "val") if val_videos else None
    if validation is not None:
        task = replace(task, validate=lambda: validation_loss(cfg, task.module, validation, tokenizer),
                       best="-val_loss")
        before = task.validate()["val_loss"]  # the model as loaded, before any step (or checkpoint)
        print0(f"validation loss before finetuning: {before:.4g}", file=sys.stderr)
    history = fit(task, cfg.train, cfg.optim, output, cfg.resume)
    model.eval()
    result = {"train_loss": history[-1]["train_loss"], "model": str(output / "model")}
    if validation is not None:
        result |= {"val_loss_before": before, **best_validation(history, "-val_loss")}
    if info.is_main:
        save_pretrained(model, output / "model", tokenizer_files(cfg.model.name), runs_with=trained_to_run(cfg))
        metrics = {**result, "history": history, "protocol": protocol(cfg, dataset, pairs, validation, model)}
        atomic_write_text(output / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        plot_curves(output, history, "val_loss", "validation loss")
        summary = f"; validation loss {before:.4g} -> {result['best_val_loss']:.4g} (best epoch " \
                  f"{result['best_epoch']}: checkpoints/best.pt)" if "best_val_loss" in result else ""
        print(f"training loss {history[0]['train_loss']:.4g} -> {history[-1]['train_loss']:.4g}{summary} -> "
              f"{output / 'model'}")
    barrier()
    return result


def split_videos(cfg: FinetuneCaptionsConfig,
                 dataset: RetrievalSet) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(training, validation) videos, each with its reference captions: the validation set ``val`` names, or
    ``val_holdout`` of the source's videos (at least one; drawn with ``train.seed``) held out of training."""
    references = references_by_video(dataset)
    if cfg.val is not None:
        val_set = load_set(cfg.val, "finetune-captions val", every_sentence=True)
        return references, references_by_video(val_set)
    if cfg.val_holdout == 0:
        return references, {}
    held = min(max(1, round(cfg.val_holdout * len(dataset.videos))), len(dataset.videos) - 1)  # one trains
    if held == 0:
        print0(f"warning: {dataset.split}: one video, none to hold out: no validation (give val=...)",
               file=sys.stderr)
        return references, {}
    chosen = set(np.random.default_rng(cfg.train.seed).permutation(len(dataset.videos))[:held].tolist())
    split = [{v: references[v] for i, v in enumerate(dataset.videos) if (i in chosen) == is_val} for is_val in (0, 1)]
    return split[0], split[1]


def freeze_groups(model: CoCa, groups: tuple[str, ...]) -> None:
    """In place: the parameters of ``groups`` (see :data:`FREEZE_GROUPS`) stop taking gradients, the other groups'
    take them; the logit scale never does (the loss is captioning's alone: see also :func:`stop_unreached`)."""
    model.requires_grad_(False)
    for group, attributes in FREEZE_GROUPS.items():
        for attribute in attributes:
            module = getattr(model, attribute)
            if module is not None and group not in groups:
                module.requires_grad_(True)


class CaptionTrainee(nn.ModuleDict):
    """The modules the captioning loss reads, in one ``nn.Module`` DDP can wrap (the encoder only when it trains;
    frozen, its tokens come from the cache). Forward: encoder tokens (B, T*N, C) or (B, N, C), or preprocessed
    frames (B, T, 3, S, S) when the encoder is in, and caption ids (B, L) -> (B, L-1, V) teacher-forced logits."""

    def __init__(self, model: CoCa, with_encoder: bool, num_frames: int, source: str) -> None:
        parts = {"image_pooling": model.image_pooling, "text": model.text, "decoder": model.decoder}
        if model.frame_time is not None:
            parts["frame_time"] = model.frame_time
        if model.frame_space is not None:  # a videoqa folder's spatial table: it trains with the poolers too
            parts["frame_space"] = model.frame_space
        if model.caption_head is not None:
            parts["caption_head"] = model.caption_head
        if with_encoder:
            parts["image_encoder"] = model.image_encoder
        super().__init__(parts)
        object.__setattr__(self, "coca", model)  # not a submodule: its parameters are registered above
        self.with_encoder, self.num_frames, self.source = with_encoder, num_frames, source

    def forward(self, inputs: torch.Tensor, text_ids: torch.Tensor) -> torch.Tensor:
        if self.with_encoder:
            frame_tokens = self["image_encoder"](inputs.flatten(0, 1))  # (B*T, N, C)
            inputs = frame_tokens.unflatten(0, inputs.shape[:2]).flatten(1, 2)  # (B, T*N, C)
        tokens, frames = caption_source_tokens(inputs, self.num_frames, self.source)
        return self.coca.teacher_forced_caption_logits(tokens, text_ids, frames)


class CaptionPairs:
    """Videos and their captions (training's or validation's); with the encoder frozen, their tokens from the feature
    cache (``rows``: the videos that decoded; ``failed``: (path, reason) of those that did not)."""

    def __init__(self, cfg: FinetuneCaptionsConfig, model: CoCa, references: dict[str, list[str]], name: str) -> None:
        self.frozen_encoder = "image_encoder" in cfg.train.freeze
        self.items = [VideoItem(video) for video in references]
        self.references = list(references.values())
        self.cache: FeatureCache | None = None
        self.rows, self.failed = np.arange(len(self.items)), []
        if self.frozen_encoder:
            sampling = ClipSampling(cfg.decode.num_frames, mode=cfg.decode.sampling)
            self.cache = fill_cache(Path(cfg.output_dir) / "feature_cache", self.items, model, cfg.model, sampling,
                                    cfg.decode, name)
            self.rows = np.array(sorted(self.cache.done))
            self.failed = [(self.items[i].path, reason) for i, reason in sorted(self.cache.failed.items())]
        if len(self.rows) == 0:
            raise DataError(f"{cfg.source.captions or cfg.source.videos}: no {name} video could be decoded")


def caption_task(cfg: FinetuneCaptionsConfig, model: CoCa, pairs: CaptionPairs, tokenizer: Callable) -> TrainTask:
    """What the shared loop trains: the captioning loss of :class:`CaptionTrainee` over cached tokens (encoder
    frozen) or fresh clips, in ``train.accum_steps`` micro-batches under autocast. A micro-batch's loss is its summed
    next-token cross-entropy over the non-pad labels, its terms those labels."""
    pad_id, device, frames, vision = model.cfg.text.pad_id, cfg.model.device, cfg.decode.num_frames, model.cfg.vision
    freeze_groups(model, cfg.train.freeze)
    model.set_grad_checkpointing(cfg.train.grad_checkpointing)
    trainee = CaptionTrainee(model, not pairs.frozen_encoder, frames, cfg.caption.source)
    input_shape = (frames * model.image_encoder.num_tokens, vision.width) if pairs.frozen_encoder else \
        (frames, 3, vision.image_size, vision.image_size)  # (T*N, C) tokens or (T, 3, S, S) frames
    stand_in = lambda: (torch.zeros(1, *input_shape), torch.full((1, 2), pad_id))  # noqa: E731
    stop_unreached(trainee, torch.zeros(1, *input_shape), torch.tensor([[model.cfg.text.sot_id,
                                                                         model.cfg.text.eot_id]]))
    transform = None if pairs.frozen_encoder else clip_train_transform(model, ClipAugmentConfig())
    sampling = ClipSampling(cfg.decode.num_frames, mode="train")  # TSN: decoded fresh each epoch (encoder trained)

    def epoch_batches(epoch: int, steps: int) -> Iterator[Batch]:
        batches = batch_shards(len(pairs.rows), cfg.train.batch_size, seed=cfg.train.seed * 1000 + epoch)[:steps]
        for inputs, rows in epoch_inputs(cfg, pairs, transform, sampling, batches, epoch, input_shape):
            ids = caption_ids(cfg, pairs, tokenizer, pad_id, rows, epoch)  # (b, L)
            yield Batch((inputs, ids), ids[:, 1:].to(device))

    def forward(wrapped: nn.Module, inputs: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        with autocast(device, cfg.model.precision):
            return wrapped(inputs.to(device), ids.to(device))

    def loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:  # (b, L-1, V), (b, L-1)
        if len(labels) == 0:
            return logits.float().sum() * 0.0
        return F.cross_entropy(logits.transpose(1, 2).float(), labels, ignore_index=pad_id, reduction="sum")

    return TrainTask(trainee, forward, loss_sum, stand_in=stand_in, epoch_batches=epoch_batches,
                     steps_per_epoch=math.ceil(len(pairs.rows) / cfg.train.batch_size),
                     terms=lambda labels: int((labels != pad_id).sum()),
                     lr_scale=lr_scale(cfg))


def lr_scale(cfg: FinetuneCaptionsConfig) -> Callable[[str], float]:
    """Each trained parameter's learning rate over ``optim.lr``: ``temporal_lr_scale`` for the position tables (the
    temporal one, and a spatial one a videoqa folder brings), 1 for the others."""
    return lambda name: cfg.temporal_lr_scale if name.startswith(("frame_time.", "frame_space.")) else 1.0


def epoch_inputs(cfg: FinetuneCaptionsConfig, pairs: CaptionPairs, transform: ImageTransform | None,
                 sampling: ClipSampling, batches: list[list[int]], epoch: int,
                 input_shape: tuple[int, ...]) -> Iterator[tuple[torch.Tensor, np.ndarray | list[int]]]:
    """(inputs, their video rows) of this rank's share of every global batch: cached tokens (b, T*N, C), or clips
    decoded with ``sampling`` (b, T, 3, S, S) with the encoder training."""
    if pairs.cache is not None:
        for batch in batches:
            rows = pairs.rows[batch]
            yield pairs.cache.read(rows, 0), rows  # (b, T*N, C)
        return
    loader = decode_loader(pairs.items, transform, cfg.decode, sampling, cfg.train.seed, batches=batches,
                           epoch=epoch, model_device=cfg.model.device)
    for batch in loader:
        clips = torch.zeros(0, *input_shape) if batch.frames is None else \
            transform.normalise(batch.frames[:, 0], cfg.model.device)  # (b, T, 3, S, S)
        yield clips, batch.indices


def caption_ids(cfg: FinetuneCaptionsConfig, pairs: CaptionPairs, tokenizer: Callable, pad_id: int,
                rows: np.ndarray | list[int], epoch: int) -> torch.Tensor:
    """(b, L) ids of one caption per video row, drawn per (seed, epoch, row), cut after the longest."""
    chosen = [refs[np.random.default_rng([cfg.train.seed, epoch, int(row)]).integers(len(refs))]
              for row, refs in ((row, pairs.references[row]) for row in rows)]
    return tokenized(tokenizer, chosen, pad_id)


def tokenized(tokenizer: Callable, captions: list[str], pad_id: int) -> torch.Tensor:
    """(b, L) ids of ``captions``, cut after the longest (causal: the trailing pads cut change no logit of a real
    token)."""
    ids = tokenizer(captions) if captions else torch.zeros(0, 2, dtype=torch.long)
    longest = int((ids != pad_id).sum(1).max()) if len(ids) else 2
    return ids[:, :longest]


@torch.no_grad()
def validation_loss(cfg: FinetuneCaptionsConfig, trainee: CaptionTrainee, pairs: CaptionPairs,
                    tokenizer: Callable) -> dict[str, float]:
    """``{"val_loss"}``: the mean next-token cross-entropy (teacher forcing, over non-pad tokens) of every reference
    caption of every validation video that decoded, on cached tokens (encoder frozen) or clips decoded with the
    evaluation's sampling through the encoder as it is now. Every rank computes it whole (the same number)."""
    pad_id, device, coca = trainee.coca.cfg.text.pad_id, cfg.model.device, trainee.coca
    size = coca.cfg.vision.image_size
    input_shape = (cfg.decode.num_frames, 3, size, size)  # (T, 3, S, S): only for a batch that decoded nothing
    batches = [list(range(i, min(i + cfg.train.batch_size, len(pairs.rows))))
               for i in range(0, len(pairs.rows), cfg.train.batch_size)]
    sampling = ClipSampling(cfg.decode.num_frames, mode=cfg.decode.sampling)
    was_training, total, count = trainee.training, 0.0, 0
    trainee.eval()
    for inputs, rows in epoch_inputs(cfg, pairs, image_transform(coca), sampling, batches, 0, input_shape):
        if len(inputs) == 0:  # nothing in the batch decoded
            continue
        references = [pairs.references[int(row)] for row in rows]
        for j in range(max((len(refs) for refs in references), default=0)):  # the j-th reference of each video
            keep = [k for k, refs in enumerate(references) if j < len(refs)]
            ids = tokenized(tokenizer, [references[k][j] for k in keep], pad_id).to(device)  # (b, L)
            with autocast(device, cfg.model.precision):
                logits = trainee(inputs[keep].to(device), ids)  # (b, L-1, V)
            total += F.cross_entropy(logits.transpose(1, 2).float(), ids[:, 1:], ignore_index=pad_id,
                                     reduction="sum").item()
            count += int((ids[:, 1:] != pad_id).sum())
    trainee.train(was_training)
    return {"val_loss": total / max(count, 1)}


def stop_unreached(trainee: CaptionTrainee, inputs: torch.Tensor, text_ids: torch.Tensor) -> None:
    """In place: trainable parameters the captioning loss never reaches (the contrastive pooler and projection, the
    text CLS token and its head) stop taking gradients, found by one backward pass on a stand-in input. DDP needs
    every trained parameter to get a gradient, and AdamW would otherwise decay weights that nothing trains."""
    device = next(trainee.parameters()).device
    trainee.coca.zero_grad(set_to_none=True)
    trainee(inputs.to(device), text_ids.to(device)).float().sum().backward()
    for param in trainee.parameters():
        if param.requires_grad and param.grad is None:
            param.requires_grad_(False)
    trainee.coca.zero_grad(set_to_none=True)


def trained_to_run(cfg: FinetuneCaptionsConfig) -> dict[str, dict[str, Any]]:
    """What the model folder records for the commands that load it: the caption block (its source is what the pooler
    was trained to read), and the frames and sampling of training."""
    return {"caption": to_dict(cfg.caption),
            "decode": {"num_frames": cfg.decode.num_frames, "sampling": cfg.decode.sampling}}


def temporal_protocol(model: CoCa) -> str | None:
    """How the model's multimodal path knows frame order, for the protocol: its temporal embedding, or None."""
    if model.frame_time is None:
        return None
    frames = model.frame_time.embedding.shape[0]
    trained = "trained with the poolers" if model.frame_time.embedding.requires_grad else "frozen with the poolers"
    return f"one learned vector a frame ({frames} frames, resampled to other counts), added before the " \
           f"generative pooler; {trained}"


def protocol(cfg: FinetuneCaptionsConfig, dataset: RetrievalSet, pairs: CaptionPairs,
             validation: CaptionPairs | None, model: CoCa) -> dict[str, Any]:
    """What was trained on and how, so the model folder's captions are never read without their conditions."""
    trained = sorted(g for g in FREEZE_GROUPS if g not in cfg.train.freeze)
    return {"model": cfg.model.name, "checkpoint": cfg.model.pretrained or cfg.model.name,
            "split": dataset.split, "train_videos": len(pairs.rows), "captions": len(dataset.captions),
            "captions_from": dataset.references,
            "failed_videos": pairs.failed, "validation": validation_protocol(cfg, validation),
            "caption_source": CAPTION_SOURCES[cfg.caption.source],
            "frames_per_video": cfg.decode.num_frames, "trained": trained, "frozen": sorted(cfg.train.freeze),
            "encoder_tokens": "feature cache" if pairs.frozen_encoder else "decoded every epoch (TSN train)",
            "loss": "captioning only: mean next-token cross-entropy over the global batch's non-pad tokens",
            "temporal_embedding": temporal_protocol(model),
            "temporal_lr": cfg.optim.lr * cfg.temporal_lr_scale if model.frame_time is not None else None,
            "epochs": cfg.train.epochs, "batch_size": cfg.train.batch_size, "lr": cfg.optim.lr,
            "weights": f"ema {cfg.optim.ema}" if cfg.optim.ema else "last step"}


def validation_protocol(cfg: FinetuneCaptionsConfig, validation: CaptionPairs | None) -> dict[str, Any] | None:
    """Which videos validated and how often, for the protocol (None: no validation)."""
    if validation is None:
        return None
    source = "val" if cfg.val is not None else f"{cfg.val_holdout:g} of the source's videos held out (seed " \
                                                f"{cfg.train.seed})"
    return {"videos": len(validation.rows), "captions": sum(len(validation.references[r]) for r in validation.rows),
            "from": source, "failed_videos": validation.failed, "every_epochs": cfg.train.eval_every,
            "loss": "mean next-token cross-entropy of every reference caption (teacher forcing)"}
