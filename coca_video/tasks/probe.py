"""Action recognition, the CoCa paper's video recipe: every frame through the shared image encoder, ONE learned
query attending over all spatio-temporal tokens, softmax cross-entropy.

    python pipelines/kinetics_probe.py --config configs/probe/kinetics400_frozen.yaml data.video_root=/data/k400

``mode: frozen`` trains only the pooler and classifier on tokens from a feature cache (:mod:`coca_video.data.
feature_cache`): the first epoch decodes and encodes, later epochs read the cache. Frozen training therefore uses
the evaluation sampling (``decode.sampling``: segment centres by default), the usual practice for frozen features;
``probe.cache`` stores them as fp16, int8 or 2x2-pooled tokens, and a new cache is sized against the disk first;
``probe.cache: none`` keeps no cache: every epoch decodes (in the decoding workers) and encodes the same clips again,
for machines with an accelerator and little disk (evaluation then decodes and encodes too, in any mode).
``mode: linear`` is the linear-probe baseline (CLIP's protocol, :mod:`coca_video.tasks.probe_linear`): scikit-learn
logistic regression on each clip's mean frame embedding, C chosen on a held-out share of the training split; it
caches one (1, D) embedding per view (``probe.cache: fp16``) or none.
``mode: finetune`` trains the encoder too, on fresh TSN-sampled clips every epoch, at ``optim.lr``, and the new
modules (pooler, position embeddings, classifier) at ``optim.head_lr``: one rate cannot serve both (the encoder's is
too slow for a fresh head, the head's rewrites the encoder; configs/probe/synthetic_finetune.yaml has the numbers);
``optim.clip_per_module`` clips the two's gradients apart, so the encoder's never shrink the head's steps.
``probe.init`` starts the head from a trained probe (linear probing, then finetuning); ``optim.ema`` evaluates and
saves an exponential moving average of the weights.
Under torchrun (either mode) every rank takes its share of the same global batches and the loss is the global
batch's mean, so N processes take the same steps as one; each validation video is scored by exactly one rank.
Outputs in ``output_dir``: metrics.json (top1, top5, mean_class_accuracy in percent, plus the protocol),
predictions.csv, per_class.csv, confusion.png (<= 50 classes; top confusions in metrics.json otherwise), curves.png,
and ``probe/``, the trained probe that ``coca-video score --probe`` applies to any folder.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

import numpy as np
import torch
from torch import nn

from ..config import DecodeConfig, ModelConfig, check, check_at_least, to_dict
from ..data.actions import ActionSet, load_actions, split_video_roots
from ..data.feature_cache import FeatureCache, StoredFormat, encode_clips, fill_cache
from ..data.labels import read_class_names
from ..data.video import ClipSampling, VideoBatch, VideoItem, decode_loader
from ..distributed import barrier, batch_shards, gather_objects, gather_rows, get_info, init_distributed, print0
from ..errors import ConfigError, DataError
from ..io import atomic_write_text, check_output_dir
from ..metrics import mean_class_accuracy, per_class_accuracy, topk_accuracy
from ..model import CoCa, VideoClassifier, VideoClassifierConfig, save_probe
from ..model.linear_probe import LinearProbe, LinearProbeConfig
from ..model.probe_folder import ProbeViews
from ..model.state_dict import weights_digest
from ..model.video_classifier import pooled_tokens_per_frame, view_averaged_probabilities
from ..report import ProbeResult, write_probe_outputs
from ..runtime import autocast, load_model
from ..training import EpochTrainer, OptimConfig, soft_targets
from ..transforms import ClipAugmentConfig, clip_train_transform, image_transform
from .probe_linear import LinearFitConfig, LinearSweep, fit_linear_probe, require_sklearn


@dataclass
class SyntheticActionsConfig:
    """For ``format: synthetic``: a Kinetics-layout dataset written from the synthetic world into ``video_root``
    (train.csv, validate.csv, mp4 clips), labelled by the main object's ``task`` (motion, colour or shape)."""

    task: Literal["motion", "colour", "shape"] = "motion"  # the label: the main object's motion, colour or shape
    train_videos: int = 200  # clips in the training split
    val_videos: int = 100  # clips in the evaluation split
    size: int = 64  # frame side in pixels
    seed: int = 0  # random seed of the generated clips

    def __post_init__(self) -> None:
        check_at_least("train_videos", self.train_videos, 1)
        check_at_least("val_videos", self.val_videos, 1)
        check_at_least("size", self.size, 16)  # the smallest frame the synthetic world draws its objects in


