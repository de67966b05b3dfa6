"""WebDataset tar shards as input, in video2dataset's layout, and per-shard outputs aligned with them.

A video2dataset shard ``00000.tar`` holds, per sample ``key``: ``key.mp4`` (the video), ``key.json`` (url, caption,
key, status, error_message, clips, video_metadata...) and ``key.txt`` (the caption); ``00000.parquet`` and
``00000_stats.json`` lie beside it. Shards are named as a brace pattern (``shards/{00000..00099}.tar``), tar files,
a folder of them or an ``s3://`` prefix holding them. Their members are read in place
(:mod:`coca_video.video.tar_members`): nothing is extracted.

A sample is one row. Its video is named ``<tar>#<member>`` (``shards/00000.tar#000000017.mp4``) and keyed, as a file
is by (path, size, mtime), by the member's size and the mtime in its tar header: a rerun skips the samples scored ok,
a shard rewritten with other videos under the same names is scored again, and copying or moving the tar file (which
changes the file's own mtime) does not invalidate its rows as long as the path stays. A sample that cannot be scored
(json status not ``success``, no video member, a member the file cuts short) is an error row with the reason; a
shard damaged or cut short keeps the samples before the damage and gets one error row of its own (path: the tar).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from ..errors import InputError
from ..storage import exists, find_files, is_url, name_of, stat
from ..video.tar_members import Member, NotATar, member_path, scan
from .video import VIDEO_EXTENSIONS, find_videos

BRACE = re.compile(r"\{([^{}]*)\}")
RANGE = re.compile(r"(\d+)\.\.(\d+)")
SAMPLE_NAME = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")  # webdataset's rule: the key is the name up to its first dot


@dataclass
class ShardSample:
    """One sample of a shard: its ``key``, its video member (None: it has none), its json (None: none or unreadable),
    its ``.txt`` caption, and why it cannot be scored (None: it can)."""

    shard: str
    key: str
    video: Member | None = None
    meta: dict[str, Any] | None = None
    text: str | None = None
    problem: str | None = None

    @property
    def path(self) -> str:
        """The row's path: ``<tar>#<video member>``, or ``<tar>#<key>`` for a sample without a video."""
        return member_path(self.shard, self.video.name if self.video else self.key)

    def file_key(self) -> tuple[str, int, float]:
        """(path, size, mtime) as a file's key: the member's size and header mtime; -1, 0.0 without a video."""
        return (self.path, self.video.size, self.video.mtime) if self.video else (self.path, -1, 0.0)


@dataclass
class Shard:
    """A shard's samples in tar order, and why it could not be read to its end (None: it could)."""

    path: str
    samples: list[ShardSample] = field(default_factory=list)
    problem: str | None = None

    @property
    def name(self) -> str:
        """The shard's name without ``.tar`` (``00000``): its per-shard outputs are ``<name>.parquet`` and
        ``<name>_stats.json``."""
        return re.sub(r"\.tar$", "", name_of(self.path), flags=re.IGNORECASE)


def expand_braces(pattern: str) -> list[str]:
    """The names a brace pattern stands for, in order: ``{00000..00002}`` (zero-padded as written) and ``{a,b}``,
    nested or several (``{0..1}-{a,b}`` -> 0-a, 0-b, 1-a, 1-b); a name without braces stands for itself."""
    found = BRACE.search(pattern)
    if found is None:
        return [pattern]
    span = RANGE.fullmatch(found[1])
    if span:
        first, last = span[1], span[2]
        options = [f"{i:0{len(first)}d}" for i in range(int(first), int(last) + 1)]
    else:
        options = found[1].split(",")
    return [name for option in options
            for name in expand_braces(pattern[:found.start()] + option + pattern[found.end():])]


def is_shard_source(source: str | os.PathLike) -> bool:
    """Whether ``source`` names shards: a ``.tar`` (or a brace pattern of them), or a folder holding ``.tar`` files
    and no videos (a folder holding both is refused in one line). A prefix in object storage is listed as videos
    first; one with no videos is then tried as shards (:func:`url_shards`)."""
    text = str(source)
    if text.lower().endswith(".tar") or (BRACE.search(text) and ".tar" in text.lower()):
        return True
    if is_url(text) or not os.path.isdir(text):
        return False
    if not find_videos(text, extensions=(".tar",)):
        return False
    if find_videos(text):
        raise InputError(f"{text}: holds both videos and .tar shards; name the shards ({text}/*.tar or a brace "
                         "pattern) or the videos")
    return True


