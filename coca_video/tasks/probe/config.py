"""The probe's configuration: the dataset, the head, evaluation, the probe's optimiser keys (``optim.head_lr``,
``optim.layer_decay``, ``optim.clip_per_module`` on top of :class:`~coca_video.training.OptimConfig`) and the
training loop's ``train.*`` (:class:`~coca_video.training.TrainLoop`); mode linear's C sweep."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from ...config import ClipAugmentConfig, DecodeConfig, Engine, ModelConfig, OptimConfig, RayConfig, TrainLoop, check, \
    check_at_least


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
class ProbeOptimConfig(OptimConfig):
    """The shared optimiser keys plus the probe's own: a learning rate for the new modules and, finetuning, layer-wise
    decay of the encoder's and per-module clipping."""

    head_lr: float | None = None  # peak lr of the new modules (pooler, position embeddings, classifier); null: lr
    layer_decay: float = 1.0  # finetune: block i of L trains at lr * layer_decay^(L - i) (1.0 = off)
    clip_per_module: bool = False  # finetune: the encoder's and the new modules' gradients each to grad_clip

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0 < self.layer_decay <= 1, "layer_decay", "be in (0, 1] (1.0 = off)", self.layer_decay)
        check(self.head_lr is None or (isinstance(self.head_lr, (int, float)) and self.head_lr > 0), "head_lr",
              "be > 0 or null (= lr)", self.head_lr)


def decades(low: int, high: int) -> list[float]:
    """``[10**low, ..., 10**high]``, one value a decade."""
    return [float(10.0**e) for e in range(low, high + 1)]


@dataclass
class LinearFitConfig:
    """``mode: linear``: the sweep over scikit-learn's C and the held-out share that picks it."""

    c_grid: list[float] = field(default_factory=lambda: decades(-6, 6))  # values of C (inverse L2 strength) tried
    holdout: float = 0.2  # share of the training clips held out to choose C (then refitted on all of them)
    max_iter: int = 1000  # L-BFGS iterations per fit (CLIP: 1,000)

    def __post_init__(self) -> None:
        check(len(self.c_grid) > 0, "c_grid", "list at least one value of C", self.c_grid)
        check(all(isinstance(c, (int, float)) and math.isfinite(c) and c > 0 for c in self.c_grid), "c_grid",
              "hold finite values > 0 (C is an inverse regularisation strength)", self.c_grid)
        check(isinstance(self.holdout, (int, float)) and 0 < self.holdout < 1, "holdout", "be in (0, 1)",
              self.holdout)
        check_at_least("max_iter", self.max_iter, 1)


@dataclass
class ProbeConfig:
    mode: Literal["frozen", "finetune", "linear"] = "frozen"  # frozen backbone, finetune it too, or sklearn linear
    output_dir: str = "runs/probe"  # checkpoints, metrics, report and the probe folder
    resume: str | None = None  # "auto" or a checkpoint file
    drop_path: float = 0.0  # finetune: stochastic depth of the encoder's blocks, rising linearly to this at the last
    engine: Engine = "local"  # the feature cache's fill: this process and its workers, or Ray (ray.*)
    train: TrainLoop = field(default_factory=TrainLoop)  # epochs (or max_steps), batch_size, seed, ...
    model: ModelConfig = field(default_factory=ModelConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    data: ProbeDataConfig = field(default_factory=ProbeDataConfig)
    probe: ProbeHeadConfig = field(default_factory=ProbeHeadConfig)
    optim: ProbeOptimConfig = field(default_factory=lambda: ProbeOptimConfig(lr=5e-4, weight_decay=0.0,
                                                                             warmup_steps=100))
    eval: ProbeEvalConfig = field(default_factory=ProbeEvalConfig)
    linear: LinearFitConfig = field(default_factory=LinearFitConfig)  # mode linear: the C sweep
    ray: RayConfig = field(default_factory=RayConfig)  # the cluster and its actor pools, with engine=ray

    def __post_init__(self) -> None:
        check(not (self.train.max_steps and self.mode == "linear"), "train.max_steps", "be null in linear mode "
              "(L-BFGS runs to linear.max_iter)", self.train.max_steps)
        check(isinstance(self.drop_path, (int, float)) and 0 <= self.drop_path < 1, "drop_path", "be in [0, 1)",
              self.drop_path)
        check(self.mode == "finetune" or self.drop_path == 0, "drop_path", "be 0 unless mode=finetune (the encoder "
              "does not train)", self.drop_path)
        self.decode.require_clips("probe")
        check(self.engine == "local" or self.mode == "finetune" or self.probe.cache != "none", "engine",
              "be local with probe.cache=none (engine=ray fills the feature cache, and there is none)", self.engine)
        augment = self.probe.augment
        if self.mode == "frozen":  # cached tokens of the evaluation frames: nothing to augment or decay
            check(augment.mixup == 0 and augment.cutmix == 0, "probe.augment.mixup/cutmix", "be 0 in frozen mode",
                  (augment.mixup, augment.cutmix))
            check(self.optim.layer_decay == 1.0, "optim.layer_decay", "be 1.0 in frozen mode", self.optim.layer_decay)
        if self.mode == "linear":  # one embedding per clip, no attentional head
            check(self.probe.cache in ("fp16", "none"), "probe.cache", "be fp16 or none in linear mode (it caches "
                  "one fp16 embedding per clip)", self.probe.cache)
            check(not (self.probe.temporal_pos_embed or self.probe.spatial_pos_embed or self.probe.init),
                  "probe.temporal_pos_embed/spatial_pos_embed/init", "be off in linear mode (no attentional head)",
                  (self.probe.temporal_pos_embed, self.probe.spatial_pos_embed, self.probe.init))