@dataclass
class ProbeDataConfig:
    format: Literal["kinetics", "mit", "list", "csv", "synthetic"] = "kinetics"  # annotation file layout
    train: str = ""  # annotation file of the training split
    val: str = ""  # annotation file of the evaluation split
    video_root: str = ""  # folder of the training videos (or of train/ and val/ folders)
    val_video_root: str | None = None  # default: video_root/{train,val}/ or {videos_train,videos_val}/ if both exist
    classes: str | None = None  # class list file or shipped list name (default: sorted labels of the training file)
    synthetic: SyntheticActionsConfig = field(default_factory=SyntheticActionsConfig)


@dataclass
class ProbeHeadConfig:
    heads: int = 8  # attention heads of the pooler's query
    temporal_pos_embed: bool = False  # learned per-frame embedding on the tokens (not in the paper)
    spatial_pos_embed: bool = False  # learned per-position embedding, shared by frames (not in the paper)
    pos_embed_init: Literal["normal", "zero"] = "normal"  # position embeddings start N(0, 1) or at 0 (AIM's rule)
    init: str | None = None  # start the pooler + classifier from this probe folder (a frozen run's output_dir/probe)
    label_smoothing: float = 0.0  # of the cross-entropy loss
    cache: Literal["fp16", "int8", "pooled", "none"] = "fp16"  # fp16|int8 (1/2 size)|pooled (1/pool^2)|none: no cache
    token_pool: int = 2  # for cache=pooled: patch tokens averaged over token_pool x token_pool squares
    cache_check: bool = True  # refuse to start a cache the disk cannot hold (+5% + 1 GB)
    augment: ClipAugmentConfig = field(default_factory=ClipAugmentConfig)  # finetune mode's training clips

    def __post_init__(self) -> None:
        check_at_least("heads", self.heads, 1)
        check(isinstance(self.label_smoothing, (int, float)) and 0 <= self.label_smoothing < 1, "label_smoothing",
              "be in [0, 1)", self.label_smoothing)
        check_at_least("token_pool", self.token_pool, 2)


@dataclass
class ProbeEvalConfig:
    temporal_views: int = 1  # clips per video at evaluation, averaged
    spatial_crops: Literal[1, 3] = 1  # crops per frame at evaluation: centre, or 3 along the long side

    def __post_init__(self) -> None:
        check_at_least("temporal_views", self.temporal_views, 1)


