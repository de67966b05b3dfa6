"""The one ranking every search goes through (``coca-video search``, the server's text, image and "more like this"
queries, an index's candidates rescored): rows by dot product with each query (cosine: the rows and queries are unit
vectors), best first, and ONE tie rule: equal scores in row order, the lower row number first, whichever rows are
searched and however many queries are ranked at once.

Equal rows must score equal for that rule to hold, and a float32 matrix product does not promise it: BLAS kernels
sum a row in an order that depends on where the row sits (OpenBLAS gave two copies of one vector scores a bit apart
in 108 of 188 (D, N) shapes tried, in every kernel: one query, a batch, either operand first). So the product only
picks the rows that may be among the best (every row within its rounding bound of the k-th score), and those are
scored again each on its own, in float64 (exact products, error ~1e-16), then rounded to the product's precision:
the same bits for a row wherever it sits and whatever else is searched, so CLI and server, a filtered and an
unfiltered query, one query and a batch all order the same rows the same way.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

SCORE_BLOCK = 2**25  # scores computed at once (queries x rows): 128 MB of float32, whatever the query count
ROW_BLOCK = 65_536  # rows converted to float64 at a time when rescoring (32 MB at 512-d)

Rows = np.ndarray | Sequence[np.ndarray] | None  # all rows; an (R,) array for every query; one array per query


def rank(vectors: np.ndarray, queries: np.ndarray, k: int, rows: Rows = None,
         row_norm: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best rows of ``vectors`` (N, D) for each of ``queries`` (Q, D) by dot product, best first, equal
    scores in row order (lower row number first).

    ``rows``: None: among all rows; an (R,) array of row numbers: among those for every query (a filter's, in any
    order); a sequence of Q such arrays: each query among its own (an index's candidates). ``row_norm``: the largest
    norm of a row of ``vectors`` (:func:`largest_norm`; computed when None: pass it when ranking the same rows
    often). Returns the row numbers (Q, K) int64 and their scores (Q, K), K = ``min(k, rows searched)``; for one
    query given as (D,), (K,) each.
    """
    single = np.ndim(queries) == 1
    queries = np.atleast_2d(queries)  # (Q, D)
    row_norm = largest_norm(vectors) if row_norm is None else row_norm
    if rows is not None and len(rows) and np.ndim(rows[0]) == 1:  # one array of rows per query
        ranked = [rank_among(vectors, query[None], k, np.asarray(own), row_norm) for query, own in zip(queries, rows)]
        width = min(len(best[0]) for best, _ in ranked)
        best, scores = (np.concatenate([part[i][:, :width] for part in ranked]) for i in (0, 1))
    else:
        shared = None if rows is None else np.asarray(rows, dtype=np.int64)
        best, scores = rank_among(vectors, queries, k, shared, row_norm)
    return (best[0], scores[0]) if single else (best, scores)


def largest_norm(vectors: np.ndarray) -> float:
    """The largest Euclidean norm of a row of ``vectors`` (N, D) (0 for no rows; rows with NaN left out), a block of
    rows at a time."""
    squares = (float(np.nanmax(np.einsum("nd,nd->n", block, block), initial=0.0)) for block in
               (vectors[start:start + ROW_BLOCK] for start in range(0, len(vectors), ROW_BLOCK)))
    return float(np.sqrt(max(squares, default=0.0)))


def rank_among(vectors: np.ndarray, queries: np.ndarray, k: int, rows: np.ndarray | None,
               row_norm: float) -> tuple[np.ndarray, np.ndarray]:
    """:func:`rank` of ``queries`` (Q, D) among ``rows`` (R,) (None: all), a block of queries per matrix product."""
    candidates = vectors if rows is None else vectors[rows]  # (R, D)
    block = max(1, SCORE_BLOCK // max(len(candidates), 1))
    parts = [top_k(queries[start:start + block], candidates, rows, k, row_norm)
             for start in range(0, len(queries), block)]
    dtype = np.result_type(vectors.dtype, queries.dtype)
    best = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, 0), dtype=np.int64)
    return best, np.concatenate([p[1] for p in parts]) if parts else np.zeros((0, 0), dtype=dtype)


def top_k(queries: np.ndarray, candidates: np.ndarray, rows: np.ndarray | None, k: int,
          row_norm: float) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best of ``candidates`` (M, D) for each of ``queries`` (B, D) as row numbers (candidate ``j`` is row
    ``rows[j]``, or ``j`` when ``rows`` is None) and their exact scores, by score descending, then row number."""
    scores = queries @ candidates.T  # (B, M): a query's scores contiguous; each within its rounding bound
    scores[np.isnan(scores)] = -np.inf  # a broken row (NaN) ranks last instead of breaking the cut
    count, dtype = scores.shape[1], scores.dtype
    k = min(k, count)
    best, exact = np.zeros((len(queries), k), dtype=np.int64), np.zeros((len(queries), k), dtype=dtype)
    if k == 0:
        return best, exact
    kth = np.partition(scores, count - k, axis=1)[:, count - k]  # (B,): each query's k-th best score
    floors = kth - rounding_bound(queries, candidates.shape[1], row_norm, dtype)
    floors[np.isnan(floors)] = -np.inf  # an unbounded error (inf - inf): every candidate may be among the best
    lines, columns = np.nonzero(scores >= floors[:, None])  # every candidate that may be among the k best
    for line, pool in enumerate(np.split(columns, np.searchsorted(lines, np.arange(1, len(queries))))):
        pool_scores = exact_scores(candidates, pool, queries[line]).astype(dtype)
        numbers = pool if rows is None else rows[pool]
        order = np.lexsort((numbers, -pool_scores))[:k]  # by score, ties by row number
        best[line], exact[line] = numbers[order], pool_scores[order]
    return best, exact


def rounding_bound(queries: np.ndarray, width: int, row_norm: float, dtype: np.dtype) -> np.ndarray:
    """(B,) how far apart a matrix product's score and the exact one may be, twice over (the k-th score may be off
    too), plus the rounding of the exact one: a length-``width`` dot product in ``dtype`` is off by at most
    ``width * u * |q| * |v|`` (u: the unit roundoff, half of eps)."""
    eps = float(np.finfo(dtype).eps)
    return (width + 4) * eps * np.linalg.norm(queries.astype(np.float64), axis=1) * row_norm


def exact_scores(candidates: np.ndarray, pool: np.ndarray, query: np.ndarray) -> np.ndarray:
    """(P,) float64 dot products of ``query`` (D,) with ``candidates[pool]``, each row summed on its own in float64
    (the same bits for a row wherever it sits), a block of rows at a time."""
    query64 = query.astype(np.float64)
    parts = [(candidates[pool[start:start + ROW_BLOCK]].astype(np.float64) * query64).sum(axis=1)
             for start in range(0, len(pool), ROW_BLOCK)]
    return np.concatenate(parts) if parts else np.zeros(0)
