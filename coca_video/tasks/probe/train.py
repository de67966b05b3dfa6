"""The probe's training: the head :func:`classifier_config` builds (started from a saved probe by
:func:`init_classifier`), trained by the shared loop (:func:`coca_video.training.fit`) on what :func:`frozen_task`
or :func:`finetune_task` hands it, with the finetuning recipe's pieces: the new modules' own learning rate,
layer-wise decay, per-module clipping, mixup and cutmix."""

from __future__ import annotations

import math
import re
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from ...data.actions import ActionSet
from ...data.video import ClipSampling, VideoBatch, decode_loader
from ...distributed import batch_shards, get_info
from ...errors import ConfigError, DataError
from ...model import CoCa, VideoClassifier, VideoClassifierConfig
from ...model.video_classifier import pooled_tokens_per_frame
from ...runtime import autocast
from ...training import Batch, TrainTask, classification_loss_sum, soft_targets
from ...transforms import ClipTrainTransform, clip_train_transform
from .config import ProbeConfig, ProbeOptimConfig
from .features import cached_tokens, streamed_views


def classifier_config(cfg: ProbeConfig, model: CoCa, num_classes: int) -> VideoClassifierConfig:
    """The probe's head for ``model``'s tokens as the run feeds them (pooled for a frozen run with cache=pooled)."""
    pool = cfg.probe.token_pool if cfg.mode == "frozen" and cfg.probe.cache == "pooled" else 1
    tokens_per_frame = pooled_tokens_per_frame(model.image_encoder.num_tokens, pool) if pool > 1 else \
        model.image_encoder.num_tokens
    return VideoClassifierConfig(model.cfg.vision.width, num_classes, cfg.probe.heads, cfg.decode.num_frames,
                                 tokens_per_frame, pool, cfg.probe.temporal_pos_embed, cfg.probe.spatial_pos_embed)


def init_classifier(cfg: ProbeConfig, classifier: VideoClassifier, classes: list[str]) -> None:
    """In place: zero position embeddings (``probe.pos_embed_init: zero``), then the weights of the probe folder
    ``probe.init`` when given (linear probing then finetuning: a finetuned run that starts from a frozen run's head
    starts at its accuracy). Position embeddings that probe lacks stay at zero, so they change nothing at first;
    one it has that this run has not, or another shape, class list or backbone, is refused."""
    with torch.no_grad():
        for embedding in (classifier.temporal_pos, classifier.spatial_pos):
            if embedding is not None and (cfg.probe.pos_embed_init == "zero" or cfg.probe.init):
                embedding.zero_()
    if not cfg.probe.init:
        return
    from ...model.probe_folder import load_probe

    source, info = load_probe(cfg.probe.init)
    mine, theirs = classifier.cfg, info.classifier
    where = f"probe.init={cfg.probe.init}"
    if info.kind != "attentional":
        raise ConfigError(f"{where}: a {info.kind} probe (mean embeddings) cannot start an attentional head")
    if (info.backbone, info.pretrained) != (cfg.model.name, cfg.model.pretrained):
        raise ConfigError(f"{where}: trained on model {info.backbone} (pretrained {info.pretrained}), this run "
                          f"encodes with {cfg.model.name} (pretrained {cfg.model.pretrained})")
    if info.classes != list(classes):
        raise ConfigError(f"{where}: its {len(info.classes)} classes are not this run's {len(classes)} classes in "
                          f"the same order")
    for key in ("width", "heads", "num_frames", "tokens_per_frame", "token_pool"):
        if getattr(mine, key) != getattr(theirs, key):
            hint = " (a head trained on probe.cache=pooled tokens cannot start one on full tokens)" \
                if key == "token_pool" else ""
            raise ConfigError(f"{where}: its classifier has {key}={getattr(theirs, key)}, this run's "
                              f"{getattr(mine, key)}{hint}")
    for key in ("temporal_pos_embed", "spatial_pos_embed"):
        if getattr(theirs, key) and not getattr(mine, key):
            raise ConfigError(f"{where}: it has a {key.split('_')[0]} position embedding; set probe.{key}=true")
    state = source.state_dict()
    for key in ("temporal_pos", "spatial_pos"):  # embeddings the source lacks keep this run's zeros
        if getattr(classifier, key) is not None and key not in state:
            state[key] = getattr(classifier, key).detach().clone()
    classifier.load_state_dict(state)  # strict: every other key must be the source's



