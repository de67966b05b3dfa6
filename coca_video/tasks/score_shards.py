"""``score`` over WebDataset shards (video2dataset's layout; see :mod:`coca_video.data.shards`): the inputs a run
scores, the error rows of samples that cannot be scored, the sample columns of the merged table, and with
``shard_outputs`` each shard's ``<name>.parquet`` and ``<name>_stats.json`` beside ``out``, published as soon as
the shard is complete (:class:`ShardPublisher`).

    coca-video score 'shards/{00000..00099}.tar' --labels kinetics400 --out scored/scores.parquet shard_outputs=true
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from ..data.results import FileKey, PartStore, stored_path
from ..data.shards import Shard, is_complete, is_shard_source, read_shard, sample_columns, \
    shard_key, shard_paths, shard_rows, shard_stats, with_sample_columns
from ..errors import ConfigError, InputError, OutputError
from ..io import atomic_write_table, atomic_write_text, check_output_file
from ..scoring import ScoreItem, base_row
from ..storage import child, exists, is_url, parquet_source, read_bytes


@dataclass
class ScoreInputs:
    """What a score run covers: ``keys`` to encode (one per file or scoreable sample), ``paths`` of every row of
    the run as stored, ``rejected``: (key, reason) of the inputs that get an error row without decoding (a shard
    sample without a usable video, an unreadable shard), and the ``shards`` read (None: files, not shards)."""

    keys: list[FileKey]
    paths: list[str]
    rejected: list[tuple[FileKey, str]] = field(default_factory=list)
    shards: list[Shard] | None = None

    def columns(self, fields: Sequence[str]) -> Callable[[pa.Table], pa.Table] | None:
        """What adds the shard samples' columns to the merged rows (None for files)."""
        if self.shards is None:
            return None
        return functools.partial(with_sample_columns, columns=sample_columns(self.shards, fields))


def names_shards(sources: Sequence[str]) -> bool:
    """Whether ``sources`` name shards (all of them; a mix of shards and videos is refused in one line)."""
    named = [is_shard_source(source) for source in sources]
    if any(named) and not all(named):
        shard = sources[named.index(True)]
        other = sources[named.index(False)]
        raise InputError(f"{other}: not a shard, while {shard} is; score shards and videos in separate runs")
    return bool(named) and all(named)


def shard_inputs(sources: Sequence[str]) -> ScoreInputs:
    """The samples of the shards ``sources`` name (:func:`~coca_video.data.shards.shard_paths`), read in order."""
    shards = [read_shard(tar) for tar in shard_paths(sources)]
    inputs = ScoreInputs([], [], shards=shards)
    for shard in shards:
        for sample in shard.samples:
            key = sample.file_key()
            (inputs.rejected.append((key, sample.problem)) if sample.problem else inputs.keys.append(key))
            inputs.paths.append(stored_path(sample.path))
        if shard.problem:
            inputs.rejected.append((shard_key(shard), shard.problem))
            inputs.paths.append(stored_path(shard.path))
    if not inputs.paths:
        raise InputError(f"{', '.join(sources)}: the shards hold no samples")
    return inputs


def rejected_rows(rejected: list[tuple[FileKey, str]]) -> list[dict[str, Any]]:
    """The error rows of the inputs that are not decoded, (key, reason) each (``ScoreInputs.rejected``, videos not
    cut in time): key columns, status, error naming the path."""
    return [base_row(ScoreItem(key), "error", f"{stored_path(key[0])}: {reason}", {}) for key, reason in rejected]


def folder_of(path: str) -> str:
    """The folder holding ``path`` (for a URL, its prefix without the trailing ``/``); per-shard outputs go into
    ``out``'s."""
    return str(path).rsplit("/", 1)[0] if is_url(path) else os.path.dirname(os.path.abspath(path))


def check_shard_outputs(out: str, inputs: ScoreInputs, ours: bool) -> None:
    """Refuse (before any work) per-shard outputs into a folder that holds an input shard (they would replace
    video2dataset's own ``<name>.parquet`` and ``<name>_stats.json`` beside it), two shards of one name, or a file
    there that is not ours."""
    if inputs.shards is None:
        raise ConfigError("shard_outputs: needs shards as input (.tar files, a brace pattern or a folder of them)")
    folder = folder_of(out)
    names = [shard.name for shard in inputs.shards]
    if len(set(names)) < len(names):
        twice = next(name for name in names if names.count(name) > 1)
        raise ConfigError(f"shard_outputs: two input shards are named {twice}; their outputs would collide")
    for shard in inputs.shards:
        if folder_of(shard.path) == folder:
            raise ConfigError(f"out={out}: its folder holds the input shard {shard.path}; per-shard outputs would "
                              f"replace its {shard.name}.parquet; score into another folder")
        for name in (f"{shard.name}.parquet", f"{shard.name}_stats.json"):
            check_output_file(child(folder, name), [], ours, "out (a per-shard output)")


