"""The approximate index of an embeddings file as search uses it: built by ``coca-video index``, trusted only while
it is fresh (built from the file as it is now), and asked for candidates that :func:`~.rank.rank` rescores exactly.
The int8 codes and their record: :mod:`coca_video.data.ann_index`."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..io import check_output_file
from .rank import rank
from .rows import EmbeddingRows, read_embeddings

# When search goes through a fresh index, measured with benchmarks/bench_search.py (random 512-d rows, 2 busy cores).
# One query per call, exact vs index: 0.7 vs 2.0 ms at 10,000 rows, 1.7-1.9 vs 1.5-2.5 at 20,000, 5.8 vs 3.2 at
# 50,000, 60 vs 31 at 500,000, 108-221 vs 92-102 at 1,000,000; 1,000 queries at once: index 3.8x exact at 50,000,
# 2.2-3.9x at 1,000,000. But checking that the index is fresh (the row digest) costs ~0.3-0.65 us a row per search
# (20 ms at 50,000 rows, 303-647 ms at 1,000,000; ~0.75 us a row for segment rows, whose windows are hashed too), and
# one query saves 3.6 ms at 50,000 rows, 54-105 ms at 1,000,000 (batched), so a search breaks even from about 6
# queries on above 50,000 rows (50,000: 6, 100,000: 6, 200,000: 4, 500,000: 6, 1,000,000: 5 and 11 in two runs, 6 in
# a third; 20,000: 9, 10,000: 26). Those exact timings ranked one query at a time; rank() now takes a call's queries
# in one matrix product, and exact search beat the index for many queries at once (bench_search.py, 2 busy cores,
# 512-d: 104 against 68 queries/s for 200 queries at 50,000 rows, 41 against 19.5 for 500 at 200,000), so these
# thresholds want measuring again on a quiet machine.
INDEX_MIN_ROWS = 50_000  # search uses a fresh index only for files of more rows than this...
INDEX_MIN_QUERIES = 6  # ...and only for at least this many queries at once


def index_candidates(index: Any, queries: np.ndarray, k: int) -> list[np.ndarray]:
    """The row numbers an approximate index proposes for each of ``queries`` (Q, D): ``max(k, CANDIDATES)`` of them,
    so that the exact rescoring of :func:`rank` recovers neighbours the int8 codes ranked a little too low."""
    from ..data.ann_index import CANDIDATES, nearest

    return nearest(index, queries, max(k, CANDIDATES))


def rank_through(index: Any, vectors: np.ndarray, queries: np.ndarray, k: int,
                 row_norm: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`rank` of ``queries`` (Q, D) (or one (D,)) among all rows of ``vectors`` (N, D): among the candidates
    of ``index`` rescored exactly when there is one (None: every row compared). Rows tied with the last candidate
    but not proposed by the index are not seen (a tie wider than the candidates, e.g. hundreds of equal rows)."""
    candidates = None if index is None else index_candidates(index, np.atleast_2d(queries), k)
    if candidates is not None and np.ndim(queries) == 1:
        candidates = candidates[0]
    return rank(vectors, queries, k, candidates, row_norm)


def search_row_ids(rows: EmbeddingRows) -> list[str]:
    """One id per searchable row, recorded (as a digest) by an index: path and segment window (``None`` for a
    whole video), tab-separated; read a column at a time (a row at a time took 1.8-2.5 us a row)."""
    paths = rows.paths.to_pylist()
    if rows.starts is None:
        return [f"{path}\tNone\tNone" for path in paths]
    windows = zip(rows.starts.to_pylist(), rows.ends.to_pylist())
    return [f"{path}\t{start}\t{end}" for path, (start, end) in zip(paths, windows)]


def fresh_index(embeddings: str | os.PathLike, rows: EmbeddingRows, ndim: int) -> Any | None:
    """The index beside ``embeddings`` when usearch is installed and the index was built from the file as it is now;
    None otherwise (a stale one with a one-line warning on stderr saying to rebuild it)."""
    from ..data.ann_index import has_usearch, is_fresh, open_index, read_record, source_of

    record = read_record(embeddings)
    if record is None or not has_usearch():
        return None
    if not is_fresh(record, source_of(embeddings, search_row_ids(rows)), ndim):
        print(f"warning: {embeddings}: its search index is stale (the file changed since it was built), so every "
              f"row is compared; rebuild it with: coca-video index {embeddings}", file=sys.stderr)
        return None
    return open_index(embeddings, len(rows), ndim)


def build_index(embeddings: str | os.PathLike, metric: Literal["cos", "ip"] = "cos") -> dict[str, Any]:
    """Write the approximate nearest-neighbour index of the rows with an embedding beside ``embeddings`` (see
    :mod:`coca_video.data.ann_index`); returns a summary: its path, rows, metric and seconds taken."""
    from ..data.ann_index import index_paths, source_of, usearch_search, write_index

    usearch_search()  # without usearch: fail before reading the file
    codes, record = index_paths(embeddings)
    check_output_file(codes, [Path(embeddings)], record.is_file(), "index")
    started = time.time()
    rows, vectors, _ = read_embeddings(embeddings)
    write_index(embeddings, vectors, source_of(embeddings, search_row_ids(rows)), metric)
    return {"index": str(codes), "rows": len(rows), "metric": metric, "seconds": round(time.time() - started, 2)}
