"""An approximate nearest-neighbour index of an embeddings file: its rows quantised to int8, scanned in full with
usearch's SIMD kernels, kept beside the file and never trusted unverified.

    scores.embeddings.parquet         # the embeddings (see results.py)
    scores.embeddings.index.npy       # row i: the i-th row that has an embedding, as int8 (numpy .npy, memory-mapped)
    scores.embeddings.index.json      # what the codes were built from: the file's size, mtime, row count, row digest

A scan of int8 codes reads a quarter of the bytes of the float32 rows and runs on integer SIMD; search rescores the
``CANDIDATES`` best rows of the scan exactly, so quantisation only decides which rows are rescored. Measured with
benchmarks/bench_search.py on 1,000,000 random 512-d unit vectors and 1,000 independent random queries (2 busy
cores, three runs): built in 4.7-6.3 s (158,713-211,251 rows/s), 488 MiB, recall@10 1.000, 17.8-21.2 queries/s
against exact search's 5.1-9.4 (2.2-3.9x).
An HNSW graph (usearch) did worse on such data: at 100,000 rows (i8, connectivity 32, expansion_add 128) it needed
expansion_search 4,096 for recall@10 0.990 (1,024: 0.787; 2,048: 0.943) and then answered 58 queries/s against the
int8 scan's ~300 and exact search's 71, built at 904 rows/s (a million rows: 18+ minutes), and the expansion it needs
grows with the rows (1,024 in f32: recall@10 0.996 at 20,000 rows, 0.932 at 50,000).

Both files are written atomically, the codes first: a reader that sees a new record with old codes cannot happen, and
an old record with new codes only describes an older file (so it is stale and ignored). usearch is an optional extra
(``pip install 'coca-video[index]'``).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Literal

import numpy as np

from ..errors import MissingExtraError
from ..io import atomic_path, atomic_write_text

Metric = Literal["cos", "ip"]
METRICS: tuple[Metric, ...] = ("cos", "ip")
FORMAT = 2  # version of the record; another value reads as stale (1: a usearch HNSW graph)
CANDIDATES = 200  # rows the scan proposes per query, rescored exactly (recall@10 1.000 at 1M random rows; 50: the same)
BLOCK = 65_536  # rows quantised at a time, bounding the float32 temporaries (128 MB at 512-d)


@dataclass(frozen=True)
class IndexSource:
    """What an index was built from: the embeddings file's size and mtime, and its indexed rows."""

    size: int
    mtime_ns: int
    rows: int
    digest: str  # sha256 of the indexed rows' ids, in row order


def index_paths(embeddings: str | os.PathLike) -> tuple[Path, Path]:
    """The codes file and its record beside ``embeddings``: ``<stem>.index.npy`` and ``<stem>.index.json``."""
    embeddings = Path(embeddings)
    return embeddings.with_suffix(".index.npy"), embeddings.with_suffix(".index.json")


def rows_digest(row_ids: Iterable[str]) -> str:
    """sha256 of the row ids (one per indexed row, in row order)."""
    return hashlib.sha256("".join(f"{row_id}\n" for row_id in row_ids).encode("utf-8", "surrogatepass")).hexdigest()


def source_of(embeddings: str | os.PathLike, row_ids: list[str]) -> IndexSource:
    """The :class:`IndexSource` of ``embeddings`` as it is now, whose indexed rows are ``row_ids``."""
    stat = os.stat(embeddings)
    return IndexSource(stat.st_size, stat.st_mtime_ns, len(row_ids), rows_digest(row_ids))


def usearch_search() -> Callable[..., Any]:
    """usearch's ``search`` function; without usearch a one-line error naming the extra to install."""
    try:
        from usearch.index import search
    except ImportError:
        raise MissingExtraError("usearch is not installed; pip install 'coca-video[index]'") from None
    return search


def has_usearch() -> bool:
    """Whether usearch can be imported."""
    try:
        usearch_search()
    except MissingExtraError:
        return False
    return True


