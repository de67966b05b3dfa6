"""``coca-video retrieval``'s keys (:class:`RetrievalConfig`), apart from the task
(:mod:`coca_video.tasks.retrieval`), so that reading them (``--help``, a config error) imports no torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..config import DecodeConfig, Engine, ModelConfig, RayConfig, VideoTextSource, check_suffix


@dataclass
class RetrievalConfig:
    source: VideoTextSource = field(default_factory=VideoTextSource)  # the videos and their captions
    out: str = "runs/retrieval/metrics.json"  # metrics JSON; ranks CSV and report go beside it
    prompt_prefix: str = ""  # prepended to every caption, e.g. "a video of "
    cache_dir: str | None = None  # default: <out folder>/embedding_cache
    report_queries: int = 4  # queries shown with their top-5 videos in the report (0: no report)
    median: Literal["mean", "lower"] = "mean"  # MdR of an even count: np.median's mean of the middle two, or the lower
    rerank: Literal["dsl"] | None = None  # dual-softmax re-ranking, reported under its own *_dsl keys
    video_pooling: Literal["mean", "attentional"] = "mean"  # the paper's mean of frames, or VideoCoCa's pooler
    engine: Engine = "local"  # the embedding pass: this process and its workers, or Ray (ray.*)
    model: ModelConfig = field(default_factory=ModelConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)  # sampling: eval, the paper's; linspace, CLIP4Clip's
    ray: RayConfig = field(default_factory=RayConfig)  # the cluster and its actor pools, with engine=ray

    def __post_init__(self) -> None:
        check_suffix("out", self.out, (".json",))
        self.decode.require_clips("retrieval")