@dataclass
class ProbeConfig:
    mode: Literal["frozen", "finetune", "linear"] = "frozen"  # frozen backbone, finetune it too, or sklearn linear
    output_dir: str = "runs/probe"  # checkpoints, metrics, report and the probe folder
    resume: str | None = None  # "auto" or a checkpoint file
    epochs: int = 10  # passes over the training split
    max_steps: int | None = None  # the run's optimiser steps, as the paper counts them (null: epochs decide)
    batch_size: int = 128  # clips per training step (global, across ranks)
    accum_steps: int = 1  # finetune: each rank's share of a batch runs as this many micro-batches (less memory)
    grad_checkpointing: bool = False  # recompute activations in the backward pass (finetune; less memory)
    drop_path: float = 0.0  # finetune: stochastic depth of the encoder's blocks, rising linearly to this at the last
    seed: int = 0  # random seed (probe weights, data order)
    model: ModelConfig = field(default_factory=ModelConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    data: ProbeDataConfig = field(default_factory=ProbeDataConfig)
    probe: ProbeHeadConfig = field(default_factory=ProbeHeadConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=5e-4, weight_decay=0.0, warmup_steps=100))
    eval: ProbeEvalConfig = field(default_factory=ProbeEvalConfig)
    linear: LinearFitConfig = field(default_factory=LinearFitConfig)  # mode linear: the C sweep

    def __post_init__(self) -> None:
        check_at_least("epochs", self.epochs, 1)
        check(self.max_steps is None or (isinstance(self.max_steps, int) and self.max_steps >= 1), "max_steps",
              "be >= 1 or null (epochs decide)", self.max_steps)
        check(not (self.max_steps and self.mode == "linear"), "max_steps", "be null in linear mode (L-BFGS runs to "
              "linear.max_iter)", self.max_steps)
        check_at_least("batch_size", self.batch_size, 1)
        check_at_least("accum_steps", self.accum_steps, 1)
        check(isinstance(self.drop_path, (int, float)) and 0 <= self.drop_path < 1, "drop_path", "be in [0, 1)",
              self.drop_path)
        check(self.mode == "finetune" or self.drop_path == 0, "drop_path", "be 0 unless mode=finetune (the encoder "
              "does not train)", self.drop_path)
        self.decode.require_clips("probe")
        augment = self.probe.augment
        if self.mode == "frozen":  # cached tokens of the evaluation frames: nothing to augment or decay
            check(augment.mixup == 0 and augment.cutmix == 0, "probe.augment.mixup/cutmix", "be 0 in frozen mode",
                  (augment.mixup, augment.cutmix))
            check(self.optim.layer_decay == 1.0, "optim.layer_decay", "be 1.0 in frozen mode", self.optim.layer_decay)
            check(self.accum_steps == 1, "accum_steps", "be 1 in frozen mode", self.accum_steps)
        if self.mode == "linear":  # one embedding per clip, no attentional head
            check(self.probe.cache in ("fp16", "none"), "probe.cache", "be fp16 or none in linear mode (it caches "
                  "one fp16 embedding per clip)", self.probe.cache)
            check(not (self.probe.temporal_pos_embed or self.probe.spatial_pos_embed or self.probe.init),
                  "probe.temporal_pos_embed/spatial_pos_embed/init", "be off in linear mode (no attentional head)",
                  (self.probe.temporal_pos_embed, self.probe.spatial_pos_embed, self.probe.init))


