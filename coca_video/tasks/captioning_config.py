"""``coca-video captioning``'s keys (:class:`CaptioningConfig`), apart from the task
(:mod:`coca_video.tasks.captioning`), so that reading them (``--help``, a config error) imports no torch."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import (CaptionConfig, DecodeConfig, Engine, ModelConfig, RayConfig, VideoTextSource, check_at_least,
                      check_suffix)


@dataclass
class CaptioningConfig:
    source: VideoTextSource = field(default_factory=VideoTextSource)  # the videos and their reference captions
    out: str = "runs/captioning/metrics.json"  # metrics JSON; predictions CSV and report go beside it
    caption: CaptionConfig = field(default_factory=CaptionConfig)  # decoding, and what the generative pooler reads
    cache_dir: str | None = None  # where generated captions are kept for reruns; default: <out folder>/caption_cache
    report_videos: int = 200  # videos on the HTML report, worst CIDEr-D first (0: no report)
    engine: Engine = "local"  # the caption pass: this process and its workers, or Ray (ray.*)
    model: ModelConfig = field(default_factory=ModelConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    ray: RayConfig = field(default_factory=RayConfig)  # the cluster and its actor pools, with engine=ray

    def __post_init__(self) -> None:
        check_suffix("out", self.out, (".json",))
        check_at_least("report_videos", self.report_videos, 0)
        self.decode.require_clips("captioning")