def frozen_task(cfg: ProbeConfig, model: CoCa, classifier: VideoClassifier, train_set: ActionSet) -> TrainTask:
    """Pooler + classifier on the frozen encoder's tokens of view 0 of the evaluation sampling: read from the
    feature cache, or (``probe.cache: none``) decoded and encoded again every epoch, the same clips in the same
    batches (those that fail to decode drop out of their batch)."""
    model.requires_grad_(False)
    sampling = ClipSampling(cfg.decode.num_frames, mode=cfg.decode.sampling)
    cache = None if cfg.probe.cache == "none" else cached_tokens(cfg, model, train_set, sampling, "train")
    rows = np.arange(len(train_set.items)) if cache is None else np.array(sorted(cache.done))
    if len(rows) == 0:
        raise DataError(f"{cfg.data.train}: no training video could be decoded")
    labels = torch.tensor([train_set.items[i].label for i in rows])
    device = cfg.model.device
    token_shape = (cfg.decode.num_frames * model.image_encoder.num_tokens, model.cfg.vision.width)  # (T*N, C)
    first_view = lambda read, views: read(slice(0, 1))[:, 0]  # noqa: E731

    def epoch_batches(epoch: int, steps: int) -> Iterator[Batch]:
        batches = batch_shards(len(rows), cfg.train.batch_size, seed=cfg.train.seed * 1000 + epoch)[:steps]
        if cache is not None:
            for batch in batches:  # (b, T*N, C) cached memmap rows
                yield Batch((cache.read(rows[batch], 0),), labels[batch].to(device))
            return
        for indices, tokens, _ in streamed_views(cfg, model, classifier, train_set.items, sampling, first_view,
                                                 batches, epoch):
            tokens = torch.zeros(0, *token_shape) if tokens is None else tokens  # nothing decoded: an empty share
            yield Batch((tokens,), labels[np.asarray(indices, dtype=np.int64)].to(device))

    scale = head_lr_scale(cfg.optim)
    return TrainTask(classifier, lambda wrapped, tokens: wrapped(tokens.to(device)), label_smoothed(cfg),
                     stand_in=lambda: (torch.zeros(1, *token_shape),), epoch_batches=epoch_batches,
                     steps_per_epoch=math.ceil(len(rows) / cfg.train.batch_size),
                     lr_scale=None if scale == 1.0 else lambda name: scale, lr_figures=head_lr_figure(cfg.optim))


def finetune_task(cfg: ProbeConfig, model: CoCa, classifier: VideoClassifier, train_set: ActionSet) -> TrainTask:
    """Encoder + pooler + classifier on fresh TSN-sampled clips each epoch (mixed by mixup/cutmix when set), in
    ``train.accum_steps`` micro-batches under autocast; under torchrun each rank decodes its share of every batch."""
    model.set_grad_checkpointing(cfg.train.grad_checkpointing)
    model.image_encoder.set_drop_path(cfg.drop_path)
    transform = clip_train_transform(model, cfg.probe.augment)
    sampling = finetune_sampling(cfg)
    both = EncoderAndClassifier({"encoder": model.image_encoder, "classifier": classifier})
    device, rank, size = cfg.model.device, get_info().rank, model.cfg.vision.image_size
    clip_shape = (cfg.decode.num_frames, 3, size, size)  # (T, 3, S, S)

    def epoch_batches(epoch: int, steps: int) -> Iterator[Batch]:
        batches = batch_shards(len(train_set.items), cfg.train.batch_size, seed=cfg.train.seed * 1000 + epoch)
        loader = decode_loader(train_set.items, transform, cfg.decode, sampling, cfg.train.seed,
                               batches=batches[:steps], epoch=epoch, model_device=device)
        for number, batch in enumerate(loader):
            rng = np.random.default_rng([cfg.train.seed, epoch, number, rank])
            clips, targets = clips_and_targets(cfg, batch, transform, classifier.cfg.num_classes, clip_shape, rng)
            yield Batch((clips,), targets.to(device))

    def forward(wrapped: nn.Module, clips: torch.Tensor) -> torch.Tensor:
        with autocast(device, cfg.model.precision):
            return wrapped(clips.to(device))

    clip_groups = [list(model.image_encoder.parameters()), list(classifier.parameters())] \
        if cfg.optim.clip_per_module else None
    steps = math.ceil(len(train_set.items) / cfg.train.batch_size)
    return TrainTask(both, forward, label_smoothed(cfg), stand_in=lambda: (torch.zeros(1, *clip_shape),),
                     epoch_batches=epoch_batches, steps_per_epoch=steps,
                     lr_scale=finetune_lr_scale(len(model.image_encoder.vit.blocks), cfg.optim),
                     clip_groups=clip_groups, lr_figures=head_lr_figure(cfg.optim))


def label_smoothed(cfg: ProbeConfig) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The probe's summed loss of (b, classes) logits: cross-entropy smoothed by ``probe.label_smoothing``."""
    return lambda logits, targets: classification_loss_sum(logits, targets, cfg.probe.label_smoothing)


