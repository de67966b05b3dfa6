"""``score`` over WebDataset shards (video2dataset's layout; see :mod:`coca_video.data.shards`): the inputs a run
scores, the error rows of samples that cannot be scored, the sample columns of the merged table, and with
``shard_outputs`` each complete shard's ``<name>.parquet`` and ``<name>_stats.json`` beside ``out``.

    coca-video score 'shards/{00000..00099}.tar' --labels kinetics400 --out scored/scores.parquet shard_outputs=true
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import pyarrow as pa

from ..data.results import FileKey, current_rows, stored_path
from ..data.shards import Shard, is_complete, is_shard_source, read_shard, sample_columns, \
    shard_key, shard_paths, shard_rows, shard_stats, with_sample_columns
from ..errors import ConfigError, InputError
from ..io import atomic_write_table, atomic_write_text, check_output_file
from ..scoring import ScoreItem, base_row
from ..storage import child, is_url


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


def rejected_rows(inputs: ScoreInputs) -> list[dict[str, Any]]:
    """The error rows of the inputs that are not decoded (key columns, status, error naming the path)."""
    return [base_row(ScoreItem(key), "error", f"{stored_path(key[0])}: {reason}", {})
            for key, reason in inputs.rejected]


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


def publish_shards(out: str, inputs: ScoreInputs, fields: Sequence[str]) -> int:
    """Write each complete shard's ``<name>.parquet`` (its rows in tar order, with the embeddings as stored) and
    ``<name>_stats.json`` beside ``out``, each atomically; a shard with unscored samples is left for a rerun.
    Returns how many shards were published."""
    table = current_rows(out, inputs.paths)
    if table is None:
        return 0
    table = inputs.columns(fields)(table).drop_columns(["scored_at"])
    folder, published = folder_of(out), 0
    for shard in inputs.shards:
        rows = shard_rows(table, shard)
        if not is_complete(rows, shard):
            continue
        atomic_write_table(rows, child(folder, f"{shard.name}.parquet"))
        atomic_write_text(child(folder, f"{shard.name}_stats.json"),
                          json.dumps(shard_stats(rows, shard), indent=1) + "\n")
        published += 1
    return published


__all__ = ["ScoreInputs", "check_shard_outputs", "names_shards", "publish_shards", "rejected_rows",
           "shard_inputs"]
