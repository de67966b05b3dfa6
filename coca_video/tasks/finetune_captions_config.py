"""``coca-video finetune-captions``'s keys (:class:`FinetuneCaptionsConfig`, and :class:`CaptionTrainConfig`, the
``train.*`` block videoqa shares), apart from the task (:mod:`coca_video.tasks.finetune_captions`), so that reading
them (``--help``, a config error) imports no torch."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import CaptionConfig, DecodeConfig, ModelConfig, OptimConfig, TrainLoop, VideoTextSource, check

# group -> the CoCa attributes it holds (frame_time, frame_space: when built)
FREEZE_GROUPS = {"image_encoder": ("image_encoder",), "poolers": ("image_pooling", "frame_time", "frame_space"),
                 "text": ("text",), "decoder": ("decoder", "caption_head")}


@dataclass
class CaptionTrainConfig(TrainLoop):
    """The loop's keys (an epoch: every training video once, with one of its captions) and what does not train."""

    batch_size: int = 32  # videos per optimiser step (global, across ranks)
    freeze: tuple[str, ...] = ("image_encoder",)  # groups that do not train: image_encoder, poolers, text, decoder

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = [g for g in self.freeze if g not in FREEZE_GROUPS]
        check(not unknown, "freeze", f"name groups among {list(FREEZE_GROUPS)}", list(self.freeze))
        check(not {"poolers", "text", "decoder"} <= set(self.freeze), "freeze",
              "leave one of poolers, text, decoder to train", list(self.freeze))


@dataclass
class FinetuneCaptionsConfig:
    source: VideoTextSource = field(default_factory=VideoTextSource)  # training videos and their captions
    val: VideoTextSource | None = None  # validation videos and captions (val.captions=..., val.msrvtt_split=...);
    # null: val_holdout of the source's videos are held out instead
    val_holdout: float = 0.1  # with val null: this share of the source's videos (at least one) held out to validate
    # (drawn with train.seed; 0: no validation)
    output_dir: str = "runs/finetune_captions"  # model/, checkpoints, logs, metrics.json
    resume: str | None = None  # "auto" or a checkpoint file
    caption: CaptionConfig = field(default_factory=lambda: CaptionConfig(source="all_frames"))  # source: trained on
    train: CaptionTrainConfig = field(default_factory=CaptionTrainConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-4, weight_decay=0.01, warmup_steps=50))
    model: ModelConfig = field(default_factory=ModelConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    temporal_embedding: bool = False  # a per-frame embedding before the generative pooler (model/frame_time.py)
    # (one vector a frame, zero at the start, trained with the poolers), so captions can say what came first
    temporal_lr_scale: float = 100.0  # that table's learning rate over optim.lr (docs/captioning.md: why x100)
    # it starts at zero and AdamW moves an entry by about the lr a step, while the encoder tokens it is added to
    # have entries of order 10 (norm ~145 for the default model): at x1 it stays too small to matter

    def __post_init__(self) -> None:
        self.decode.require_clips("finetune-captions")
        check(isinstance(self.val_holdout, (int, float)) and 0 <= self.val_holdout < 1, "val_holdout",
              "be in [0, 1) (0: no validation)", self.val_holdout)
        check(isinstance(self.temporal_embedding, bool), "temporal_embedding", "be true or false",
              self.temporal_embedding)
        check(not self.temporal_embedding or self.caption.source == "all_frames", "temporal_embedding",
              "be false with caption.source=middle_frame (one frame has no time to embed; use all_frames)",
              self.temporal_embedding)
        check(isinstance(self.temporal_lr_scale, (int, float)) and self.temporal_lr_scale > 0, "temporal_lr_scale",
              "be > 0", self.temporal_lr_scale)
        check(self.model.precision in ("fp32", "bf16", "auto"), "model.precision", "be fp32, bf16 or auto to train",
              self.model.precision)
