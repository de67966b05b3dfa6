"""Durable writes: a reader never sees half a file, and a folder we publish never replaces what we did not make.

    atomic_write_text(path, text)          # temp file in the same folder, fsync, rename over ``path``
    atomic_write_table(table, path)        # Parquet, CSV or TSV by suffix, the same way
    with atomic_path(path) as tmp: ...     # for writers that want a file name (torch.save, tokenizers, safetensors)
    publish_folder(staging, folder)        # move a finished staging folder into place

A folder published here carries ``MARKER``; publishing over an existing folder is allowed only when it is empty or
carries the marker (a previous output of ours), so a user's folder is never deleted.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from .errors import OutputError

if TYPE_CHECKING:
    import pyarrow as pa

MARKER = ".coca-video"  # present in every folder publish_folder wrote


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temp path beside ``path`` to write to; renamed over ``path`` when the block succeeds, removed if it fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_table(table: pa.Table, path: str | os.PathLike) -> Path:
    """Write ``table`` as Parquet, or CSV/TSV by suffix, to ``path`` atomically."""
    import pyarrow.parquet as pq

    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix.lower() in (".csv", ".tsv"):
            table.to_pandas().to_csv(tmp, index=False, sep="\t" if path.suffix.lower() == ".tsv" else ",")
        else:
            pq.write_table(table, tmp)
    return path


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def is_our_folder(folder: Path) -> bool:
    """True for a folder that ``publish_folder`` wrote (it holds ``MARKER``)."""
    return (folder / MARKER).is_file()


def check_publishable(folder: str | os.PathLike) -> Path:
    """Refuse a destination that is a file, or a non-empty folder that is not a previous output of ours."""
    folder = Path(folder)
    if folder.is_file():
        raise OutputError(f"{folder}: is an existing file; give a folder path to write to")
    if folder.is_dir() and any(folder.iterdir()) and not is_our_folder(folder):
        raise OutputError(f"{folder}: folder exists and holds files coca-video did not write; choose a new or empty "
                          "folder (nothing was changed)")
    return folder


def publish_folder(staging: Path, folder: str | os.PathLike) -> Path:
    """Move the finished ``staging`` folder to ``folder``: into place when it is new or empty, replacing it when it
    is a previous output of ours; anything else is refused (see :func:`check_publishable`)."""
    folder = check_publishable(folder)
    (staging / MARKER).write_text("written by coca-video; safe to replace with a newer output\n")
    if folder.is_dir():
        old = folder.with_name(f".{folder.name}.old{os.getpid()}")
        folder.rename(old)
        staging.rename(folder)
        shutil.rmtree(old)  # ours (checked above) or empty
    else:
        staging.rename(folder)
    return folder