def url_shards(url: str) -> list[str] | None:
    """The ``.tar`` objects under the prefix ``url`` when it holds them and no videos (None: not a prefix of
    shards)."""
    found = find_files(url, (*VIDEO_EXTENSIONS, ".tar"))
    tars = [name for name in found if name.lower().endswith(".tar")]
    return tars if tars and len(tars) == len(found) else None


def shard_paths(sources: Sequence[str | os.PathLike]) -> list[str]:
    """The tars ``sources`` name, in order, each once: brace patterns expanded (names that do not exist are kept:
    they get an error row, but a pattern none of whose names exists is refused), folders and prefixes listed."""
    tars: list[str] = []
    for source in map(str, sources):
        if is_url(source) and not source.lower().endswith(".tar") and not BRACE.search(source):
            tars += url_shards(source) or []
        elif not is_url(source) and os.path.isdir(source):
            tars += [str(Path(os.path.abspath(p))) for p in find_videos(source, extensions=(".tar",))]
        else:
            names = [n if is_url(n) else os.path.abspath(n) for n in expand_braces(source)]
            if not any(map(exists, names)):
                raise InputError(f"{source}: matches no shard (no such file{'s' if len(names) > 1 else ''})")
            tars += names
    return list(dict.fromkeys(tars))


def read_shard(tar: str) -> Shard:
    """The samples of ``tar`` (their json and caption read, their video located), or a shard with a ``problem`` and
    no samples when it is missing or unreadable; a file that is not a tar is refused in one line."""
    try:
        found = scan(tar, texts=True)
    except FileNotFoundError:
        return Shard(tar, problem="no such shard")
    except NotATar as err:
        raise InputError(f"{tar}: {err}") from None
    except OSError as err:
        return Shard(tar, problem=f"unreadable ({type(err).__name__}: {err})")
    samples: dict[str, ShardSample] = {}
    for name, member in found.members.items():
        parts = SAMPLE_NAME.match(name)
        if parts is None:
            continue
        key, suffix = parts[1], parts[2].lower()
        sample = samples.setdefault(key, ShardSample(tar, key))
        if f".{suffix}" in VIDEO_EXTENSIONS and sample.video is None:
            sample.video = member
        elif suffix == "json" and name in found.texts:
            sample.meta = parsed_json(found.texts[name])
        elif suffix == "txt" and name in found.texts:
            sample.text = found.texts[name].decode("utf-8", "replace")
    for sample in samples.values():
        sample.problem = sample_problem(sample)
    return Shard(tar, list(samples.values()), found.problem)


def parsed_json(data: bytes) -> dict[str, Any] | None:
    """A sample's json as a mapping (None: not a JSON object)."""
    try:
        value = json.loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def sample_problem(sample: ShardSample) -> str | None:
    """Why ``sample`` cannot be scored: its json's status (video2dataset's ``failed_to_download`` ...) with the
    error message, no video member, or a video member the tar cuts short; None when it can be."""
    status = (sample.meta or {}).get("status", "success")
    if status != "success":
        message = (sample.meta or {}).get("error_message")
        return f"{status}: {message}" if message else str(status)
    if sample.video is None:
        return f"no video in the sample (members {', '.join(VIDEO_EXTENSIONS[:3])}...: none)"
    if not sample.video.complete:
        return f"cut short: the tar ends inside {sample.video.name} ({sample.video.size} bytes)"
    return None


def shard_key(shard: Shard) -> tuple[str, int, float]:
    """The key of a shard's own error row: its path, size and mtime (-1, 0.0 when it is missing)."""
    try:
        size, mtime = stat(shard.path)
    except (FileNotFoundError, OSError):
        return shard.path, -1, 0.0
    return shard.path, size, mtime


