"""SemDeDup (Abbas et al. 2023, arXiv 2303.09540) over (N, D) embeddings, as NeMo Curator runs it by default:

1. k-means on the L2-normalised embeddings (scikit-learn, or faiss when installed: ``kmeans="auto"``), both backends
   the same way: trained on a seeded random sample of at most :data:`MAX_POINTS_PER_CENTROID` (256) rows per cluster
   (all rows when there are fewer; faiss's own rule), then every row assigned to its nearest centroid;
2. each cluster's rows ranked by cosine distance to their centroid, FARTHEST FIRST (Curator's default
   ``which_to_keep="hard"``: the paper keeps the "hard", least prototypical examples; equal distances in row order);
3. a row removed when its cosine similarity to a higher-ranked row of its cluster exceeds ``1 - eps`` (as in the
   paper and Curator: any higher-ranked row counts, removed or not).

Pairs split across two clusters are never compared (the method's known approximation: more clusters, faster, more
such misses). :func:`exact_dedup` is the same rule over all pairs at once, for checking it on small sets.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np

from ..errors import ConfigError, MissingExtraError

KMeansBackend = Literal["auto", "sklearn", "faiss"]
PAIR_BLOCK = 2048  # rows of a cluster compared at once with the rows ranked above them (2048 x n float32)
MAX_POINTS_PER_CENTROID = 256  # k-means trains on at most this many rows per cluster (faiss's default), both backends
ASSIGN_BLOCK = 8192  # rows assigned to their nearest centroid at once (8192 x clusters float32)


class Dedup(NamedTuple):
    """What SemDeDup decided for each of N rows (row numbers index the input vectors)."""

    keep: np.ndarray  # (N,) bool
    nearest: np.ndarray  # (N,) int64: the most similar higher-ranked row of its cluster; -1 for a cluster's first
    similarity: np.ndarray  # (N,) float32: cosine similarity to ``nearest`` (NaN for a cluster's first)
    duplicate_of: np.ndarray  # (N,) int64: the kept row a removed row duplicates (through ``nearest``); -1 if kept
    cluster: np.ndarray  # (N,) int64: its k-means cluster


def normalise(vectors: np.ndarray) -> np.ndarray:
    """``vectors`` (N, D) scaled to unit length, as float32 (zero rows stay zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def has_faiss() -> bool:
    """Whether faiss imports (``pip install 'coca-video[faiss]'``)."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def kmeans(unit: np.ndarray, clusters: int, backend: KMeansBackend = "auto", iterations: int = 50,
           seed: int = 0) -> np.ndarray:
    """The cluster (N,) int64 of each row of ``unit`` (N, D) float32 by k-means (Lloyd, one initialisation, L2 on the
    unit vectors) into ``clusters``: through faiss when ``backend`` is faiss, or auto and faiss is installed; else
    scikit-learn's KMeans. Either trains on a random sample (by ``seed``) of at most :data:`MAX_POINTS_PER_CENTROID`
    rows per cluster (every row when there are fewer), then gives every row its nearest centroid."""
    clusters = min(clusters, len(unit))
    if clusters <= 1:
        return np.zeros(len(unit), dtype=np.int64)
    if backend == "faiss" or (backend == "auto" and has_faiss()):
        return faiss_kmeans(unit, clusters, iterations, seed)
    return sklearn_kmeans(unit, clusters, iterations, seed)


def sklearn_kmeans(unit: np.ndarray, clusters: int, iterations: int, seed: int) -> np.ndarray:
    """:func:`kmeans` through scikit-learn's KMeans, fitted on :func:`training_rows`, then :func:`nearest_centroid`."""
    try:
        from sklearn.cluster import KMeans
    except ImportError:
        raise MissingExtraError("dedup needs scikit-learn (or faiss): pip install 'coca-video[dedup]'") from None
    model = KMeans(clusters, n_init=1, max_iter=iterations, random_state=seed)
    model.fit(unit[training_rows(len(unit), clusters, seed)])
    return nearest_centroid(unit, model.cluster_centers_.astype(np.float32))


def training_rows(count: int, clusters: int, seed: int) -> np.ndarray:
    """The rows (sorted, int64) k-means trains on out of ``count``: a random sample by ``seed`` of
    ``clusters * MAX_POINTS_PER_CENTROID`` of them without replacement, or all when there are no more."""
    limit = clusters * MAX_POINTS_PER_CENTROID
    if count <= limit:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, limit, replace=False))