class ShardPublisher:
    """Publishes each shard's ``<name>.parquet`` (its rows in tar order, with the embeddings as stored) and
    ``<name>_stats.json`` beside ``out`` as soon as every sample of the shard has its row (ok or error), so a
    pipeline can chain shard by shard: the pass tells it of the items whose rows are stored (``Encoder.on_stored``);
    when this process's last pending item of a shard lands, the shard's rows are read from the store and, if every
    sample has one (another rank or actor may still be scoring some), its two files are written, each atomically.

    A file is written only when its content changes (a rerun leaves a published shard whose rows are the same as they
    were, its files untouched); a shard with samples left to score is not published (the run that completes it is)."""

    def __init__(self, out: str, inputs: ScoreInputs, fields: Sequence[str]) -> None:
        self.out, self.folder = out, folder_of(out)
        self.shards = {shard.path: shard for shard in inputs.shards}
        self.shard_of = {sample.path: shard.path for shard in inputs.shards for sample in shard.samples}
        self.columns = sample_columns(inputs.shards, fields)
        self.pending: dict[str, set[tuple]] = {}  # shard -> the keys (ScoreItem.stored) of its items not yet stored
        self.published: set[str] = set()  # shards whose files are in place as their rows are

    def start(self, items: list[ScoreItem], done: set[tuple], sweep: bool = True) -> None:
        """Before the pass: note ``items`` (this process's) not in ``done`` as pending; with ``sweep`` (rank 0 only,
        of several), publish each complete shard with nothing pending here (its rows all stored by earlier runs, or
        error rows written without decoding; its files are written only if they changed)."""
        for item in items:
            shard = self.shard_of.get(item.key[0])
            if shard is not None and item.stored() not in done:
                self.pending.setdefault(shard, set()).add(item.stored())
        if sweep:
            self.publish([shard for shard in self.shards if shard not in self.pending])

    def __call__(self, items: list[ScoreItem]) -> None:
        """``items``' rows are stored: publish each shard whose last pending item here this was."""
        completed = []
        for item in items:
            shard = self.shard_of.get(item.key[0])
            waiting = self.pending.get(shard)
            if waiting and item.stored() in waiting:
                waiting.discard(item.stored())
                completed += [] if waiting else [shard]
        self.publish(completed)

    def finish(self) -> int:
        """After the pass (or an interruption): publish the complete shards not published yet with nothing pending
        here (reading the store once); returns how many shards have their files in place."""
        self.publish([shard for shard in self.shards if shard not in self.published and not self.pending.get(shard)])
        return len(self.published)

    def publish(self, shards: list[str]) -> None:
        """Write the files of each of ``shards`` whose samples all have a row, from the stored rows (read once)."""
        table = self.rows(shards) if shards else None
        for shard in shards if table is not None else []:
            self.write(self.shards[shard], table)

    def rows(self, shards: list[str]) -> pa.Table | None:
        """The newest stored rows of ``shards``' samples (and of a shard's own error row) with their sample columns,
        as the merged table has them (None: nothing stored)."""
        paths = [stored_path(path) for shard in shards
                 for path in [*(sample.path for sample in self.shards[shard].samples), shard]]
        table = PartStore(self.out).read(paths=paths)
        return None if table is None else with_sample_columns(table, self.columns).drop_columns(["scored_at"])

    def write(self, shard: Shard, table: pa.Table) -> None:
        """``shard``'s two files from its rows in ``table`` (:meth:`rows`), if every sample has a row."""
        rows = shard_rows(table, shard)
        if not is_complete(rows, shard):
            return
        write_if_changed(child(self.folder, f"{shard.name}.parquet"), rows)
        write_if_changed(child(self.folder, f"{shard.name}_stats.json"),
                         json.dumps(shard_stats(rows, shard), indent=1) + "\n")
        self.published.add(shard.path)


def write_if_changed(path: str | os.PathLike, content: pa.Table | str) -> None:
    """Write a table (Parquet) or text to ``path`` atomically, unless ``path`` already holds the same content (its
    file, and its modification time, stay as they are)."""
    if exists(path):
        if isinstance(content, str) and read_bytes(path, OutputError).decode("utf-8", "replace") == content:
            return
        where, fs = parquet_source(path)
        if not isinstance(content, str) and pq.read_table(where, filesystem=fs).equals(content):
            return
    if isinstance(content, str):
        atomic_write_text(path, content)
    else:
        atomic_write_table(content, path)


__all__ = ["ScoreInputs", "ShardPublisher", "check_shard_outputs", "names_shards", "rejected_rows", "shard_inputs"]
