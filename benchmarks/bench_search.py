"""Approximate search through the int8 index vs exact search: recall@10, queries per second, build time, file size.

    PYTHONPATH=. python benchmarks/bench_search.py [--rows 1000000] [--dim 512] [--queries 1000]

Random unit vectors (the hardest case for an approximate index: no clusters) stand in for an embeddings file; queries
are further random unit vectors, independent of the rows. Both searches go the way ``search`` goes: exact compares
every row (``rank``, all queries of a call in one matrix product), approximate asks the index (written to a temporary
directory and memory-mapped, as ``coca-video index`` and ``search`` do) for candidates (``rank_through``) and rescores
them exactly. Recall@10 is
the share of the exact top 10 the index also returns. Index settings: ``coca_video.data.ann_index``. The default
million rows is 2 GB of float32 (and 0.5 GB of codes); ``--rows`` makes it smaller.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from coca_video.data.ann_index import IndexSource, open_index, rows_digest, write_index
from coca_video.search import EmbeddingRows, SearchHit, rank, rank_through
from coca_video.search.index import search_row_ids

K = 10
SINGLE = 20  # queries timed one search call at a time


def unit_vectors(rows: int, dim: int, seed: int) -> np.ndarray:
    """``rows`` random unit vectors of width ``dim``, float32, built in blocks to bound the temporary memory."""
    rng = np.random.default_rng(seed)
    out = np.empty((rows, dim), dtype=np.float32)
    for start in range(0, rows, 100_000):
        block = rng.standard_normal((min(100_000, rows - start), dim), dtype=np.float32)
        out[start:start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def timed(function, *args):
    """(result, seconds) of one call."""
    started = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - started


def exact_top(hits: EmbeddingRows, vectors: np.ndarray, queries: np.ndarray) -> list[list[SearchHit]]:
    return [hits.hits(*ranked) for ranked in zip(*rank(vectors, queries, K))]


def index_top(index: np.ndarray, hits: EmbeddingRows, vectors: np.ndarray,
              queries: np.ndarray) -> list[list[SearchHit]]:
    return [hits.hits(*ranked) for ranked in zip(*rank_through(index, vectors, queries, K))]


def recall(approx: list[list[SearchHit]], exact: list[list[SearchHit]]) -> float:
    """Mean share of each exact top-k found in the approximate top-k."""
    return float(np.mean([len({h.path for h in a} & {h.path for h in e}) / len(e) for a, e in zip(approx, exact)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=1_000)
    args = parser.parse_args()
    vectors = unit_vectors(args.rows, args.dim, seed=0)
    queries = unit_vectors(args.queries, args.dim, seed=1)
    hits = EmbeddingRows(pa.array([f"v{i}.mp4" for i in range(args.rows)]))  # as search reads them
    with tempfile.TemporaryDirectory() as tmp:
        embeddings = Path(tmp) / "bench.embeddings.parquet"  # never written: the index is only placed beside it
        codes, build = timed(write_index, embeddings, vectors, IndexSource(0, 0, args.rows, ""))
        print(f"{args.rows:,} x {args.dim} vectors, {args.queries:,} queries; index built in {build:.1f} s "
              f"({args.rows / build:,.0f} rows/s), {codes.stat().st_size / 2**20:,.0f} MiB on disk")
        compare(open_index(embeddings, args.rows, args.dim), hits, vectors, queries)


def compare(index: np.ndarray, hits: EmbeddingRows, vectors: np.ndarray, queries: np.ndarray) -> None:
    """Print recall@10 and queries/s of exact search and of search through ``index``."""
    exact, exact_s = timed(exact_top, hits, vectors, queries)
    approx, approx_s = timed(index_top, index, hits, vectors, queries)
    exact_qps, approx_qps = len(queries) / exact_s, len(queries) / approx_s
    print(f"{'':10s}{'recall@10':>10s}{'queries/s':>12s}")
    print(f"{'exact':10s}{1.0:10.3f}{exact_qps:12,.1f}")
    print(f"{'index':10s}{recall(approx, exact):10.3f}{approx_qps:12,.1f}   ({approx_qps / exact_qps:.1f}x exact)")
    one_exact = timed(lambda: [exact_top(hits, vectors, queries[i:i + 1]) for i in range(SINGLE)])[1] / SINGLE
    one_index = timed(lambda: [index_top(index, hits, vectors, queries[i:i + 1]) for i in range(SINGLE)])[1] / SINGLE
    check = timed(lambda: rows_digest(search_row_ids(hits)))[1]
    print(f"one query per call: exact {1e3 * one_exact:,.1f} ms, index {1e3 * one_index:,.1f} ms; "
          f"checking the index is fresh (row digest): {1e3 * check:,.1f} ms per search")


if __name__ == "__main__":
    main()
