"""A dedup file (``coca-video dedup``'s ``--out``): one row per searchable row of an embeddings file, in its order,
saying whether SemDeDup kept it and, if not, which kept row it duplicates; and the rows a search shows through it.

Columns: ``path`` (+ ``segment_start``/``segment_end`` for segment or scene rows), ``keep``, ``duplicate_of`` (the
kept row's path; null when kept), ``duplicate_of_start``/``duplicate_of_end`` (its window, segment rows only),
``similarity`` (cosine to the most similar higher-ranked row of its cluster; null for a cluster's first) and
``cluster``. The Parquet metadata key ``coca_video_dedup`` holds the settings (JSON).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import DataError, InputError
from .rows import EmbeddingRows
from .semdedup import Dedup

DEDUP_KEY = b"coca_video_dedup"


def dedup_table(rows: EmbeddingRows, result: Dedup, settings: dict[str, Any]) -> pa.Table:
    """The dedup file's table for ``rows`` (N) and SemDeDup's ``result`` on their vectors; ``settings`` (eps,
    clusters, ...) go into its metadata."""
    removed = ~result.keep
    target = pa.array(np.where(removed, result.duplicate_of, 0))  # a placeholder row where kept, masked below
    columns: dict[str, pa.Array] = {"path": rows.paths}
    if rows.starts is not None:
        columns |= {"segment_start": rows.starts, "segment_end": rows.ends}
    columns |= {"keep": pa.array(result.keep),
                "duplicate_of": masked(rows.paths.take(target), removed)}
    if rows.starts is not None:
        columns |= {"duplicate_of_start": masked(rows.starts.take(target), removed),
                    "duplicate_of_end": masked(rows.ends.take(target), removed)}
    similarity = pa.array(result.similarity, mask=np.isnan(result.similarity))
    columns |= {"similarity": similarity, "cluster": pa.array(result.cluster)}
    return pa.table(columns).replace_schema_metadata({DEDUP_KEY: json.dumps(settings).encode()})


def masked(values: pa.Array, where: np.ndarray) -> pa.Array:
    """``values`` with nulls where ``where`` (N,) is False."""
    return pc.if_else(pa.array(where), values, pa.nulls(len(values), values.type))


def is_dedup_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a Parquet file ``coca-video dedup`` wrote (so a rerun may replace it)."""
    import pyarrow.parquet as pq

    try:
        return DEDUP_KEY in (pq.read_schema(path).metadata or {})
    except (pa.ArrowException, OSError):
        return False


def kept_rows(dedup: str | os.PathLike, rows: EmbeddingRows, embeddings: str | os.PathLike) -> np.ndarray:
    """The row numbers (R,) int64 of ``rows`` (those of ``embeddings``) that the dedup file ``dedup`` keeps; a
    missing or foreign file, or one made from other rows (another embeddings file, or this one rewritten since),
    raises a one-line error naming both files."""
    import pyarrow.parquet as pq

    if not Path(dedup).is_file():
        raise InputError(f"{dedup}: dedup file not found (coca-video dedup EMBEDDINGS --out FILE writes one)")
    if not is_dedup_file(dedup):
        raise DataError(f"{dedup}: not a dedup file (coca-video dedup writes one)")
    names = pq.read_schema(dedup).names
    segments = ["segment_start"] if rows.starts is not None else []
    table = pq.read_table(dedup, columns=["path", "keep", *[c for c in segments if c in names]])
    same = table.num_rows == len(rows) and ("segment_start" in names) == bool(segments) and \
        table.column("path").combine_chunks().equals(rows.paths) and \
        all(table.column(c).combine_chunks().equals(rows.starts) for c in segments)
    if not same:
        raise DataError(f"{dedup}: made from other rows than those of {embeddings} (another embeddings file, or one "
                        f"rescored since); run coca-video dedup {embeddings} again")
    return np.flatnonzero(table.column("keep").to_numpy(zero_copy_only=False))
