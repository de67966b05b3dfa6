"""``coca-video dedup``'s keys (:class:`DedupConfig`), apart from the task
(:mod:`coca_video.tasks.dedup`), so that reading them (``--help``, a config error) imports no torch."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import check, check_suffix

BACKENDS = ("auto", "sklearn", "faiss")


@dataclass
class DedupConfig:
    embeddings: str = ""  # <out>.embeddings.parquet written by score (whole videos, segments or scenes)
    out: str = "dedup.parquet"  # the dedup table (.parquet); the histogram goes beside it as <stem>.similarity.png
    eps: float = 0.05  # a row goes when its cosine similarity to a higher-ranked row of its cluster is > 1 - eps
    clusters: int = 0  # k-means clusters (0: ceil(sqrt(rows))); more: faster, but more duplicate pairs split apart
    kmeans: str = "auto"  # auto (faiss when installed, else scikit-learn), sklearn or faiss
    iterations: int = 50  # k-means iterations
    seed: int = 0  # k-means initialisation and the rows it trains on (at most 256 per cluster)

    def __post_init__(self) -> None:
        check_suffix("out", self.out, (".parquet",))
        check(isinstance(self.eps, (int, float)) and 0 <= self.eps < 1, "eps", "be in [0, 1)", self.eps)
        check(isinstance(self.clusters, int) and self.clusters >= 0, "clusters", "be >= 0 (0: automatic)",
              self.clusters)
        check(self.kmeans in BACKENDS, "kmeans", f"be one of {', '.join(BACKENDS)}", self.kmeans)
        check(isinstance(self.iterations, int) and self.iterations >= 1, "iterations", "be >= 1", self.iterations)