def write_index(embeddings: str | os.PathLike, vectors: np.ndarray, source: IndexSource,
                metric: Metric = "cos") -> Path:
    """Quantise ``vectors`` (N, D) float32 to int8 codes and write them and their record beside ``embeddings``
    atomically. Returns the codes' path."""
    codes, record = index_paths(embeddings)
    with atomic_path(codes) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.int8, shape=vectors.shape)
        quantise_rows(vectors, metric, out)
        out.flush()
        del out
    atomic_write_text(record, json.dumps(index_record(source, metric, vectors.shape[1]), indent=2) + "\n")
    return codes


def quantise_rows(vectors: np.ndarray, metric: Metric, out: np.ndarray) -> np.ndarray:
    """``vectors`` (N, D) float32 as int8 codes in ``out`` (N, D), whose dot products rank rows as ``metric`` does:
    for "cos" each row is normalised first; one scale for all rows maps the largest magnitude to 127."""
    peak = max((float(np.abs(block).max()) for block in row_blocks(vectors, metric)), default=0.0)
    scale = 127.0 / peak if peak > 0 else 1.0
    for start, block in zip(range(0, len(vectors), BLOCK), row_blocks(vectors, metric)):
        out[start:start + len(block)] = np.clip(np.rint(block * scale), -127, 127)
    return out


def row_blocks(vectors: np.ndarray, metric: Metric) -> Iterable[np.ndarray]:
    """``vectors`` in blocks of ``BLOCK`` rows, each row normalised when ``metric`` is "cos" (zero rows stay zero)."""
    for start in range(0, len(vectors), BLOCK):
        block = np.asarray(vectors[start:start + BLOCK], dtype=np.float32)
        if metric == "cos":
            block = block / np.maximum(np.linalg.norm(block, axis=1, keepdims=True), np.finfo(np.float32).tiny)
        yield block


def query_codes(queries: np.ndarray) -> np.ndarray:
    """(Q, D) float queries as int8, each scaled on its own so its largest magnitude is 127 (a positive scale per
    query leaves the order of its dot products unchanged)."""
    queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    peak = np.abs(queries).max(axis=1, keepdims=True)
    return np.clip(np.rint(queries * (127.0 / np.where(peak > 0, peak, 1.0))), -127, 127).astype(np.int8)


def nearest(codes: np.ndarray, queries: np.ndarray, count: int) -> list[np.ndarray]:
    """For each of the (Q, D) ``queries``, the row numbers of the ``count`` largest dot products with ``codes``
    (an exact scan of the int8 codes, queries in parallel on all cores), best first."""
    count = min(count, len(codes))
    matches = usearch_search()(codes, query_codes(queries), count, "ip", exact=True, threads=0)
    if len(queries) == 1:  # usearch answers one query with its Matches, already cut to how many it found
        return [matches.keys.astype(np.int64)]
    return [keys[:found].astype(np.int64) for keys, found in zip(matches.keys, matches.counts)]


def index_record(source: IndexSource, metric: Metric, ndim: int) -> dict[str, Any]:
    """The JSON record written beside the codes: its format, metric, width and source."""
    return {"format": FORMAT, "metric": metric, "ndim": ndim, "source": asdict(source)}


def read_record(embeddings: str | os.PathLike) -> dict[str, Any] | None:
    """The record of the index beside ``embeddings``; None when there is none (or it is unreadable)."""
    _, record = index_paths(embeddings)
    try:
        return json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_fresh(record: dict[str, Any], source: IndexSource, ndim: int) -> bool:
    """Whether ``record`` describes an index built from exactly ``source`` (vectors of width ``ndim``)."""
    return (record.get("format") == FORMAT and record.get("ndim") == ndim and record.get("metric") in METRICS
            and record.get("source") == asdict(source))


def open_index(embeddings: str | os.PathLike, rows: int, ndim: int) -> np.ndarray | None:
    """The int8 codes beside ``embeddings``, memory-mapped; None when they are missing, unreadable or not
    (``rows``, ``ndim``). Check the record with :func:`is_fresh` first: the codes say nothing about the file they
    were built from."""
    codes, _ = index_paths(embeddings)
    try:
        index = np.load(codes, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return None
    return index if index.dtype == np.int8 and index.shape == (rows, ndim) else None