def run(cfg: ProbeConfig) -> dict[str, Any]:
    """Train the probe (resuming if asked), evaluate with multi-view testing, write every output."""
    if cfg.decode.sampling == "linspace" and cfg.eval.temporal_views > 1:
        raise ConfigError("decode.sampling=linspace takes the same frames for every view: use eval.temporal_views=1 "
                          "or decode.sampling=eval")
    if cfg.mode == "linear":
        require_sklearn()  # before any video is decoded
    check_output_dir(cfg.output_dir)
    info = init_distributed()
    torch.manual_seed(cfg.seed)
    output = Path(cfg.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    if info.is_main:  # rank 0 writes a synthetic dataset; the others wait for it
        train_set, val_set = load_sets(cfg)
    barrier()
    if not info.is_main:
        train_set, val_set = load_sets(cfg)
    print0(train_set.summary("train"), val_set.summary("val"), sep="\n")
    model = load_model(cfg.model, training=cfg.mode == "finetune")
    if info.is_main:
        atomic_write_text(output / "config.json", json.dumps(to_dict(cfg), indent=2) + "\n")
    sweep, history = None, []
    if cfg.mode == "linear":
        classifier, sweep = train_linear(cfg, model, train_set)
    else:
        classifier = VideoClassifier(classifier_config(cfg, model, len(train_set.classes)))
        init_classifier(cfg, classifier, train_set.classes)
        classifier = classifier.to(cfg.model.device)
        trainer = FrozenTrainer(cfg, model, classifier, train_set) if cfg.mode == "frozen" else \
            FinetuneTrainer(cfg, model, classifier, train_set)
        history = trainer.fit()
    result = evaluate(cfg, model, classifier, val_set)
    if info.is_main:
        write_probe_outputs(output, result, train_set.classes, history,
                            protocol(cfg, train_set, val_set, result, sweep))
        save_probe(output / "probe", classifier, train_set.classes, cfg.model.name, cfg.model.pretrained,
                   finetuned=model if cfg.mode == "finetune" else None, image_size=model.cfg.vision.image_size,
                   eval_views=ProbeViews(cfg.eval.temporal_views, cfg.eval.spatial_crops, cfg.decode.sampling))
    barrier()
    return {"top1": result.top1, "top5": result.top5, "mean_class_accuracy": result.mean_class_accuracy}


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
    from ..model.probe_folder import load_probe

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


def load_sets(cfg: ProbeConfig) -> tuple[ActionSet, ActionSet]:
    """The training and evaluation sets (unlabelled training rows dropped); the evaluation set uses the training
    set's class order."""
    data, fmt = cfg.data, cfg.data.format
    if fmt == "synthetic":
        from ..data.synthetic import write_kinetics_format

        s = data.synthetic
        train_csv, val_csv = write_kinetics_format(data.video_root, s.train_videos, s.val_videos, s.task, s.size,
                                                   cfg.decode.num_frames, s.seed)
        data = ProbeDataConfig(**{**vars(data), "format": "kinetics", "train": str(train_csv), "val": str(val_csv)})
        fmt = "kinetics"
    classes = read_class_names(data.classes) if data.classes else None
    train_root, val_root = split_video_roots(data.video_root, data.val_video_root)
    if data.val_video_root is None and train_root != Path(data.video_root):
        print0(f"videos: training from {train_root}, evaluation from {val_root}")
    train = load_actions(fmt, data.train, train_root, classes)
    train.items = [item for item in train.items if item.label >= 0]
    val = load_actions(fmt, data.val, val_root, train.classes)
    return train, val


def cached_tokens(cfg: ProbeConfig, model: CoCa, action_set: ActionSet, sampling: ClipSampling,
                  name: str) -> FeatureCache:
    """``action_set``'s encoder tokens (mode linear: mean embeddings) under ``sampling``, from the run's feature
    cache (filled where missing)."""
    digest = weights_digest(model.image_encoder) if cfg.mode == "finetune" else None
    fmt: StoredFormat = {"frozen": cfg.probe.cache, "finetune": "fp16", "linear": "embedding"}[cfg.mode]
    return fill_cache(Path(cfg.output_dir) / "feature_cache", action_set.items, model, cfg.model, sampling,
                      cfg.decode, cfg.seed, name, digest, fmt, cfg.probe.token_pool, cfg.probe.cache_check)


def cache_name(cfg: ProbeConfig) -> str:
    """How the frozen tokens were stored, for the protocol: fp16, int8, pooled2, embedding (linear) or none
    (finetune, or probe.cache=none)."""
    if cfg.mode == "finetune" or cfg.probe.cache == "none":
        return "none"
    if cfg.mode == "linear":
        return "embedding"
    return f"pooled{cfg.probe.token_pool}" if cfg.probe.cache == "pooled" else cfg.probe.cache


def streamed_views(cfg: ProbeConfig, model: CoCa, probe: VideoClassifier | LinearProbe, items: list[VideoItem],
                   sampling: ClipSampling, reduce: Callable[[Callable[[slice], torch.Tensor], int], torch.Tensor],
                   batches: list[list[int]] | None = None,
                   epoch: int = 0) -> Iterator[tuple[list[int], torch.Tensor | None, list[tuple[int, str]]]]:
    """No cache (``probe.cache: none``): decode ``items`` in ``decode.workers`` worker processes (this rank's share,
    or the given ``batches`` of indices), encode each view as the cache fill would (:func:`encode_clips`), and yield
    per batch (dataset indices, ``reduce(read_views, number of views)``, failures as (index, reason)), where
    ``read_views(slice)`` gives those views' probe inputs: tokens (B, v, T*N, C) for an attentional probe, mean
    embeddings (B, v, D) for a linear one."""
    transform = image_transform(model)
    if batches is None:  # decode.batch_size clips at a time, each rank its share
        info, size = get_info(), cfg.decode.batch_size
        batches = [list(range(start, min(start + size, len(items))))[info.rank::info.world_size]
                   for start in range(0, len(items), size)]
    loader = decode_loader(items, transform, cfg.decode, sampling, cfg.seed, batches=batches, epoch=epoch,
                           model_device=cfg.model.device)
    for batch in loader:
        errors = [(index, reason) for index, _, reason in batch.errors]
        if batch.frames is None:
            yield [], None, errors
            continue

        def read(views: slice, frames: torch.Tensor = batch.frames) -> torch.Tensor:
            clips = frames[:, views]  # (B, v, T, 3, S, S) uint8
            fmt = "embedding" if isinstance(probe, LinearProbe) else "fp16"
            encoded = encode_clips(model, transform, clips, cfg.model, fmt)  # (B, v, T*N, C) or (B, v, 1, D)
            return encoded[..., 0, :] if fmt == "embedding" else encoded

        yield batch.indices, reduce(read, batch.frames.shape[1]), errors


# -- training ------------------------------------------------------------------------------------------------------
class FrozenTrainer(EpochTrainer):
    """Pooler + classifier on the frozen encoder's tokens of view 0 of the evaluation sampling: read from the
    feature cache, or (``probe.cache: none``) decoded and encoded again every epoch, the same clips in the same
    batches."""

    def __init__(self, cfg: ProbeConfig, model: CoCa, classifier: VideoClassifier, train_set: ActionSet) -> None:
        super().__init__(cfg.output_dir, cfg.epochs, cfg.optim, cfg.probe.label_smoothing, cfg.resume,
                         cfg.max_steps)
        self.cfg, self.classifier, self.model, self.train_set = cfg, classifier, model, train_set
        model.requires_grad_(False)
        self.sampling = ClipSampling(cfg.decode.num_frames, mode=cfg.decode.sampling)
        self.cache = None if cfg.probe.cache == "none" else cached_tokens(cfg, model, train_set, self.sampling, "train")
        self.rows = np.arange(len(train_set.items)) if self.cache is None else np.array(sorted(self.cache.done))
        if len(self.rows) == 0:
            raise DataError(f"{cfg.data.train}: no training video could be decoded")
        self.labels = torch.tensor([train_set.items[i].label for i in self.rows])

    def trainable(self) -> nn.Module:
        return self.classifier

    def lr_scale(self) -> Callable[[str], float] | None:
        scale = head_lr_scale(self.cfg.optim)
        return None if scale == 1.0 else lambda name: scale

    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.rows) / self.cfg.batch_size)

    def train_epoch(self, epoch: int) -> float:
        self.classifier.train()
        losses = []
        device = self.cfg.model.device
        shuffled = batch_shards(len(self.rows), self.cfg.batch_size, seed=self.cfg.seed * 1000 + epoch)
        batches = self.epoch_batches(shuffled, epoch)
        for rows, tokens in self.token_batches(batches, epoch):  # (B, T*N, C) in batch order
            logits = self.wrapped(tokens.to(device))
            losses.append(self.step(logits, self.labels[rows].to(device)))
        losses = [loss for loss in losses if not math.isnan(loss)]  # a global batch that decoded nothing
        return float(np.mean(losses)) if losses else float("nan")

    def token_batches(self, batches: list[list[int]], epoch: int) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """(positions in ``rows``, their view-0 tokens (B, T*N, C)) for each batch: cached memmap rows, or freshly
        decoded and encoded clips (those that fail to decode drop out of their batch)."""
        if self.cache is not None:
            for batch in batches:
                yield np.asarray(batch, dtype=np.int64), self.cache.read(self.rows[batch], 0)
            return
        first_view = lambda read, views: read(slice(0, 1))[:, 0]  # noqa: E731
        for indices, tokens, _ in streamed_views(self.cfg, self.model, self.classifier, self.train_set.items,
                                                 self.sampling, first_view, batches, epoch):
            if tokens is None:  # nothing decoded: an empty share, so every rank still takes the step
                encoder = self.model.image_encoder
                tokens = torch.zeros(0, self.cfg.decode.num_frames * encoder.num_tokens, self.model.cfg.vision.width)
            yield np.asarray(indices, dtype=np.int64), tokens