def sample_columns(shards: list[Shard], fields: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
    """path -> the columns a row of that sample gets beside the scores: ``shard`` (the tar), ``key``, and the
    sample's json as ``meta`` (JSON text), or with ``fields`` those json fields as columns of their own (strings as
    they are, other values as JSON text). A shard's own row (path: the tar) gets its shard and no key."""
    columns: dict[str, dict[str, Any]] = {}
    for shard in shards:
        for sample in shard.samples:
            row: dict[str, Any] = {"shard": shard.path, "key": sample.key}
            if fields:
                values = sample.meta or {}
                row |= {name: json_text(values.get(name)) for name in fields}
            else:
                row["meta"] = None if sample.meta is None else json.dumps(sample.meta, sort_keys=True)
            columns[sample.path] = row
        if shard.problem:
            columns[shard.path] = {"shard": shard.path, "key": None}
    return columns


def json_text(value: Any) -> str | None:
    """A json field as a string column's cell: a string as it is, anything else as JSON text (None stays None)."""
    return value if value is None or isinstance(value, str) else json.dumps(value, sort_keys=True)


def with_sample_columns(table: pa.Table, columns: dict[str, dict[str, Any]]) -> pa.Table:
    """``table`` (rows with a ``path``) with each row's sample columns (:func:`sample_columns`) after ``path``'s
    key columns; rows of other inputs get nulls."""
    paths = table.column("path").to_pylist()
    names = list(dict.fromkeys(name for row in columns.values() for name in row))
    for position, name in enumerate(names, start=table.column_names.index("path") + 1):
        values = pa.array([columns.get(path, {}).get(name) for path in paths], type=pa.string())
        table = table.add_column(position, name, values)
    return table


def shard_rows(table: pa.Table, shard: Shard) -> pa.Table:
    """The rows of ``table`` (with a ``shard`` column) that belong to ``shard``, its samples in tar order (its own
    error row, if any, last)."""
    rows = table.filter(pc.equal(table.column("shard"), shard.path))
    order = {sample.path: i for i, sample in enumerate(shard.samples)}
    rank = [order.get(path, len(order)) for path in rows.column("path").to_pylist()]
    return rows.take(pa.array(sorted(range(len(rank)), key=rank.__getitem__), type=pa.int64()))


def is_complete(rows: pa.Table, shard: Shard) -> bool:
    """Whether every sample of ``shard`` has its row in ``rows`` (its per-shard outputs can be published)."""
    return set(rows.column("path").to_pylist()) >= {sample.path for sample in shard.samples}


JSON_STATUSES = ("failed_to_download", "failed_to_subsample")  # video2dataset's failures, counted as it does


def shard_stats(rows: pa.Table, shard: Shard) -> dict[str, Any]:
    """A shard's ``<name>_stats.json``, with video2dataset's field names where they apply: ``count`` (samples),
    ``successes`` (scored ok), ``failed_to_download`` and ``failed_to_subsample`` (samples whose json says so),
    ``status_dict`` (count per status: ``success`` and each error reason); and ours: ``failed_to_score`` (the other
    failures: no video, cut short, not decodable), ``shard`` (the tar) and ``shard_error`` (why the tar could not be
    read to its end, or null)."""
    statuses = {sample.path: (sample.meta or {}).get("status") for sample in shard.samples}
    samples = [row for row in rows.select(["path", "status", "error"]).to_pylist() if row["path"] in statuses]
    reasons: dict[str, int] = {}
    for row in samples:
        reason = "success" if row["status"] == "ok" else row["error"].removeprefix(f"{row['path']}: ")
        reasons[reason] = reasons.get(reason, 0) + 1
    failed = [row for row in samples if row["status"] != "ok"]
    stats = {"shard": shard.path, "count": len(samples), "successes": len(samples) - len(failed)}
    for status in JSON_STATUSES:
        stats[status] = sum(statuses[row["path"]] == status for row in failed)
    stats["failed_to_score"] = len(failed) - sum(stats[status] for status in JSON_STATUSES)
    return stats | {"status_dict": dict(sorted(reasons.items(), key=lambda rc: -rc[1])), "shard_error": shard.problem}


def sample_caption(sample: ShardSample) -> str:
    """A sample's reference caption: its ``.txt``, else its json's ``caption`` ("" when it has neither)."""
    text = sample.text if sample.text is not None else (sample.meta or {}).get("caption")
    return str(text or "").strip()

