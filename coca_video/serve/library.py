"""The rows a server searches: an embeddings file (and optionally its scores table) read whole into an immutable
:class:`Snapshot`, and a :class:`Library` that swaps in a new snapshot when the files are rewritten.

A snapshot is built from the bytes of one read of each file (so the digest and the rows are of the same bytes,
whatever happens to the path meanwhile); ``score`` replaces its outputs by rename, so such a read is always of a
complete file. A file written in place by something else and caught half way fails to parse: the old snapshot stays
and the failure is reported in ``Library.reload_error``. Requests take ``library.current`` once and use only it, so
a reload between two lines of a request cannot mix two files' rows.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import DataError, InputError
from ..search import INDEX_MIN_ROWS, EmbeddingRows, fresh_index, largest_norm, rank, rank_through, read_embeddings
from ..search.dedup import kept_rows


@dataclass(frozen=True)
class FileState:
    """What a file was when it was read: size, mtime (ns) and the sha256 of the bytes read."""

    size: int
    mtime_ns: int
    digest: str


def stat_key(path: Path | None) -> tuple[int, int] | None:
    """(size, mtime_ns) of ``path`` now; None when it is missing (or no path)."""
    if path is None:
        return None
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def read_file(path: Path) -> tuple[bytes, FileState]:
    """The bytes of one read of ``path`` and their :class:`FileState` (size and mtime from the open file)."""
    try:
        with open(path, "rb") as handle:
            stat = os.fstat(handle.fileno())
            content = handle.read()
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except OSError as err:
        raise InputError(f"{path}: cannot be read ({err.strerror})") from None
    return content, FileState(len(content), stat.st_mtime_ns, hashlib.sha256(content).hexdigest())


@dataclass
class Snapshot:
    """One consistent read of the library: row ``i`` is the i-th row with an embedding in the embeddings file.

    ``labels``/``captions``: per row, from the scores table (None without one, or without that column).
    ``index``: the int8 index codes when the file has more than ``INDEX_MIN_ROWS`` rows and its index is fresh.
    ``shown``: the row numbers a dedup file keeps (None: every row); the others are in no result."""

    generation: int
    rows: EmbeddingRows
    vectors: np.ndarray  # (N, D) float32, as stored (score stores them normalised)
    provenance: dict[str, str]
    states: dict[str, FileState]
    labels: np.ndarray | None = None  # (N,) object: top-1 label per row
    captions: np.ndarray | None = None  # (N,) object
    index: Any = None
    row_norm: float | None = None  # the largest norm of a row of vectors (None: computed by each rank)
    shown: np.ndarray | None = None  # (R,) int64 row numbers a dedup file keeps; None: all
    loaded_at: float = field(default_factory=time.time)

    def __len__(self) -> int:
        return len(self.rows)

    def matching(self, label: str | None = None, path: str | None = None) -> np.ndarray | None:
        """Row numbers whose top-1 label is ``label`` and whose path contains ``path`` (case-insensitive), among the
        rows shown (a dedup file's kept ones); None when every row is (no filter, no dedup file)."""
        if not label and not path:
            return self.shown
        keep = np.ones(len(self), dtype=bool) if self.shown is None else np.zeros(len(self), dtype=bool)
        if self.shown is not None:
            keep[self.shown] = True
        if label:
            keep &= (self.labels == label) if self.labels is not None else False
        if path:
            keep &= pc.match_substring(self.rows.paths, path, ignore_case=True).to_numpy(zero_copy_only=False)
        return np.flatnonzero(keep)

    def rank(self, query: np.ndarray, count: int, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``count`` best row numbers for ``query`` (D,) by cosine, best first (equal scores in row order), and
        their scores: among ``rows`` (a filter's) when given, else among the rows shown (all, through the int8 index
        when there is a fresh one, its candidates rescored exactly; or a dedup file's kept rows)."""
        rows = self.shown if rows is None else rows
        if rows is not None:
            return rank(self.vectors, query, count, rows, self.row_norm)
        return rank_through(self.index, self.vectors, query, count, self.row_norm)

    def rank_many(self, queries: np.ndarray, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """:meth:`rank` of each of ``queries`` (B, D) among the rows shown, in one matrix product (or index scan)."""
        if self.shown is not None:
            best, scores = rank(self.vectors, queries, count, self.shown, self.row_norm)  # (B, K) each
        else:
            best, scores = rank_through(self.index, self.vectors, queries, count, self.row_norm)
        return list(zip(best, scores))

    def same_video(self, row: int) -> np.ndarray:
        """Row numbers of the rows (segments) of the video of ``row``, ``row`` included."""
        return np.flatnonzero(pc.equal(self.rows.paths, self.rows.paths[row]).to_numpy(zero_copy_only=False))

    def window(self, row: int) -> tuple[float | None, float | None]:
        """The (start, end) seconds of ``row``'s segment; (None, None) for a whole video."""
        if self.rows.starts is None:
            return None, None
        return self.rows.starts[row].as_py(), self.rows.ends[row].as_py()

    def label_set(self, limit: int = 1000) -> list[str]:
        """The distinct top-1 labels, sorted (at most ``limit``)."""
        if self.labels is None:
            return []
        return sorted({str(v) for v in self.labels if v is not None})[:limit]


def load_snapshot(embeddings: Path, scores: Path | None, generation: int, dedup: Path | None = None) -> Snapshot:
    """A :class:`Snapshot` of ``embeddings`` (and ``scores``, and the rows ``dedup`` keeps): each file read once;
    raises a one-line :class:`~coca_video.errors.UserError` naming the file when one is missing or unreadable, or
    when ``dedup`` was made from other rows."""
    content, state = read_file(embeddings)
    rows, vectors, provenance = read_embeddings(embeddings, content)
    states = {"embeddings": state}
    labels = captions = None
    if scores is not None:
        table, states["scores"] = read_scores(scores)
        labels, captions = align_scores(rows, table, scores)
    shown = None if dedup is None else kept_rows(dedup, rows, embeddings)
    if dedup is not None:
        states["dedup"] = read_file(dedup)[1]  # a rewritten dedup file is a new snapshot too
    index = fresh_index(embeddings, rows, vectors.shape[1]) if len(rows) > INDEX_MIN_ROWS else None
    return Snapshot(generation, rows, vectors, provenance, states, labels, captions, index, largest_norm(vectors),
                    shown=shown)


def read_scores(path: Path) -> tuple[pa.Table, FileState]:
    """A scores table (``score --out``: .parquet or .csv) from one read, with its state."""
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    content, state = read_file(path)
    try:
        if path.suffix.lower() == ".csv":
            table = pcsv.read_csv(io.BytesIO(content))
        else:
            table = pq.read_table(pa.BufferReader(content))
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{path}: not a readable scores table ({err.__class__.__name__})") from None
    if "path" not in table.column_names:
        raise DataError(f"{path}: not a scores table (no path column; found {table.column_names})")
    return table, state


def align_scores(rows: EmbeddingRows, table: pa.Table, path: Path) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The scores table's top-1 label and caption for each embeddings row, matched on path (and segment start);
    None for a column the table does not have."""
    import pandas as pd

    keys = ["path", *(["segment_start"] if rows.starts is not None and "segment_start" in table.column_names else [])]
    wanted = [c for c in ("top1_label", "caption") if c in table.column_names]
    if not wanted:
        return None, None
    left = pd.DataFrame({"path": rows.paths.to_pandas()})
    if len(keys) > 1:
        left["segment_start"] = rows.starts.to_pandas().astype(float)
    right = table.select([*keys, *wanted]).to_pandas().drop_duplicates(keys, keep="last")
    if len(keys) > 1:
        right["segment_start"] = right["segment_start"].astype(float)
    merged = left.merge(right, on=keys, how="left", validate="many_to_one")
    column = {c: merged[c].astype(object).where(merged[c].notna(), None).to_numpy() for c in wanted}
    return column.get("top1_label"), column.get("caption")


def digests(snapshot: Snapshot) -> dict[str, str]:
    """The sha256 of each file ``snapshot`` was read from."""
    return {name: state.digest for name, state in snapshot.states.items()}


class Library:
    """The current :class:`Snapshot` of an embeddings file (and scores table), reloaded by a watcher thread when
    either file changes (size or mtime, then digest). ``current`` is always a whole snapshot."""

    def __init__(self, embeddings: str | os.PathLike, scores: str | os.PathLike | None = None,
                 poll_seconds: float = 1.0, dedup: str | os.PathLike | None = None) -> None:
        self.embeddings = Path(embeddings)
        self.scores = Path(scores) if scores else None
        self.dedup = Path(dedup) if dedup else None
        self.poll_seconds = poll_seconds
        self._seen = self._stat()  # before the read: a rewrite during it is seen at the first check
        self.current = load_snapshot(self.embeddings, self.scores, generation=1, dedup=self.dedup)
        self.reload_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _stat(self) -> tuple:
        index_record = self.embeddings.with_suffix(".index.json")
        return stat_key(self.embeddings), stat_key(self.scores), stat_key(index_record), stat_key(self.dedup)

    def check(self) -> bool:
        """Reload when a file changed since the last look; True when a new snapshot was swapped in. A failed read
        keeps the current snapshot (and sets ``reload_error``); the next change is tried again."""
        seen = self._stat()
        if seen == self._seen:
            return False
        self._seen = seen
        try:
            fresh = load_snapshot(self.embeddings, self.scores, self.current.generation + 1, self.dedup)
        except Exception as err:  # noqa: BLE001 -- a half-written or foreign file: keep serving the old rows
            self.reload_error = f"{err.__class__.__name__}: {err}"
            print(f"coca-video serve: warning: kept the rows loaded before; reading the new files failed "
                  f"({self.reload_error})", file=sys.stderr, flush=True)
            return False
        self.reload_error = None
        if digests(fresh) == digests(self.current):  # touched, or rewritten with the same bytes: the same rows
            return False
        self.current = fresh  # one reference assignment: requests see the old snapshot or the new one
        print(f"coca-video serve: reloaded {self.embeddings} ({len(fresh)} rows, generation {fresh.generation})",
              file=sys.stderr, flush=True)
        return True

    def start(self) -> None:
        """Start the watcher thread (a daemon; :meth:`stop` ends it)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="coca-video-reload", daemon=True)
            self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            self.check()

    def stop(self) -> None:
        """End the watcher thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