def finetune_sampling(cfg: ProbeConfig) -> ClipSampling:
    """The frames finetuning trains on: TSN's random frame in each segment (``probe.augment.temporal_jitter``), or
    else the evaluation's (``decode.sampling``), the frames the frozen probe trains on."""
    jitter = cfg.probe.augment.temporal_jitter
    return ClipSampling(cfg.decode.num_frames, mode="train" if jitter else cfg.decode.sampling)


class FinetuneTrainer(EpochTrainer):
    """Encoder + pooler + classifier on fresh TSN-sampled clips each epoch; under torchrun each rank decodes its
    share of every global batch."""

    def __init__(self, cfg: ProbeConfig, model: CoCa, classifier: VideoClassifier, train_set: ActionSet) -> None:
        super().__init__(cfg.output_dir, cfg.epochs, cfg.optim, cfg.probe.label_smoothing, cfg.resume,
                         cfg.max_steps)
        self.cfg, self.model, self.train_set = cfg, model, train_set
        model.set_grad_checkpointing(cfg.grad_checkpointing)
        model.image_encoder.set_drop_path(cfg.drop_path)
        self.transform = clip_train_transform(model, cfg.probe.augment)
        self.num_classes = classifier.cfg.num_classes
        self.sampling = finetune_sampling(cfg)
        self.both = EncoderAndClassifier({"encoder": model.image_encoder, "classifier": classifier})

    def trainable(self) -> nn.Module:
        return self.both

    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.train_set.items) / self.cfg.batch_size)

    def lr_scale(self) -> Callable[[str], float] | None:
        return finetune_lr_scale(len(self.model.image_encoder.vit.blocks), self.cfg.optim)

    def clip_groups(self) -> list[list[nn.Parameter]]:
        """``optim.clip_per_module``: the encoder's gradients and the new modules' each clipped on their own, so the
        encoder's (several times the head's in norm) never shrink the head's steps; with the encoder at lr 0 the
        run then takes the frozen probe's steps. Otherwise all together (timm's and the paper's global norm)."""
        if not self.cfg.optim.clip_per_module:
            return super().clip_groups()
        return [list(self.both["encoder"].parameters()), list(self.both["classifier"].parameters())]

    def train_epoch(self, epoch: int) -> float:
        self.both.train()
        batches = self.epoch_batches(batch_shards(len(self.train_set.items), self.cfg.batch_size,
                                                  seed=self.cfg.seed * 1000 + epoch), epoch)
        loader = decode_loader(self.train_set.items, self.transform, self.cfg.decode, self.sampling, self.cfg.seed,
                               batches=batches, epoch=epoch, model_device=self.cfg.model.device)
        losses = []
        for number, batch in enumerate(loader):
            rng = np.random.default_rng([self.cfg.seed, epoch, number, self.info.rank])
            loss = self.train_step(*self.clips_and_targets(batch, rng))
            if not math.isnan(loss):
                losses.append(loss)
        return float(np.mean(losses)) if losses else float("nan")

    def clips_and_targets(self, batch: VideoBatch, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, 3, S, S) clips of this rank's share and their targets: (B,) labels, or (B, classes) soft targets
        of clips mixed (mixup/cutmix) within the share. Nothing decoded: (0, T, 3, S, S) and no targets."""
        if batch.frames is None:
            size = self.model.cfg.vision.image_size
            return torch.zeros(0, self.cfg.decode.num_frames, 3, size, size), batch.labels
        clips = self.transform.normalise(batch.frames[:, 0], self.cfg.model.device)  # (B, T, 3, S, S) uint8 -> fp32
        augment = self.cfg.probe.augment
        if augment.mixup == 0 and augment.cutmix == 0:
            return clips, batch.labels
        targets = soft_targets(batch.labels, self.num_classes, self.cfg.probe.label_smoothing)
        return mix_clips(clips, targets, augment.mixup, augment.cutmix, rng)

    def train_step(self, clips: torch.Tensor, targets: torch.Tensor) -> float:
        """One optimiser step over (B, T, 3, S, S) clips in ``accum_steps`` micro-batches (an empty one runs a
        stand-in clip that contributes zero, so every rank runs the same passes)."""
        device, parts = self.cfg.model.device, torch.tensor_split(torch.arange(len(clips)), self.cfg.accum_steps)

        def forward(i: int) -> torch.Tensor:
            micro = clips[parts[i]] if len(parts[i]) else torch.zeros(1, *clips.shape[1:])
            with autocast(device, self.cfg.model.precision):
                return self.wrapped(micro.to(device))

        return self.accumulated_step(forward, [targets[part].to(device) for part in parts])


def head_lr_scale(optim: OptimConfig) -> float:
    """The new modules' (pooler, position embeddings, classifier) learning rate as a multiple of ``optim.lr``."""
    return 1.0 if optim.head_lr is None else optim.head_lr / optim.lr


