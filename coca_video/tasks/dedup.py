"""Find near-duplicate videos (or segments, or scenes) in an embeddings file with SemDeDup and write which to keep:

    coca-video dedup scores.embeddings.parquet --eps 0.05 --out dedup.parquet

writes ``dedup.parquet`` (every searchable row: keep, duplicate_of, similarity: :mod:`coca_video.search.dedup`) and
``dedup.similarity.png``, the histogram of each row's similarity to its nearest higher-ranked row of its cluster:
look at it to choose eps before trusting one (NeMo Curator's advice). ``search --dedup`` and ``serve --dedup`` then
hide the removed rows. The algorithm and its conventions: :mod:`coca_video.search.semdedup`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import check, check_suffix
from ..errors import ConfigError
from ..io import atomic_path, atomic_write_table, check_output_file
from ..search import read_embeddings
from ..search.dedup import dedup_table, is_dedup_file
from ..search.semdedup import has_faiss, semdedup

BACKENDS = ("auto", "sklearn", "faiss")


@dataclass
class DedupConfig:
    embeddings: str = ""  # <out>.embeddings.parquet written by score (whole videos, segments or scenes)
    out: str = "dedup.parquet"  # the dedup table (.parquet); the histogram goes beside it as <stem>.similarity.png
    eps: float = 0.05  # a row goes when its cosine similarity to a higher-ranked row of its cluster is > 1 - eps
    clusters: int = 0  # k-means clusters (0: ceil(sqrt(rows))); more: faster, but more duplicate pairs split apart
    kmeans: str = "auto"  # auto (faiss when installed, else scikit-learn), sklearn or faiss
    iterations: int = 50  # k-means iterations
    seed: int = 0  # k-means initialisation

    def __post_init__(self) -> None:
        check_suffix("out", self.out, (".parquet",))
        check(isinstance(self.eps, (int, float)) and 0 <= self.eps < 1, "eps", "be in [0, 1)", self.eps)
        check(isinstance(self.clusters, int) and self.clusters >= 0, "clusters", "be >= 0 (0: automatic)",
              self.clusters)
        check(self.kmeans in BACKENDS, "kmeans", f"be one of {', '.join(BACKENDS)}", self.kmeans)
        check(isinstance(self.iterations, int) and self.iterations >= 1, "iterations", "be >= 1", self.iterations)


def histogram_path(out: str | Path) -> Path:
    """Where the similarity histogram of a dedup file ``out`` goes: ``<stem>.similarity.png`` beside it."""
    return Path(out).with_suffix(".similarity.png")


def auto_clusters(rows: int) -> int:
    """The default cluster count: ceil(sqrt(rows)), so a cluster holds about as many rows as there are clusters."""
    return max(1, math.ceil(math.sqrt(rows)))


def run(cfg: DedupConfig) -> dict[str, Any]:
    """Deduplicate ``cfg.embeddings``; returns a summary (rows, kept, removed, paths written, seconds)."""
    if not cfg.embeddings:
        raise ConfigError("dedup: give the embeddings file (<out>.embeddings.parquet written by score)")
    plot = histogram_path(cfg.out)
    ours = is_dedup_file(cfg.out)
    check_output_file(cfg.out, [cfg.embeddings], ours, "out")  # embeddings: a path or an s3:// URL
    check_output_file(plot, [cfg.embeddings], ours, "out (its histogram)")
    started = time.time()
    rows, vectors, _ = read_embeddings(cfg.embeddings)  # (N, D)
    clusters = cfg.clusters or auto_clusters(len(rows))
    backend = "faiss" if cfg.kmeans == "faiss" or (cfg.kmeans == "auto" and has_faiss()) else "sklearn"
    result = semdedup(vectors, cfg.eps, clusters, backend, cfg.iterations, cfg.seed)
    settings = {"embeddings": str(cfg.embeddings), "eps": cfg.eps, "clusters": clusters, "kmeans": backend,
                "iterations": cfg.iterations, "seed": cfg.seed}
    atomic_write_table(dedup_table(rows, result, settings), cfg.out)
    write_histogram(result.similarity, cfg.eps, plot)
    kept = int(result.keep.sum())
    return {"out": str(cfg.out), "histogram": str(plot), "rows": len(rows), "kept": kept, "removed": len(rows) - kept,
            "clusters": clusters, "kmeans": backend, "seconds": round(time.time() - started, 2)}


def write_histogram(similarity: np.ndarray, eps: float, path: Path) -> None:
    """A PNG histogram of ``similarity`` (N,) (NaN left out: clusters' first rows) with the cut at ``1 - eps``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = similarity[~np.isnan(similarity)]
    figure, axes = plt.subplots(figsize=(7, 4))
    axes.hist(values, bins=100, range=(np.min(values, initial=0.0), np.max(values, initial=1.0)), color="#4878a8")
    axes.axvline(1 - eps, color="#c03030", linestyle="--", label=f"1 - eps = {1 - eps:g}: rows to the right go")
    axes.set_yscale("log")
    axes.set_xlabel("cosine similarity to the nearest higher-ranked row of the cluster")
    axes.set_ylabel("rows")
    axes.set_title(f"{int((values > 1 - eps).sum())} of {len(similarity)} rows above the cut")
    axes.legend(loc="upper left")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    plt.close(figure)
