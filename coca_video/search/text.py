"""Text search of an embeddings file, as ``coca-video search`` runs it: the file read and the text model created
once for all queries, every query ranked in one :func:`~.rank.rank` (through a fresh index for many queries on a
large file), and the hits as JSON-ready rows."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence, overload

from ..errors import ConfigError
from .dedup import kept_rows
from .index import INDEX_MIN_QUERIES, INDEX_MIN_ROWS, fresh_index, rank_through
from .query import encode_queries, query_model
from .rank import rank
from .rows import SearchHit, read_embeddings

SEARCH_ROW_KEYS = ("query", "rank", "path", "score", "start", "end")


@overload
def search(embeddings: str | os.PathLike, queries: str, k: int = 10, model: str | None = None,
           index_min_rows: int = INDEX_MIN_ROWS, pretrained: str | None = None,
           dedup: str | os.PathLike | None = None) -> list[SearchHit]:
    ...


@overload
def search(embeddings: str | os.PathLike, queries: Sequence[str], k: int = 10, model: str | None = None,
           index_min_rows: int = INDEX_MIN_ROWS, pretrained: str | None = None,
           dedup: str | os.PathLike | None = None) -> list[list[SearchHit]]:
    ...


def search(embeddings: str | os.PathLike, queries: str | Sequence[str], k: int = 10, model: str | None = None,
           index_min_rows: int = INDEX_MIN_ROWS,
           pretrained: str | None = None,
           dedup: str | os.PathLike | None = None) -> list[SearchHit] | list[list[SearchHit]]:
    """The ``k`` videos (or segments) whose embeddings are closest to a text query (cosine), best first, equal
    scores in row order (the file's order).

    ``queries``: one query (returns its hits) or a list (returns one list of hits per query); the embeddings file is
    read and the text model created once for all of them. ``model`` and ``pretrained``: the text model and its
    weights (default: those named in the file's provenance, which made the embeddings). A file of more than
    ``index_min_rows`` rows is searched for ``INDEX_MIN_QUERIES`` or more queries through its approximate index
    (``coca-video index``) when that exists and was built from the file as it is now; else every row is compared (a
    stale index is ignored with a warning). ``dedup``: a ``coca-video dedup`` file of these rows; the rows it
    removed are left out (the kept rows are ranked exactly, without the index).
    """
    if k < 1:
        raise ConfigError(f"-k must be >= 1, got {k}")
    texts = [queries] if isinstance(queries, str) else list(queries)
    if not texts:
        raise ConfigError("search: no queries given")
    rows, vectors, provenance = read_embeddings(embeddings)
    kept = None if dedup is None else kept_rows(dedup, rows, embeddings)  # (R,) row numbers
    text = encode_queries(texts, *query_model(model, pretrained, provenance)).numpy()  # (Q, D)
    if kept is not None:
        best, scores = rank(vectors, text, k, kept)  # (Q, K) each
    else:
        use_index = len(rows) > index_min_rows and len(texts) >= INDEX_MIN_QUERIES
        index = fresh_index(embeddings, rows, vectors.shape[1]) if use_index else None
        best, scores = rank_through(index, vectors, text, k)
    ranked = [rows.hits(numbers, values) for numbers, values in zip(best, scores)]
    return ranked[0] if isinstance(queries, str) else ranked


def search_rows(queries: Sequence[str], results: Sequence[Sequence[SearchHit]]) -> list[dict[str, Any]]:
    """``search``'s hits per query as flat JSON-ready rows: query, rank (from 1), path, score, start, end."""
    return [dict(zip(SEARCH_ROW_KEYS, (query, rank, hit.path, hit.score, hit.start, hit.end)))
            for query, hits in zip(queries, results) for rank, hit in enumerate(hits, start=1)]


def is_search_output(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds rows :func:`search_rows` wrote (so a later search may replace it)."""
    try:
        rows = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(rows, list) and all(isinstance(r, dict) and tuple(r) == SEARCH_ROW_KEYS for r in rows)