def clips_and_targets(cfg: ProbeConfig, batch: VideoBatch, transform: ClipTrainTransform, num_classes: int,
                      clip_shape: tuple[int, ...],
                      rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, 3, S, S) clips of this rank's share and their targets: (B,) labels, or (B, classes) soft targets
    of clips mixed (mixup/cutmix) within the share. Nothing decoded: (0, T, 3, S, S) and no targets."""
    if batch.frames is None:
        return torch.zeros(0, *clip_shape), batch.labels
    clips = transform.normalise(batch.frames[:, 0], cfg.model.device)  # (B, T, 3, S, S) uint8 -> fp32
    augment = cfg.probe.augment
    if augment.mixup == 0 and augment.cutmix == 0:
        return clips, batch.labels
    targets = soft_targets(batch.labels, num_classes, cfg.probe.label_smoothing)
    return mix_clips(clips, targets, augment.mixup, augment.cutmix, rng)


def finetune_sampling(cfg: ProbeConfig) -> ClipSampling:
    """The frames finetuning trains on: TSN's random frame in each segment (``probe.augment.temporal_jitter``), or
    else the evaluation's (``decode.sampling``), the frames the frozen probe trains on."""
    jitter = cfg.probe.augment.temporal_jitter
    return ClipSampling(cfg.decode.num_frames, mode="train" if jitter else cfg.decode.sampling)


def head_lr_scale(optim: ProbeOptimConfig) -> float:
    """The new modules' (pooler, position embeddings, classifier) learning rate as a multiple of ``optim.lr``."""
    return 1.0 if optim.head_lr is None else optim.head_lr / optim.lr


def head_lr_figure(optim: ProbeOptimConfig) -> dict[str, float]:
    """``{"head_lr": peak}`` for the epoch log when the new modules have their own rate."""
    return {} if optim.head_lr is None else {"head_lr": optim.head_lr}


def finetune_lr_scale(num_blocks: int, optim: ProbeOptimConfig) -> Callable[[str], float] | None:
    """Learning-rate factors over :class:`EncoderAndClassifier` names: the classifier (pooler, position embeddings,
    head) at ``head_lr / lr``, the encoder by layer-wise decay (:func:`layer_decay_scale`); None when all are 1."""
    decay, head = optim.layer_decay, head_lr_scale(optim)
    if decay == 1.0 and head == 1.0:
        return None
    encoder = layer_decay_scale(num_blocks, decay)
    return lambda name: head if name.startswith("classifier.") else encoder(name)


def layer_decay_scale(num_blocks: int, decay: float) -> Callable[[str], float]:
    """BEiT's layer-wise learning-rate decay over :class:`EncoderAndClassifier` parameter names: block i of L
    (``encoder.vit.blocks.i``) trains at ``decay^(L - i)``, the layers before the blocks (patch embedding, class
    token, position embeddings, pre-norm) at ``decay^(L + 1)``, the classifier at 1. (timm's ViT matcher files
    ``norm_pre`` with the final norm; it sits before the blocks, so here it goes with the embeddings.)"""

    def scale(name: str) -> float:
        block = re.match(r"encoder\.vit\.blocks\.(\d+)\.", name)
        if block:
            return decay ** (num_blocks - int(block[1]))
        return decay ** (num_blocks + 1) if name.startswith("encoder.") else 1.0

    return scale


def mix_clips(clips: torch.Tensor, targets: torch.Tensor, mixup: float, cutmix: float,
              rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup or cutmix (one of the two at random when both alphas are set) of each clip with its mirror in the
    batch (clip b with clip B-1-b, as timm pairs them), targets mixed by the same share. (B, T, 3, S, S) clips,
    (B, classes) soft targets. Cutmix pastes one box into every frame of the clip; its share is the box's area."""
    use_cutmix = cutmix > 0 and (mixup == 0 or rng.uniform() < 0.5)
    share = float(rng.beta(cutmix, cutmix) if use_cutmix else rng.beta(mixup, mixup))  # of the clip's own content
    partner = clips.flip(0)
    if use_cutmix:
        top, left, height, width = cutmix_box(clips.shape[-2], clips.shape[-1], share, rng)
        clips = clips.clone()
        clips[..., top:top + height, left:left + width] = partner[..., top:top + height, left:left + width]
        share = 1 - height * width / (clips.shape[-2] * clips.shape[-1])
    else:
        clips = share * clips + (1 - share) * partner
    return clips, share * targets + (1 - share) * targets.flip(0)


def cutmix_box(height: int, width: int, share: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """(top, left, h, w) of cutmix's box: sides sqrt(1 - share) of the frame's, centred uniformly, clipped."""
    cut_h, cut_w = int(height * math.sqrt(1 - share)), int(width * math.sqrt(1 - share))
    cy, cx = int(rng.integers(height)), int(rng.integers(width))
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    return top, left, bottom - top, right - left


class EncoderAndClassifier(nn.ModuleDict):
    """The finetuned modules in one ``nn.Module`` whose forward maps frames to logits, as DDP needs."""

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, S, S) preprocessed frames -> (B, classes) logits."""
        frame_tokens = self["encoder"](frames.flatten(0, 1))  # (B*T, N, C)
        return self["classifier"](frame_tokens.unflatten(0, frames.shape[:2]).flatten(1, 2))