def nearest_centroid(unit: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """(N,) int64: for each row of ``unit`` (N, D), the centroid of ``centroids`` (K, D) nearest in L2 (the first of
    equals), :data:`ASSIGN_BLOCK` rows at a time."""
    half_norms = 0.5 * (centroids * centroids).sum(axis=1)  # (K,): |x - c|^2 / 2 = |x|^2 / 2 - x.c + |c|^2 / 2
    labels = np.empty(len(unit), dtype=np.int64)
    for start in range(0, len(unit), ASSIGN_BLOCK):
        scores = unit[start:start + ASSIGN_BLOCK] @ centroids.T - half_norms  # (b, K): larger is nearer
        labels[start:start + ASSIGN_BLOCK] = scores.argmax(axis=1)
    return labels


def faiss_kmeans(unit: np.ndarray, clusters: int, iterations: int, seed: int) -> np.ndarray:
    """:func:`kmeans` through faiss (it samples the :data:`MAX_POINTS_PER_CENTROID` rows per cluster itself, by
    ``seed``, then every row is assigned)."""
    try:
        import faiss
    except ImportError:
        raise MissingExtraError("kmeans=faiss needs faiss: pip install 'coca-video[faiss]'") from None
    model = faiss.Kmeans(unit.shape[1], clusters, niter=iterations, seed=seed, verbose=False,
                         max_points_per_centroid=MAX_POINTS_PER_CENTROID)
    model.train(np.ascontiguousarray(unit))
    _, labels = model.index.search(np.ascontiguousarray(unit), 1)  # (N, 1)
    return labels[:, 0].astype(np.int64)


def semdedup(vectors: np.ndarray, eps: float, clusters: int, backend: KMeansBackend = "auto", iterations: int = 50,
             seed: int = 0) -> Dedup:
    """SemDeDup of ``vectors`` (N, D) (any norms: normalised here) with threshold ``eps`` (a row goes when its cosine
    similarity to a higher-ranked row of its cluster is above ``1 - eps``) and ``clusters`` k-means clusters."""
    if not 0 <= eps < 1:
        raise ConfigError(f"eps must be in [0, 1), got {eps!r}")
    unit = normalise(vectors)
    labels = kmeans(unit, clusters, backend, iterations, seed)
    return dedup_clusters(unit, labels, eps)


def rank_in_clusters(unit: np.ndarray, labels: np.ndarray) -> list[np.ndarray]:
    """Each cluster's row numbers, farthest from its centroid (cosine distance) first, equal distances in row
    order; the centroid is the mean of the cluster's unit rows."""
    order = np.argsort(labels, kind="stable")
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    ranked = []
    for members in np.split(order, bounds):
        centroid = unit[members].astype(np.float64).mean(axis=0)
        centroid /= max(np.linalg.norm(centroid), 1e-12)
        distance = 1.0 - unit[members].astype(np.float64) @ centroid  # (n,)
        ranked.append(members[np.lexsort((members, -distance))])
    return ranked


def dedup_clusters(unit: np.ndarray, labels: np.ndarray, eps: float) -> Dedup:
    """:func:`semdedup` of unit rows ``unit`` (N, D) already clustered as ``labels`` (N,)."""
    count = len(unit)
    nearest = np.full(count, -1, dtype=np.int64)
    similarity = np.full(count, np.nan, dtype=np.float32)
    ranked = rank_in_clusters(unit, labels)
    for members in ranked:
        best, scores = nearest_above(unit[members])
        nearest[members[1:]] = members[best[1:]]
        similarity[members[1:]] = scores[1:]
    keep = ~(similarity > 1 - eps)  # NaN (a cluster's first) is kept
    return Dedup(keep, nearest, similarity, kept_ancestor(keep, nearest, ranked), labels.astype(np.int64))


def nearest_above(ranked: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each of ``ranked`` (n, D) unit rows, best first: the position (n,) of the most similar row above it (the
    first of equals) and that similarity (n,) float32; position 0 gets -1 and NaN."""
    n = len(ranked)
    best = np.full(n, -1, dtype=np.int64)
    scores = np.full(n, np.nan, dtype=np.float32)
    for start in range(1, n, PAIR_BLOCK):
        stop = min(start + PAIR_BLOCK, n)
        sims = ranked[start:stop] @ ranked[:stop].T  # (b, stop)
        sims[np.arange(stop)[None, :] >= np.arange(start, stop)[:, None]] = -np.inf  # only rows ranked above
        best[start:stop] = sims.argmax(axis=1)
        scores[start:stop] = sims[np.arange(stop - start), best[start:stop]]
    return best, scores


def kept_ancestor(keep: np.ndarray, nearest: np.ndarray, ranked: list[np.ndarray]) -> np.ndarray:
    """(N,) the kept row each removed row duplicates: its ``nearest`` if kept, else what that one duplicates (a
    chain of higher-ranked rows ends at a kept one: a cluster's first is always kept); -1 for a kept row.
    ``ranked``: each cluster's rows in rank order (:func:`rank_in_clusters`)."""
    duplicate_of = np.full(len(keep), -1, dtype=np.int64)
    for members in ranked:  # rank order: a row's nearest is resolved before it
        for row in members[~keep[members]]:
            above = nearest[row]
            duplicate_of[row] = above if keep[above] else duplicate_of[above]
    return duplicate_of


def exact_dedup(vectors: np.ndarray, eps: float, order: np.ndarray) -> np.ndarray:
    """(N,) keep mask of the same rule over ALL pairs: a row goes when its cosine similarity to any row earlier in
    ``order`` (N,) (a permutation of the rows, the ranking) exceeds ``1 - eps``. O(N^2): for checks."""
    unit = normalise(vectors)[order]
    sims = unit @ unit.T  # (N, N)
    sims[np.tril_indices(len(unit))] = -np.inf  # keep j > i: i ranked above j
    keep = np.empty(len(unit), dtype=bool)
    keep[order] = ~(sims.max(axis=0, initial=-np.inf) > 1 - eps)
    return keep
