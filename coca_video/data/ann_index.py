"""An approximate nearest-neighbour index (usearch HNSW) of an embeddings file, kept beside it and never trusted
unverified.

    scores.embeddings.parquet         # the embeddings (see results.py)
    scores.embeddings.usearch         # the HNSW graph; key i is the i-th row that has an embedding
    scores.embeddings.usearch.json    # what the graph was built from: the file's size, mtime, row count, row digest

Both files are written atomically, the graph first: a reader that sees a new record with an old graph cannot
happen, and an old record with a new graph only describes an older file (so it is stale and ignored). usearch is an
optional extra (``pip install 'coca-video[index]'``).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Literal

import numpy as np

from ..errors import MissingExtraError
from ..io import atomic_path, atomic_write_text

if TYPE_CHECKING:
    from usearch.index import Index

Metric = Literal["cos", "ip"]
METRICS: tuple[Metric, ...] = ("cos", "ip")
FORMAT = 1  # version of the record; another value reads as stale
# HNSW settings tuned with benchmarks/bench_search.py (recall@10 >= 0.95 on random 512-d unit vectors)
CONNECTIVITY = 32  # graph edges per node
EXPANSION_ADD = 128  # candidate list while building
EXPANSION_SEARCH = 1024  # candidate list while searching (128 gave recall@10 0.61 on 20k random 512-d vectors)
CANDIDATES = 200  # rows an index proposes per query, rescored exactly (ef 1024 + 200: recall@10 0.996 there)


@dataclass(frozen=True)
class IndexSource:
    """What an index was built from: the embeddings file's size and mtime, and its indexed rows."""

    size: int
    mtime_ns: int
    rows: int
    digest: str  # sha256 of the indexed rows' ids, in key order


def index_paths(embeddings: str | os.PathLike) -> tuple[Path, Path]:
    """The graph file and its record beside ``embeddings``: ``<stem>.usearch`` and ``<stem>.usearch.json``."""
    graph = Path(embeddings).with_suffix(".usearch")
    return graph, graph.with_name(graph.name + ".json")


def rows_digest(row_ids: Iterable[str]) -> str:
    """sha256 of the row ids (one per indexed row, in key order)."""
    digest = hashlib.sha256()
    for row_id in row_ids:
        digest.update(row_id.encode("utf-8", "surrogatepass") + b"\n")
    return digest.hexdigest()


def source_of(embeddings: str | os.PathLike, row_ids: list[str]) -> IndexSource:
    """The :class:`IndexSource` of ``embeddings`` as it is now, whose indexed rows are ``row_ids``."""
    stat = os.stat(embeddings)
    return IndexSource(stat.st_size, stat.st_mtime_ns, len(row_ids), rows_digest(row_ids))


def usearch_index() -> type[Index]:
    """usearch's ``Index`` class; without usearch a one-line error naming the extra to install."""
    try:
        from usearch.index import Index
    except ImportError:
        raise MissingExtraError("usearch is not installed; pip install 'coca-video[index]'") from None
    return Index


def has_usearch() -> bool:
    """Whether usearch can be imported."""
    try:
        usearch_index()
    except MissingExtraError:
        return False
    return True


def write_index(embeddings: str | os.PathLike, vectors: np.ndarray, source: IndexSource,
                metric: Metric = "cos") -> Path:
    """Build the HNSW graph of ``vectors`` (N, D) float32, keys 0..N-1, and write it and its record beside
    ``embeddings`` atomically. Returns the graph's path."""
    index = build_graph(vectors, metric)
    graph, record = index_paths(embeddings)
    with atomic_path(graph) as tmp:
        index.save(str(tmp))
    atomic_write_text(record, json.dumps(index_record(source, metric, vectors.shape[1]), indent=2) + "\n")
    return graph


def build_graph(vectors: np.ndarray, metric: Metric = "cos") -> Index:
    """An in-memory HNSW graph of ``vectors`` (N, D) float32, keys 0..N-1, with the tuned settings (all cores)."""
    index = usearch_index()(ndim=vectors.shape[1], metric=metric, dtype="f32", connectivity=CONNECTIVITY,
                            expansion_add=EXPANSION_ADD, expansion_search=EXPANSION_SEARCH)
    index.add(np.arange(len(vectors), dtype=np.uint64), vectors, threads=0)
    return index


def index_record(source: IndexSource, metric: Metric, ndim: int) -> dict[str, Any]:
    """The JSON record written beside a graph: its format, metric, width and source."""
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


def open_index(embeddings: str | os.PathLike) -> Index | None:
    """The graph beside ``embeddings``, memory-mapped; None when it is missing or unreadable. Check the record
    with :func:`is_fresh` first: the graph itself says nothing about the file it was built from."""
    graph, _ = index_paths(embeddings)
    try:
        index = usearch_index().restore(str(graph), view=True)
    except (OSError, RuntimeError, ValueError):
        return None
    if index is not None:
        index.expansion_search = EXPANSION_SEARCH
    return index
