"""Per-video results on disk that survive crashes: append-only Parquet parts, resume keys, and a final merge.

Layout for an output ``scores.parquet`` (or ``.csv``)::

    scores.parquet.parts/rank0-L0-000001.parquet   # one part per flushed batch, written atomically
    scores.parquet                                 # the merged table (no embedding columns)
    scores.embeddings.parquet                      # path + embedding columns, same rows

The output may be an ``s3://`` URL (see :mod:`coca_video.storage`): the parts, settings and lock are then objects
under ``<out>.parts/``, each written whole, and input paths may be URLs (keyed by size and last-modified time).

A crash or Ctrl-C loses at most the batch in flight: every flushed part is a complete file (temp file + rename).
Parts are compacted level by level (``fanout`` parts of one level become one part of the next), so a run over a
million videos keeps a few hundred files and rewrites each row only log(N) times. A file is identified by
(path, size, mtime); when several rows name the same path, the newest (``scored_at``) wins.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import Any, Callable, Collection, Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..config import DecodeConfig, ModelConfig
from ..errors import OutputError
from ..io import atomic_write_table, atomic_write_text, exclusive_lock, is_disk_full
from ..video.tar_members import find_member, split_member
from ..storage import PathLike, child, exists, files_in, is_dir, is_url, name_of, parquet_source, read_bytes, remove, \
    sibling, stat

KEY_COLUMNS = ("path", "size", "mtime")
SEGMENT_COLUMNS = ("segment_start", "segment_end")  # present when videos are scored as windows (seconds)
FileKey = tuple[str, int, float]  # (path, size, mtime)
PART_NAME = re.compile(r"rank(\d+)-L(\d+)-(\d+)\.parquet$")


def file_key(path: PathLike) -> FileKey:
    """(path, size, mtime) of a file or object (the path as the file system has it; see :func:`stored_key`); of a tar
    member (``shard.tar#key.mp4``) its size and the mtime in its tar header."""
    member = split_member(path)
    if member is not None:
        found = find_member(*member)
        return str(path), found.size, found.mtime
    size, mtime = stat(path)
    return str(path), size, mtime


def input_key(path: PathLike) -> FileKey:
    """:func:`file_key` of an input, or ``(path, -1, 0.0)`` for one that is missing or not a file (it gets an
    error row)."""
    try:
        key = file_key(path)
    except (FileNotFoundError, NotADirectoryError):
        return str(path), -1, 0.0
    return key if is_url(path) or split_member(path) or os.path.isfile(path) else (str(path), -1, 0.0)


def stored_path(path: str | Path) -> str:
    """``path`` as result tables store it: valid UTF-8 as is; the bytes of a name that is not valid UTF-8 (Linux
    allows any) as ``\\xNN`` escapes, so such a file gets its row instead of failing the whole batch's write."""
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


def lines_digest(lines: list[str]) -> str:
    """A short digest of a list of strings (a class list, prompt templates) for a store's settings."""
    return hashlib.sha256("\n".join(lines).encode("utf-8", "surrogatepass")).hexdigest()[:16]


def weights_stamp(name: str) -> list[int]:
    """(size, mtime in ns) of a checkpoint folder's weights file, [] for other models (a named architecture, a hub
    repo, whose snapshot is named by the repo): a folder that a new finetuning run rewrote under the same name has
    another stamp, so rows of its old weights are never taken for the new ones'."""
    from ..model import checkpoint_folder

    folder = None if name.startswith("hf-hub:") else checkpoint_folder(name)
    weights = folder / "model.safetensors" if folder is not None else None
    if weights is None or not weights.is_file():
        return []
    found = weights.stat()
    return [found.st_size, found.st_mtime_ns]


def encoding_settings(model: ModelConfig, decode: DecodeConfig) -> dict[str, Any]:
    """What decides an encoded row in every store (a task adds its own: labels, caption options, pooling...): the
    model, its weights (``pretrained``, and the stamp of a checkpoint folder's weights file), the resolution
    (``model.image_size``), the precision as it runs (so after ``load_model`` resolved ``auto``) and the frames
    rule. The stamp is left out for models that have none, so stores recorded before it was kept still match."""
    settings = {"model": model.name, "pretrained": model.pretrained, "precision": model.precision,
                "image_size": model.image_size, "frames": decode.frames_rule()}
    stamp = weights_stamp(model.name)
    return settings | ({"weights": stamp} if stamp else {})


def settings_digest(settings: dict[str, Any]) -> str:
    """A short name for a store made under ``settings`` (a cache keeps one store per settings)."""
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def row_key(row: dict[str, Any]) -> tuple:
    """A stored row's key: (path, size, mtime), plus its window start when it is a window's row (a store can hold
    both: files whose headers could not be read stay whole in a segmented run, Kinetics clips mix trimmed files and
    windows of untrimmed ones)."""
    start = row.get(SEGMENT_COLUMNS[0])
    return (row["path"], row["size"], row["mtime"], *(() if start is None else (start,)))


def stored_key(key: FileKey) -> FileKey:
    """A file key as the store records it (:func:`stored_path`), for comparing with :meth:`PartStore.done_keys`."""
    return stored_path(key[0]), key[1], key[2]


class PartStore:
    """Append-only result parts of one output, written by ``rank``."""

    def __init__(self, output: PathLike, rank: int = 0, fanout: int = 32) -> None:
        self.output = output if is_url(output) else Path(output)
        self.folder = sibling(self.output, name_of(self.output) + ".parts")
        self.rank, self.fanout = rank, fanout

    def exists(self) -> bool:
        """Whether this output's parts folder exists (then ``out`` and its sidecar are ours to replace)."""
        return is_dir(self.folder)

    def parts(self, rank: int | None = None) -> list[PathLike]:
        """Every complete part (all ranks unless ``rank``), oldest first."""
        found = [(p, PART_NAME.search(name_of(p))) for p in files_in(self.folder)]
        found = [(p, m) for p, m in found if m and (rank is None or int(m.group(1)) == rank)]
        return [p for p, _ in sorted(found, key=lambda pm: (int(pm[1].group(3)), int(pm[1].group(1))))]

    def ranks(self) -> set[int]:
        """The ranks that have complete parts here."""
        return {part_rank(p) for p in self.parts()}

    def opener(self) -> functools.partial[PartStore]:
        """``open(rank)``: this output's store written by another rank (a Ray encode actor's); picklable."""
        return functools.partial(PartStore, self.output, fanout=self.fanout)

    def rows_since(self, earlier_ranks: frozenset[int]) -> list[dict[str, Any]]:
        """The key columns, ``segment_start`` and ``status`` of the rows in parts of ranks not in ``earlier_ranks``
        (those that were not there when a run began: its own)."""
        for _ in range(3):  # a part that another writer compacts away meanwhile: its merged part is listed next time
            try:
                return [row for part in self.parts() if part_rank(part) not in earlier_ranks
                        for row in read_part(part, [*KEY_COLUMNS, SEGMENT_COLUMNS[0], "status"]).to_pylist()]
            except FileNotFoundError:
                continue
        return []

    def done_keys(self) -> set[tuple]:
        """Keys of rows whose newest version has status ``ok``: (path, size, mtime), plus segment_start for rows of
        a segmented run."""
        table = self.read(columns=[*KEY_COLUMNS, SEGMENT_COLUMNS[0], "status", "scored_at"])
        if table is None:
            return set()
        return {row_key(row) for row in table.to_pylist() if row["status"] == "ok"}

    def append(self, rows: list[dict[str, Any]]) -> None:
        """Flush ``rows`` as a new level-0 part, then compact full levels."""
        if not rows:
            return
        stamp = time.time()
        columns = list(dict.fromkeys(key for row in rows for key in row))  # rows may differ in optional columns
        rows = [{column: row.get(column) for column in columns} | {"scored_at": row.get("scored_at", stamp)}
                for row in rows]
        try:
            self._write(typed_columns(stored_floats(pa.Table.from_pylist(rows))), level=0)
            self._compact()
        except OSError as err:
            if is_disk_full(err):
                raise disk_full(self.output, self.stored_rows()) from None
            raise

    @contextlib.contextmanager
    def locked(self) -> Iterator[PathLike]:
        """Hold this (output, rank)'s lock for a run: a second writer is refused at once (see ``exclusive_lock``).
        On leaving (errors included) a store that holds no part is removed (see :meth:`remove_if_empty`)."""
        try:
            with exclusive_lock(child(self.folder, f"rank{self.rank}.lock"), str(self.output),
                                "wait for it or choose another --out") as lock:
                yield lock
        finally:
            self.remove_if_empty()

    def remove_if_empty(self) -> None:
        """Remove the parts folder when all it holds is its settings (no part, no writer's lock): a run that failed
        before scoring (a model that did not load) or scored nothing leaves nothing beside the output."""
        left = [name_of(p) for p in files_in(self.folder)]
        if any(name != name_of(self.settings_path) for name in left):
            return
        remove(self.settings_path)
        if not is_url(self.folder):  # an object store has no empty folders
            with contextlib.suppress(OSError):  # another writer's file appeared meanwhile: the folder stays
                Path(self.folder).rmdir()

    @property
    def settings_path(self) -> PathLike:
        """Where the settings that made this store's rows are kept (``settings.json`` beside the parts)."""
        return child(self.folder, "settings.json")

    def settings(self) -> dict[str, Any] | None:
        """The settings this store's rows were made with (None: none recorded, e.g. a store from before they were)."""
        try:
            return json.loads(read_bytes(self.settings_path, OutputError).decode())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            raise OutputError(f"{self.settings_path}: unreadable ({err}); score into another --out") from None

    def check_settings(self, settings: dict[str, Any]) -> None:
        """Refuse, in one line, a run whose ``settings`` differ from those the stored rows were made with (its rows
        would mix with theirs, and rows already scored would be taken as done); record them on a store's first run."""
        stored = self.settings()
        if stored is None:
            if self.rank == 0:
                atomic_write_text(self.settings_path, json.dumps(settings, indent=1, sort_keys=True) + "\n")
            return
        changed = [key for key in sorted(settings.keys() | stored.keys()) if settings.get(key) != stored.get(key)]
        if changed:
            shown = "; ".join(f"{key}: {stored.get(key)!r} then, {settings.get(key)!r} now" for key in changed[:3])
            raise OutputError(f"{self.output}: its rows were scored with other settings ({shown}): score into "
                              f"another --out, or remove {self.output} and {self.folder} to start over")

    def stored_rows(self) -> int:
        """Rows in the complete parts (all ranks), read from the Parquet footers only."""
        return sum(pq.read_metadata(where, filesystem=fs).num_rows
                   for where, fs in map(parquet_source, self.parts()))

    def _write(self, table: pa.Table, level: int) -> PathLike:
        sequence = max((int(PART_NAME.search(name_of(p)).group(3)) for p in self.parts()), default=0) + 1
        path = child(self.folder, f"rank{self.rank}-L{level}-{sequence:06d}.parquet")
        atomic_write_table(table, path)
        return path

    def _compact(self) -> None:
        level = 0
        while True:
            same_level = [p for p in self.parts(self.rank) if int(PART_NAME.search(name_of(p)).group(2)) == level]
            if len(same_level) < self.fanout:
                return
            merged = stored_floats(pa.concat_tables([read_part(p) for p in same_level], promote_options="permissive"))
            self._write(merged, level + 1)  # written before the small parts go: a crash here only duplicates rows
            for part in same_level:
                remove(part)
            level += 1

    def read(self, columns: list[str] | None = None, paths: Collection[str] | None = None) -> pa.Table | None:
        """All parts as one table, newest row per path only (None when nothing is stored); with ``paths``, only the
        rows of those paths, with the columns of every part (the whole table's columns). A part that another writer
        compacts away while it is read (a Ray encode actor, another rank) is found in its merged part on a retry."""
        for attempt in range(3):
            parts = self.parts()
            if not parts:
                return None
            try:
                tables = [read_part(p, columns, paths) for p in parts]
                break
            except FileNotFoundError:
                if attempt == 2:
                    raise
        table = pa.concat_tables(tables, promote_options="permissive")  # parts of older runs: float64 embeddings
        return latest_per_path(typed_columns(stored_floats(table)))


EMBEDDING_COLUMNS = ("video_embedding", "frame_embeddings")  # lists of floats: the sidecar's columns


VIDEO_COLUMN_TYPES = {"num_frames": pa.int64(), "duration": pa.float64(), "fps": pa.float64()}  # of base_row


def typed_columns(table: pa.Table) -> pa.Table:
    """``table`` with the video columns at their types even when no row of it has a value (a batch of failures
    only gives a null-typed column), so a merged table keeps ``num_frames`` an integer column."""
    for name, kind in VIDEO_COLUMN_TYPES.items():
        if name in table.column_names and pa.types.is_null(table.column(name).type):
            table = table.set_column(table.column_names.index(name), name, table.column(name).cast(kind))
    return table


def stored_floats(table: pa.Table) -> pa.Table:
    """``table`` with float64 embedding columns stored as float32, the precision they are computed in (Python's
    lists make them float64, and parts of earlier runs hold them so: twice the bytes, no more information); float32
    and float16 (``embedding_dtype: float16``) columns stay as they are."""
    for name in [c for c in EMBEDDING_COLUMNS if c in table.column_names]:
        column = table.column(name)
        leaf = column.type
        while pa.types.is_list(leaf) or pa.types.is_large_list(leaf):
            leaf = leaf.value_type
        if pa.types.is_float64(leaf):  # a null column (a batch of failures only) has no values to type
            target = pa.list_(pa.float32()) if name == "video_embedding" else pa.list_(pa.list_(pa.float32()))
            table = table.set_column(table.column_names.index(name), name, column.cast(target))
    return table


def part_rank(part: PathLike) -> int:
    """The rank that wrote ``part``, from its name."""
    return int(PART_NAME.search(name_of(part)).group(1))


def read_part(part: PathLike, columns: list[str] | None = None, paths: Collection[str] | None = None) -> pa.Table:
    """One part's rows (those of ``paths`` only, when given): all columns, or those of ``columns`` it has (a local
    file or an object)."""
    where, fs = parquet_source(part)
    if columns is not None:
        names = pq.read_schema(where, filesystem=fs).names
        columns = [c for c in columns if c in names]
    wanted = None if paths is None else pc.field("path").isin(pa.array(list(paths), type=pa.string()))
    return pq.read_table(where, columns=columns, filesystem=fs, filters=wanted)


def latest_per_path(table: pa.Table) -> pa.Table:
    """Keep, for each ``path`` (and segment, in a segmented run), the row with the largest ``scored_at``; rows in
    path (and segment) order."""
    group = ["path", *[c for c in SEGMENT_COLUMNS[:1] if c in table.column_names]]
    order = table.sort_by([(c, "ascending") for c in group] + [("scored_at", "descending")])
    keys = list(zip(*(order.column(c).to_pylist() for c in group)))
    keep = [i for i, key in enumerate(keys) if i == 0 or keys[i - 1] != key]
    return order.take(pa.array(keep, type=pa.int64()))


def merge(output: PathLike, embedding_columns: Iterable[str] = EMBEDDING_COLUMNS,
          paths: list[str] | None = None, metadata: dict[str, str] | None = None,
          columns: Callable[[pa.Table], pa.Table] | None = None) -> pa.Table | None:
    """Join all parts into ``output`` (rows sorted by path) and the embeddings sidecar, both atomically.

    ``paths``: this run's files; rows of other files (earlier runs into the same output) are shown while their
    file exists, rows of files gone since stay in the parts only. ``metadata`` goes into the sidecar's
    schema (e.g. which model made the embeddings). ``columns`` adds the inputs' own columns to the rows (a shard
    sample's key and json). Returns the scores table.
    """
    output = output if is_url(output) else Path(output)
    table = current_rows(output, paths)
    if table is None:
        return None
    table = columns(table) if columns is not None else table
    embedding_columns = [c for c in embedding_columns if c in table.column_names]
    try:
        if embedding_columns:
            sidecar = table.select(["path", *[c for c in SEGMENT_COLUMNS if c in table.column_names],
                                     *embedding_columns])
            atomic_write_table(sidecar.replace_schema_metadata(metadata or {}), embeddings_path(output))
        scores = table.drop_columns([*embedding_columns, "scored_at"])
        atomic_write_table(scores, output)
    except OSError as err:
        if is_disk_full(err):
            raise disk_full(output, PartStore(output).stored_rows()) from None
        raise
    return scores


def current_rows(output: PathLike, paths: list[str] | None = None) -> pa.Table | None:
    """The newest stored row of each path of ``output`` (None: nothing stored); with ``paths`` (this run's inputs)
    only those and the rows of earlier runs' files that still exist."""
    table = PartStore(output).read()
    if table is None or paths is None:
        return table
    current = set(paths)
    earlier = {p for p in table.column("path").to_pylist() if p not in current and exists(p)}
    wanted = pa.array(sorted(current | earlier), type=pa.string())
    return table.filter(pc.is_in(table.column("path"), value_set=wanted))


def disk_full(output: PathLike, safe_rows: int) -> OutputError:
    """The one-line error for a full disk: what was being written, and that the flushed rows survive a rerun."""
    return OutputError(f"no space left on device writing {output}; {safe_rows} rows are safe; rerun to resume")


def embeddings_path(output: PathLike) -> PathLike:
    """The embeddings sidecar next to a scores table: ``scores.parquet`` -> ``scores.embeddings.parquet``."""
    stem = os.path.splitext(name_of(output))[0]
    return sibling(output, stem + ".embeddings.parquet")
