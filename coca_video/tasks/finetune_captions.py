"""Caption finetuning: the captioning loss alone on video-text pairs (the CoCa paper finetunes captioning so),
in VideoCoCa's "LiT" setting by default: the image encoder frozen, the poolers and the text decoder trained.

    coca-video finetune-captions --config configs/captioning/synthetic_finetune.yaml source.captions=clips/captions.csv
    coca-video finetune-captions --videos MSRVTT/videos --msrvtt-data MSRVTT_data.json \\
        --msrvtt-split train_list_full.txt output_dir=runs/ft
    coca-video captioning --model runs/ft/model --videos MSRVTT/videos --msrvtt-data MSRVTT_data.json

Inputs are captioning's (``source.*``, :func:`coca_video.data.retrieval.load_set`): a (video, caption) CSV, several rows a video
being several captions, or MSR-VTT (a video-id list such as ``train_list_full.txt`` picks the training split).
Every frame goes through the image encoder; the generative pooler reads all frames' tokens (``caption.source:
all_frames``, VideoCoCa's input) or the middle frame's, and the multimodal decoder learns the caption by teacher
forcing (mean next-token cross-entropy over the global batch's non-pad tokens). An epoch takes every video once with
one of its captions, drawn per (seed, epoch, video), so any number of processes draws the same.
``train.freeze`` names the groups that do not train (``image_encoder``, ``poolers``, ``text``: the unimodal text
decoder and the token embedding, ``decoder``: the multimodal decoder and its vocabulary head). With the encoder
frozen its tokens come from the probe's feature cache (:mod:`coca_video.data.feature_cache`: encoded once, read
every epoch); trained, fresh TSN-sampled clips are decoded every epoch. Schedule, EMA, gradient accumulation,
DDP under torchrun and exact resume (``resume=auto``) are the probe's (:class:`coca_video.training.EpochTrainer`).
Outputs in ``output_dir``: ``model/``, a checkpoint folder that ``score --model`` and ``captioning --model`` load
(with the EMA weights when ``optim.ema`` is set), config.json, metrics.jsonl, metrics.json (the loss per epoch and
the protocol) and checkpoints/.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import CaptionConfig, DecodeConfig, ModelConfig, VideoTextSource, check, check_at_least, to_dict
from ..data.feature_cache import FeatureCache, fill_cache
from ..data.retrieval import RetrievalSet, load_set
from ..data.video import ClipSampling, VideoItem, decode_loader
from ..distributed import barrier, batch_shards, init_distributed, print0
from ..errors import DataError
from ..io import atomic_write_text, check_output_dir
from ..model import CoCa, get_tokenizer, save_pretrained, tokenizer_files
from ..runtime import autocast, load_model
from ..scoring import caption_source_tokens
from ..training import EpochTrainer, OptimConfig
from ..transforms import ClipAugmentConfig, clip_train_transform
from .captioning import CAPTION_SOURCES, references_by_video

FREEZE_GROUPS = {"image_encoder": ("image_encoder",), "poolers": ("image_pooling",), "text": ("text",),
                 "decoder": ("decoder", "caption_head")}  # group -> CoCa attributes it holds


@dataclass
class CaptionTrainConfig:
    freeze: tuple[str, ...] = ("image_encoder",)  # groups that do not train: image_encoder, poolers, text, decoder
    epochs: int = 10  # passes over the training videos (each with one of its captions)
    batch_size: int = 32  # videos per optimiser step (global, across ranks)
    accum_steps: int = 1  # each rank's share of a batch runs as this many micro-batches (less memory)
    grad_checkpointing: bool = False  # recompute activations in the backward pass (less memory)
    seed: int = 0  # random seed (data order, caption draws)

    def __post_init__(self) -> None:
        unknown = [g for g in self.freeze if g not in FREEZE_GROUPS]
        check(not unknown, "freeze", f"name groups among {list(FREEZE_GROUPS)}", list(self.freeze))
        check(not {"poolers", "text", "decoder"} <= set(self.freeze), "freeze",
              "leave one of poolers, text, decoder to train", list(self.freeze))
        for key in ("epochs", "batch_size", "accum_steps"):
            check_at_least(key, getattr(self, key), 1)


@dataclass
class FinetuneCaptionsConfig:
    source: VideoTextSource = field(default_factory=VideoTextSource)  # training videos and their captions
    output_dir: str = "runs/finetune_captions"  # model/, checkpoints, logs, metrics.json
    resume: str | None = None  # "auto" or a checkpoint file
    caption: CaptionConfig = field(default_factory=lambda: CaptionConfig(source="all_frames"))  # source: trained on
    train: CaptionTrainConfig = field(default_factory=CaptionTrainConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-4, weight_decay=0.01, warmup_steps=50))
    model: ModelConfig = field(default_factory=ModelConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)

    def __post_init__(self) -> None:
        self.decode.require_clips("finetune-captions")
        check(self.optim.layer_decay == 1.0, "optim.layer_decay", "be 1.0 in caption finetuning (a probe option)",
              self.optim.layer_decay)
        check(self.optim.head_lr is None, "optim.head_lr", "be null in caption finetuning (a probe option)",
              self.optim.head_lr)
        check(self.model.precision in ("fp32", "bf16", "auto"), "model.precision", "be fp32, bf16 or auto to train",
              self.model.precision)


def run(cfg: FinetuneCaptionsConfig) -> dict[str, Any]:
    """Train on the pairs (resuming if asked), write ``output_dir/model`` and the loss history."""
    output = check_output_dir(cfg.output_dir)
    info = init_distributed()
    torch.manual_seed(cfg.train.seed)
    dataset = load_set(cfg.source, "finetune-captions")
    print0(f"{dataset.split}: {len(dataset.videos)} videos, {len(dataset.captions)} captions")
    model = load_model(cfg.model, training=True)
    output.mkdir(parents=True, exist_ok=True)
    if info.is_main:
        atomic_write_text(output / "config.json", json.dumps(to_dict(cfg), indent=2) + "\n")
    trainer = CaptionTrainer(cfg, model, dataset, get_tokenizer(cfg.model.name))
    history = trainer.fit()
    model.eval()
    result = {"train_loss": history[-1]["train_loss"], "model": str(output / "model")}
    if info.is_main:
        save_pretrained(model, output / "model", tokenizer_files(cfg.model.name))
        metrics = {**result, "history": history, "protocol": protocol(cfg, dataset, trainer)}
        atomic_write_text(output / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    barrier()
    return result


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
        tokens = caption_source_tokens(inputs, self.num_frames, self.source)
        return self.coca.teacher_forced_caption_logits(tokens, text_ids)


class CaptionTrainer(EpochTrainer):
    """Epochs of the captioning loss over the training videos: cached tokens (encoder frozen) or fresh clips."""

    def __init__(self, cfg: FinetuneCaptionsConfig, model: CoCa, dataset: RetrievalSet, tokenizer: Callable) -> None:
        super().__init__(cfg.output_dir, cfg.train.epochs, cfg.optim, 0.0, cfg.resume)
        self.cfg, self.model, self.tokenizer = cfg, model, tokenizer
        self.pad_id = model.cfg.text.pad_id
        self.frozen_encoder = "image_encoder" in cfg.train.freeze
        freeze_groups(model, cfg.train.freeze)
        model.set_grad_checkpointing(cfg.train.grad_checkpointing)
        self.trainee = CaptionTrainee(model, not self.frozen_encoder, cfg.decode.num_frames, cfg.caption.source)
        stop_unreached(self.trainee, self.stand_in_input(1), torch.tensor([[model.cfg.text.sot_id,
                                                                           model.cfg.text.eot_id]]))
        self.items = [VideoItem(video) for video in dataset.videos]
        references = references_by_video(dataset)
        self.references = [references[video] for video in dataset.videos]
        self.cache: FeatureCache | None = None
        if self.frozen_encoder:
            sampling = ClipSampling(cfg.decode.num_frames, mode=cfg.decode.sampling)
            self.cache = fill_cache(Path(cfg.output_dir) / "feature_cache", self.items, model, cfg.model, sampling,
                                    cfg.decode, cfg.train.seed, "train")
            self.rows = np.array(sorted(self.cache.done))
            self.failed = [(self.items[i].path, reason) for i, reason in sorted(self.cache.failed.items())]
        else:
            self.rows, self.failed = np.arange(len(self.items)), []
            self.transform = clip_train_transform(model, ClipAugmentConfig())
        if len(self.rows) == 0:
            raise DataError(f"{dataset.split}: no training video could be decoded")

    def trainable(self) -> nn.Module:
        return self.trainee

    def stand_in_input(self, batch: int) -> torch.Tensor:
        """Zeros shaped as ``batch`` videos' input: encoder tokens (b, T*N, C), or frames (b, T, 3, S, S)."""
        frames, vision = self.cfg.decode.num_frames, self.model.cfg.vision
        if self.frozen_encoder:
            return torch.zeros(batch, frames * self.model.image_encoder.num_tokens, vision.width)
        return torch.zeros(batch, frames, 3, vision.image_size, vision.image_size)

    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.rows) / self.cfg.train.batch_size)

    def loss_sum(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Summed next-token cross-entropy of (b, L-1, V) logits over the non-pad labels (b, L-1)."""
        if len(targets) == 0:
            return outputs.float().sum() * 0.0
        return F.cross_entropy(outputs.transpose(1, 2).float(), targets, ignore_index=self.pad_id, reduction="sum")

    def target_count(self, targets: torch.Tensor) -> int:
        return int((targets != self.pad_id).sum())

    def caption_ids(self, rows: np.ndarray | list[int], epoch: int) -> torch.Tensor:
        """(b, L) ids of one caption per video row, drawn per (seed, epoch, row), cut after the longest."""
        chosen = [refs[np.random.default_rng([self.cfg.train.seed, epoch, int(row)]).integers(len(refs))]
                  for row, refs in ((row, self.references[row]) for row in rows)]
        ids = self.tokenizer(chosen) if chosen else torch.zeros(0, 2, dtype=torch.long)
        longest = int((ids != self.pad_id).sum(1).max()) if len(ids) else 2
        return ids[:, :longest]  # causal: the trailing pads cut change no logit of a real token

    def train_epoch(self, epoch: int) -> float:
        self.trainee.train()
        batches = batch_shards(len(self.rows), self.cfg.train.batch_size, seed=self.cfg.train.seed * 1000 + epoch)
        losses = [self.train_step(*inputs) for inputs in self.epoch_inputs(batches, epoch)]
        losses = [loss for loss in losses if not math.isnan(loss)]
        return float(np.mean(losses)) if losses else float("nan")

    def epoch_inputs(self, batches: list[list[int]], epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(inputs, caption ids) of this rank's share of every global batch: cached tokens (b, T*N, C), or
        decoded clips (b, T, 3, S, S) with the encoder training."""
        if self.cache is not None:
            for batch in batches:
                rows = self.rows[batch]
                yield self.cache.read(rows, 0), self.caption_ids(rows, epoch)  # (b, T*N, C), (b, L)
            return
        sampling = ClipSampling(self.cfg.decode.num_frames, mode="train")
        loader = decode_loader(self.items, self.transform, self.cfg.decode, sampling, self.cfg.train.seed,
                               batches=batches, epoch=epoch, model_device=self.cfg.model.device)
        for batch in loader:
            clips = self.stand_in_input(0) if batch.frames is None else \
                self.transform.normalise(batch.frames[:, 0], self.cfg.model.device)  # (b, T, 3, S, S)
            yield clips, self.caption_ids(batch.indices, epoch)

    def train_step(self, inputs: torch.Tensor, text_ids: torch.Tensor) -> float:
        """One optimiser step over this rank's share in ``accum_steps`` micro-batches (an empty one runs a stand-in
        input that contributes zero, so every rank runs the same passes)."""
        device = self.cfg.model.device
        parts = torch.tensor_split(torch.arange(len(inputs)), self.cfg.train.accum_steps)

        def forward(i: int) -> torch.Tensor:
            empty = len(parts[i]) == 0
            micro = self.stand_in_input(1) if empty else inputs[parts[i]]
            ids = torch.full((1, 2), self.pad_id) if empty else text_ids[parts[i]]
            with autocast(device, self.cfg.model.precision):
                return self.wrapped(micro.to(device), ids.to(device))

        return self.accumulated_step(forward, [text_ids[part, 1:].to(device) for part in parts])


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


def protocol(cfg: FinetuneCaptionsConfig, dataset: RetrievalSet, trainer: CaptionTrainer) -> dict[str, Any]:
    """What was trained on and how, so the model folder's captions are never read without their conditions."""
    trained = sorted(g for g in FREEZE_GROUPS if g not in cfg.train.freeze)
    return {"model": cfg.model.name, "checkpoint": cfg.model.pretrained or cfg.model.name,
            "split": dataset.split, "train_videos": len(trainer.rows), "captions": len(dataset.captions),
            "failed_videos": trainer.failed, "caption_source": CAPTION_SOURCES[cfg.caption.source],
            "frames_per_video": cfg.decode.num_frames, "trained": trained, "frozen": sorted(cfg.train.freeze),
            "encoder_tokens": "feature cache" if trainer.frozen_encoder else "decoded every epoch (TSN train)",
            "loss": "captioning only: mean next-token cross-entropy over the global batch's non-pad tokens",
            "epochs": cfg.train.epochs, "batch_size": cfg.train.batch_size, "lr": cfg.optim.lr,
            "weights": f"ema {cfg.optim.ema}" if cfg.optim.ema else "last step"}