def finetune_lr_scale(num_blocks: int, optim: OptimConfig) -> Callable[[str], float] | None:
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


# -- evaluation ----------------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(cfg: ProbeConfig, model: CoCa, classifier: VideoClassifier | LinearProbe,
             val_set: ActionSet) -> ProbeResult:
    """Multi-view testing: softmax probabilities averaged over temporal views x spatial crops, classified one view
    of a batch at a time. Videos that fail to decode are excluded and listed, never replaced."""
    sampling = ClipSampling(cfg.decode.num_frames, mode=cfg.decode.sampling, temporal_views=cfg.eval.temporal_views,
                            spatial_crops=cfg.eval.spatial_crops)
    model.eval()
    classifier.eval()
    rows, probs, failed = (streamed_probabilities if cfg.probe.cache == "none" else cached_probabilities)(
        cfg, model, classifier, val_set, sampling)
    labels = torch.tensor([val_set.items[i].label for i in rows], dtype=torch.long)
    predictions = probs.argmax(-1)
    top = topk_accuracy(probs, labels, (1, 5))
    return ProbeResult(top["top1"], top["top5"], mean_class_accuracy(predictions, labels),
                       per_class_accuracy(predictions, labels, len(val_set.classes)), probs, labels,
                       [val_set.items[i].path for i in rows],
                       [(val_set.items[i].path, reason) for i, reason in sorted(failed.items())])


