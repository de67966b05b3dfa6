"""The searchable rows of an embeddings file (``score``'s ``<out>.embeddings.parquet``): one per row scored ok, as
hits made on demand (:class:`EmbeddingRows`), and their video embeddings as one (N, D) float32 matrix."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import numpy as np
import pyarrow as pa

from ..errors import DataError, InputError
from ..storage import is_url, read_bytes
from ..video.sampling import clock


class SearchHit(NamedTuple):
    path: str
    score: float  # cosine similarity to the query
    start: float | None = None  # the segment's window in seconds, for a segmented run
    end: float | None = None

    def __str__(self) -> str:
        window = f" {clock(self.start)}-{clock(self.end)}" if self.start is not None else ""
        return f"{self.path}{window}"


class EmbeddingRows(Sequence[SearchHit]):
    """The searchable rows of an embeddings file as hits made on demand (score not set): the columns stay in Arrow,
    and only the rows a search returns become Python objects (a million hits built up front took longer than
    ranking them)."""

    def __init__(self, paths: pa.Array, starts: pa.Array | None = None, ends: pa.Array | None = None) -> None:
        self.paths, self.starts, self.ends = paths, starts, ends

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, row: int) -> SearchHit:  # type: ignore[override]
        if not -len(self) <= row < len(self):
            raise IndexError(row)
        window = (self.starts[row].as_py(), self.ends[row].as_py()) if self.starts is not None else (None, None)
        return SearchHit(self.paths[row].as_py(), 0.0, *window)

    def __iter__(self) -> Iterator[SearchHit]:
        return (self[row] for row in range(len(self)))

    def hits(self, rows: np.ndarray, scores: np.ndarray) -> list[SearchHit]:
        """The hits of row numbers ``rows`` (K,) with their ``scores`` (K,), in that order (a ranking's)."""
        return [self[int(row)]._replace(score=float(score)) for row, score in zip(rows, scores)]


def read_embeddings(embeddings: str | os.PathLike,
                    content: bytes | None = None) -> tuple[EmbeddingRows, np.ndarray, dict[str, str]]:
    """The rows scored ok in an embeddings file (as :class:`EmbeddingRows`: hits with no score yet), their video
    embeddings (N, D) float32, and the file's provenance metadata; a missing, unreadable or foreign file, or one
    without a single embedding, raises a one-line error naming it. ``content``: the file's bytes, already read
    (parsed instead of opening ``embeddings``, which then only names it). An object-storage URL (``s3://``) is read
    whole, in one request."""
    import pyarrow.parquet as pq

    path = str(embeddings) if is_url(embeddings) else Path(embeddings)
    missing = InputError(f"{path}: embeddings file not found (score writes <out>.embeddings.parquet)")
    if content is None and is_url(path):
        try:
            content = read_bytes(path, InputError)
        except FileNotFoundError:
            raise missing from None
    if content is None and not path.is_file():
        raise missing
    source = path if content is None else pa.BufferReader(content)
    try:
        schema = pq.read_schema(source)
        if not {"path", "video_embedding"} <= set(schema.names):
            raise DataError(f"{path}: not an embeddings file (needs columns path and video_embedding; found "
                            f"{schema.names})")
        segments = ["segment_start", "segment_end"] if "segment_start" in schema.names else []
        table = pq.read_table(source, columns=["path", "video_embedding", *segments])
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{path}: not a readable Parquet file ({err.__class__.__name__})") from None
    provenance = {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}
    total = table.num_rows
    if table.column("video_embedding").null_count:  # failed rows; the filter copies every column
        table = table.filter(table.column("video_embedding").is_valid())
    if not table.num_rows:
        raise DataError(f"{path}: no video embeddings to search (every one of its {total} rows failed)")
    columns = [table.column(name).combine_chunks() for name in ("path", *segments)]
    return EmbeddingRows(*columns), embedding_matrix(table.column("video_embedding"), table.num_rows), provenance


def embedding_matrix(column: pa.ChunkedArray, rows: int) -> np.ndarray:
    """A list<float> column without nulls as an (N, D) float32 array (no Python lists in between)."""
    values = pa.concat_arrays([chunk.flatten() for chunk in column.chunks]) if column.num_chunks else pa.array([])
    return np.ascontiguousarray(values.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(rows, -1)
