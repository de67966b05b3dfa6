"""``coca-video score``'s keys (:class:`ScoreConfig`), apart from the task (:mod:`coca_video.tasks.score`) so that
reading them (``--help``, a config error) imports no torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..config import (CaptionConfig, DecodeConfig, EmbeddingDtype, Engine, ModelConfig, RayConfig, check,
                      check_at_least, check_suffix)
from ..video.scenes import DEFAULT_THRESHOLDS, SceneDetectorName


@dataclass
class ScoreConfig:
    videos: str | list[str] = ""  # a folder (recursively), a video, a .txt list, a table with 'path', s3://, or tar
    # shards (x.tar, 'shards/{00000..00099}.tar', a folder of .tar: data/shards.py); or several
    follow_symlinks: Literal["inside", "outside"] = "inside"  # folder links pointing outside the folder: skip/follow
    out: str = "scores.parquet"  # .parquet or .csv (local or s3://); embeddings go to <stem>.embeddings.parquet
    labels: str | None = None  # class list file (formats: data/labels.py) or kinetics400|600|700|moments_in_time
    probe: str | None = None  # a trained probe folder (output_dir/probe of the probe task): its classes and scores
    probe_views: bool = True  # with probe: its softmax averaged over the views it was evaluated with (e.g. 4x3)
    templates: str | None = None  # prompt file; default: the model's own prompts, else the video templates
    top_k: int = 5  # labels kept per video, best first
    caption: CaptionConfig | None = None  # a caption per video (null: none; true or any caption.* key: captions)
    qa_model: str | None = None  # a videoqa model folder (videoqa's output_dir/model): it answers each question
    question: list[str] = field(default_factory=list)  # with qa_model: column answer (one), answer_1.. (several)
    video_pooling: Literal["mean", "attentional"] = "mean"  # mean of frame embeddings, or the pooler over all tokens
    frame_embeddings: bool = False  # also store each frame's embedding in the embeddings file
    embedding_dtype: EmbeddingDtype = "float32"  # float16: the embeddings file at half the bytes (read as float32)
    report: str | None = None  # HTML report path (page 1, with the totals); more pages go beside it: <stem>-002.html
    report_page_size: int = 200  # videos per report page (a segmented video's rows stay together on one page)
    segment_seconds: float = 0.0  # > 0: score consecutive windows of this length, one row each (0: whole videos)
    segment_stride: float | None = None  # seconds between window starts (default segment_seconds; less: overlap)
    segment_by: Literal["windows", "scenes"] = "windows"  # scenes: a row per shot (PySceneDetect, the scenes extra)
    scene_detector: SceneDetectorName = "adaptive"  # PySceneDetect's adaptive or content detector (segment_by=scenes)
    scene_threshold: float | None = None  # the detector's threshold (null: its default, adaptive 3.0, content 27)
    min_scene_seconds: float = 0.6  # no cut closer than this to the last one (or to the end)
    max_scene_seconds: float = 30.0  # a longer scene is split into windows of at most this length (0: never)
    shard_fields: str | list[str] = ""  # shards in: json fields as columns of their own (url,caption); "": all as 'meta'
    shard_outputs: bool = False  # shards in: also <shard>.parquet and <shard>_stats.json per complete shard, beside out
    engine: Engine = "local"  # local: this process and its decoding workers; ray: Ray Data (ray.*)
    model: ModelConfig = field(default_factory=ModelConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    ray: RayConfig = field(default_factory=RayConfig)  # the cluster and its actor pools, with engine=ray

    def __post_init__(self) -> None:
        check_at_least("top_k", self.top_k, 1)
        check_at_least("report_page_size", self.report_page_size, 1)
        check_suffix("out", self.out, (".parquet", ".csv"))
        check_suffix("report", self.report, (".html",), optional=True)
        check_at_least("segment_seconds", self.segment_seconds, 0)
        if self.segment_stride is not None:
            check(self.segment_stride > 0, "segment_stride", "be > 0 seconds (or null: segment_seconds)",
                  self.segment_stride)
        check(bool(self.qa_model) == bool(self.question), "question", "be given (--question, one or several) "
              "with qa_model (--qa-model), and only with it", self.question)
        check_at_least("min_scene_seconds", self.min_scene_seconds, 0)
        check_at_least("max_scene_seconds", self.max_scene_seconds, 0)
        check(self.segment_by in ("windows", "scenes"), "segment_by", "be windows or scenes", self.segment_by)
        check(self.scene_detector in DEFAULT_THRESHOLDS, "scene_detector", "be adaptive or content",
              self.scene_detector)
        if self.segment_by == "scenes":
            check(self.segment_seconds == 0, "segment_seconds", "be 0 with segment_by=scenes (scenes are cut at "
                  "shots; max_scene_seconds splits long ones)", self.segment_seconds)
            check(self.decode.sampling != "fps", "decode.sampling", "not be fps with segment_by=scenes",
                  self.decode.sampling)
        if self.decode.sampling == "fps":  # every frame is its own row already
            check(self.segment_seconds == 0, "segment_seconds", "be 0 with decode.sampling=fps (a row per frame)",
                  self.segment_seconds)
            check(self.probe is None, "probe", "be unset with decode.sampling=fps (a probe reads whole clips)",
                  self.probe)
