"""``coca-video zeroshot``'s keys (:class:`ZeroShotConfig`), apart from the task (:mod:`coca_video.tasks.zeroshot`),
so that reading them (``--help``, a config error) imports no torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..config import ActionsFormat, DecodeConfig, Engine, ModelConfig, RayConfig, check_suffix


@dataclass
class ZeroShotConfig:
    annotations: str = ""  # Kinetics CSV (label,youtube_id,time_start,time_end,...), MiT CSV, path-label list or CSV
    format: ActionsFormat = "auto"  # of the annotations: auto (from the first line) | kinetics | mit | list | csv
    video_root: str = ""  # folder of the videos (Kinetics: flat or per-class folders; untrimmed files use windows)
    classes: str | None = None  # class list file or kinetics400|600|700|moments_in_time (default: the file's labels)
    templates: str | None = None  # prompt file; default: the model's own prompts, else the video templates
    video_pooling: Literal["mean", "attentional"] = "mean"  # mean of frame embeddings, or the pooler over all tokens
    out: str = "runs/zeroshot/metrics.json"  # metrics; the per-video store goes beside it
    engine: Engine = "local"  # the labels pass: this process and its workers, or Ray (ray.*)
    model: ModelConfig = field(default_factory=ModelConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    ray: RayConfig = field(default_factory=RayConfig)  # the cluster and its actor pools, with engine=ray

    def __post_init__(self) -> None:
        check_suffix("out", self.out, (".json",))
        self.decode.require_clips("zeroshot")