def cached_probabilities(cfg: ProbeConfig, model: CoCa, classifier: VideoClassifier | LinearProbe,
                         val_set: ActionSet, sampling: ClipSampling) -> tuple[list[int], torch.Tensor, dict[int, str]]:
    """(rows evaluated, their (rows, classes) probabilities, failures row -> reason) from the feature cache."""
    cache = cached_tokens(cfg, model, val_set, sampling, "val")
    info = get_info()
    rows = sorted(cache.done)
    mine = rows[info.rank::info.world_size]  # each video scored by exactly one rank, gathered in row order
    linear = isinstance(classifier, LinearProbe)
    probabilities = [torch.empty(0, len(val_set.classes))]
    for start in range(0, len(mine), cfg.batch_size):
        batch = mine[start:start + cfg.batch_size]

        def read(views: slice, rows: list[int] = batch) -> torch.Tensor:  # (B, v, T*N, C) or (B, v, D)
            values = cache.read(rows, views).to(cfg.model.device)
            return values[..., 0, :] if linear else values

        probabilities.append(view_averaged_probabilities(classifier, read, cache.tokens.shape[1]).cpu())
    return rows, gather_rows(torch.cat(probabilities), len(rows)), cache.failed


def streamed_probabilities(cfg: ProbeConfig, model: CoCa, classifier: VideoClassifier | LinearProbe,
                           val_set: ActionSet, sampling: ClipSampling) -> tuple[list[int], torch.Tensor,
                                                                                dict[int, str]]:
    """The same as :func:`cached_probabilities` with no cache: every view decoded and encoded now."""
    average = lambda read, views: view_averaged_probabilities(classifier, read, views).cpu()  # noqa: E731
    return gathered(streamed_views(cfg, model, classifier, val_set.items, sampling, average),
                    torch.empty(0, len(val_set.classes)))


