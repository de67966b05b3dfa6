"""``coca-video pretrain``'s keys (:class:`PretrainConfig`), apart from the task (:mod:`coca_video.tasks.pretrain`),
so that reading them (``--help``, a config error) imports no torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..config import ImageTextDataConfig, ModelConfig, OptimConfig, TrainLoop, check, check_at_least


@dataclass
class TrainConfig(TrainLoop):
    """The loop's keys (a run of ``max_steps`` over streamed pairs: no epochs) and pretraining's own."""

    epochs: int | None = None  # pretraining streams its data: max_steps sets the run's length
    max_steps: int | None = 1000  # optimiser steps in total
    log_every: int = 10  # steps between metric records
    distributed: Literal["ddp", "fsdp"] = "ddp"  # wrapping under torchrun
    checkpoint_every: int = 500  # steps between checkpoints
    eval_every: int = 500  # steps between validations (and after the last; the best kept as checkpoints/best.pt; 0:
    # none): the loss of held-out pairs (eval.val_pairs) and, on synthetic data, zero-shot accuracy (eval.attributes)
    keep_last: int = 3  # checkpoints kept on disk
    contrastive_weight: float = 1.0  # weight of the contrastive loss
    caption_weight: float = 2.0  # weight of the captioning loss (the paper's 2)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.epochs is None, "epochs", "be null in pretraining (its data is a stream: train.max_steps sets the "
              "run's length)", self.epochs)
        check(self.max_steps is not None, "max_steps", "be set in pretraining", self.max_steps)
        check(self.accum_steps == 1, "accum_steps", "be 1 in pretraining (the contrastive loss compares the whole "
              "batch, so micro-batches would change it)", self.accum_steps)
        for key in ("checkpoint_every", "keep_last", "log_every"):
            check_at_least(key, getattr(self, key), 1)
        check_at_least("contrastive_weight", self.contrastive_weight, 0)
        check_at_least("caption_weight", self.caption_weight, 0)


@dataclass
class EvalConfig:
    """What a validation (every ``train.eval_every`` steps) measures: the loss of held-out pairs (the synthetic
    world's val split, or ``data.val_path``) and, on synthetic data, zero-shot classification of held-out images."""

    val_pairs: int = 512  # held-out pairs whose loss validates, in batches of train.batch_size (rounded up to whole)
    num_images: int = 256  # held-out synthetic images per zero-shot evaluation
    attributes: tuple[str, ...] = ("colour", "shape")  # synthetic attributes classified zero-shot (none: no zero-shot)

    def __post_init__(self) -> None:
        check_at_least("val_pairs", self.val_pairs, 1)
        check_at_least("num_images", self.num_images, 1)


@dataclass
class TokenizerConfig:
    """For architectures with their own tokenizer (``tokenizer: tokenizer.json``) and no file yet: train a BPE on
    ``corpus_size`` captions of the training data."""

    vocab_size: int = 512  # BPE vocabulary size of a newly trained tokenizer
    corpus_size: int = 20000  # training captions the tokenizer is trained on

    def __post_init__(self) -> None:
        check_at_least("vocab_size", self.vocab_size, 1)
        check_at_least("corpus_size", self.corpus_size, 1)


@dataclass
class PretrainConfig:
    output_dir: str = "runs/pretrain"  # checkpoints, logs, config.json and the final model folder
    resume: str | None = None  # "auto" or a checkpoint file
    data: ImageTextDataConfig = field(default_factory=ImageTextDataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=lambda: ModelConfig(name="tiny"))

    def __post_init__(self) -> None:
        check(not (self.optim.ema and self.train.distributed == "fsdp"), "optim.ema", "be null or 0 with "
              "train.distributed=fsdp (the average would hold sharded weights)", self.optim.ema)
