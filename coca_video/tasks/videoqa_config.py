"""``coca-video videoqa``'s keys (:class:`VideoQAConfig`), apart from the task (:mod:`coca_video.tasks.videoqa`),
so that reading them (``--help``, a config error) imports no torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..config import DecodeConfig, Engine, ModelConfig, OptimConfig, RayConfig, check, check_at_least
from .finetune_captions_config import CaptionTrainConfig


@dataclass
class QASource:
    """Where the questions and videos are: a release's QA folder (MSRVTT-QA, MSVD-QA) or a CSV."""

    videos: str = ""  # folder of the videos (MSRVTT-QA: video{N}.mp4; MSVD-QA: its clips, by youtube_mapping.txt)
    qa_dir: str | None = None  # folder with train_qa.json, val_qa.json, test_qa.json
    qa_csv: str | None = None  # CSV of video,question,answer[,split] rows instead


@dataclass
class QAConfig:
    """The question-answering recipe's own keys."""

    num_answers: int = 1500  # answer vocabulary: the commonest training answers
    caption_weight: float = 1.0  # weight of the captioning loss on "question answer" (the paper gives none)
    model_lr: float = 2e-5  # peak rate of the pretrained parts (optim.lr: the new head's), Table 10
    eval_split: Literal["test", "val"] = "test"  # the split answered and scored
    max_answer_tokens: int = 8  # mode=generate: most tokens decoded after the question
    report_questions: int = 200  # questions shown in report.html (worst question types first)

    def __post_init__(self) -> None:
        check_at_least("num_answers", self.num_answers, 1)
        check(isinstance(self.caption_weight, (int, float)) and self.caption_weight >= 0, "caption_weight",
              "be >= 0", self.caption_weight)
        check(isinstance(self.model_lr, (int, float)) and self.model_lr >= 0, "model_lr", "be >= 0", self.model_lr)
        check_at_least("max_answer_tokens", self.max_answer_tokens, 1)
        check_at_least("report_questions", self.report_questions, 0)


@dataclass
class VideoQAConfig:
    source: QASource = field(default_factory=QASource)
    mode: Literal["train", "zeroshot", "generate"] = "train"  # train the head; rank answers; decode answers
    output_dir: str = "runs/videoqa"  # metrics.json, predictions.csv, report.html, model/, checkpoints
    resume: str | None = None  # "auto" or a checkpoint file
    cache_dir: str | None = None  # feature cache folder (default <output_dir>/feature_cache); runs sharing one reuse it
    temporal_embedding: bool = False  # add the multimodal path's per-frame embedding (model.frame_time), trained
    spatial_embedding: bool = False  # add the multimodal path's per-position embedding (model.frame_space), trained
    temporal_lr_scale: float = 100.0  # a position table this run adds learns at this x optim.lr (finetune-captions')
    engine: Engine = "local"  # the feature cache's fill: this process and its workers, or Ray (ray.*)
    qa: QAConfig = field(default_factory=QAConfig)
    train: CaptionTrainConfig = field(default_factory=lambda: CaptionTrainConfig(epochs=10, batch_size=64))
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=5e-4, weight_decay=0.1, warmup_steps=1000))
    model: ModelConfig = field(default_factory=ModelConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    ray: RayConfig = field(default_factory=RayConfig)  # the cluster and its actor pools, with engine=ray

    def __post_init__(self) -> None:
        self.decode.require_clips("videoqa")
        check("image_encoder" in self.train.freeze, "train.freeze", "include image_encoder (videoqa reads the "
              "frozen encoder's tokens from the feature cache)", list(self.train.freeze))
        check(self.model.precision in ("fp32", "bf16", "auto"), "model.precision", "be fp32, bf16 or auto",
              self.model.precision)
        check(isinstance(self.temporal_lr_scale, (int, float)) and self.temporal_lr_scale > 0, "temporal_lr_scale",
              "be > 0", self.temporal_lr_scale)