def gathered(parts: Iterator[tuple[list[int], torch.Tensor | None, list[tuple[int, str]]]],
             empty: torch.Tensor) -> tuple[list[int], torch.Tensor, dict[int, str]]:
    """:func:`streamed_views` results of every rank united: (indices in order, their rows, failures)."""
    indices, values, failed = [], [empty], {}
    for batch_indices, batch_values, errors in parts:
        indices += batch_indices
        values += [] if batch_values is None else [batch_values.cpu()]
        failed.update(dict(errors))
    everyone = gather_objects((indices, torch.cat(values), failed))
    indices = [i for part in everyone for i in part[0]]
    order = np.argsort(indices, kind="stable")
    rows = torch.cat([part[1] for part in everyone])[torch.from_numpy(order)] if indices else empty
    return sorted(indices), rows, {k: v for part in everyone for k, v in part[2].items()}


# -- the linear baseline -------------------------------------------------------------------------------------------
def train_linear(cfg: ProbeConfig, model: CoCa, train_set: ActionSet) -> tuple[LinearProbe, LinearSweep]:
    """CLIP's linear probe on the mean embeddings of view 0 of the evaluation sampling (the frozen probe's clips),
    cached (``probe.cache: fp16``) or not (``none``); see :mod:`coca_video.tasks.probe_linear`."""
    model.requires_grad_(False)
    model.eval()
    probe_cfg = LinearProbeConfig(model.cfg.embed_dim, len(train_set.classes), cfg.decode.num_frames)
    sampling = ClipSampling(cfg.decode.num_frames, mode=cfg.decode.sampling)
    if cfg.probe.cache == "none":
        first_view = lambda read, views: read(slice(0, 1))[:, 0].cpu()  # noqa: E731
        rows, embeddings, _ = gathered(streamed_views(cfg, model, LinearProbe(probe_cfg), train_set.items,
                                                      sampling, first_view), torch.empty(0, probe_cfg.embed_dim))
    else:
        cache = cached_tokens(cfg, model, train_set, sampling, "train")
        rows = sorted(cache.done)
        embeddings = cache.read(rows, 0)[:, 0]  # (N, D)
    if not rows:
        raise DataError(f"{cfg.data.train}: no training video could be decoded")
    labels = np.array([train_set.items[i].label for i in rows])
    probe, sweep = fit_linear_probe(embeddings.double().numpy(), labels, probe_cfg, cfg.linear, cfg.seed,
                                    cfg.data.train or "the training split")
    print0(f"linear probe: C={sweep.chosen_c:g} (held-out top-1 "
           f"{max(p['holdout_top1'] for p in sweep.points):.1f}% on {sweep.holdout_videos} clips), refitted on "
           f"{len(rows)} clips")
    return probe.to(cfg.model.device), sweep


def protocol(cfg: ProbeConfig, train_set: ActionSet, val_set: ActionSet, result: ProbeResult,
             sweep: LinearSweep | None = None) -> dict[str, Any]:
    """What was measured, so a number is never read without its conditions (mode linear: its C sweep instead of
    the head's training)."""
    head = {"linear": sweep.protocol(cfg.linear)} if sweep else {
        "temporal_pos_embed": cfg.probe.temporal_pos_embed, "spatial_pos_embed": cfg.probe.spatial_pos_embed,
        "lr": cfg.optim.lr, "head_lr": cfg.optim.head_lr, "max_steps": cfg.max_steps,
        "drop_path": cfg.drop_path, "weights": f"ema {cfg.optim.ema}" if cfg.optim.ema else "last step",
        "init": cfg.probe.init}
    return {"mode": cfg.mode, "model": cfg.model.name, "checkpoint": cfg.model.pretrained or cfg.model.name,
            "precision": cfg.model.precision, "image_size": cfg.model.image_size,
            "frames": cfg.decode.num_frames, "views": f"{cfg.eval.temporal_views}x{cfg.eval.spatial_crops}",
            "feature_cache": cache_name(cfg), **head, "train_videos": len(train_set.items),
            "val_videos_evaluated": len(result.paths), "val_videos_missing": len(val_set.missing),
            "val_videos_failed": result.failed}
