"""Durable writes: a reader never sees half a file, and a folder we publish never replaces what we did not make.

    atomic_write_text(path, text)          # temp file in the same folder, fsync, rename over ``path``
    atomic_write_table(table, path)        # Parquet, CSV or TSV by suffix, the same way
    with atomic_path(path) as tmp: ...     # for writers that want a file name (torch.save, tokenizers, safetensors)
    publish_folder(staging, folder)        # move a finished staging folder into place
    with exclusive_lock(path, what): ...   # one writer at a time (a lock file holding "pid host")
    check_output_file(path, inputs, ours)  # never overwrite an input or a file we did not make

``path`` may be an object-storage URL (``s3://...``, see :mod:`.storage`) for the atomic writes, the lock and the
output check: the file is written locally, then uploaded as one whole object.

A folder published here carries ``MARKER``; publishing over an existing folder is allowed only when it is empty or
carries the marker (a previous output of ours), so a user's folder is never deleted.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

from .errors import OutputError
from .storage import is_url

if TYPE_CHECKING:
    import pyarrow as pa

MARKER = ".coca-video"  # present in every folder publish_folder wrote


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temp path beside ``path`` to write to; renamed over ``path`` when the block succeeds, removed if it fails.
    For a URL: a local temp file, uploaded as the whole object ``path`` when the block succeeds."""
    if is_url(path):
        yield from _uploaded(str(path))
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _uploaded(url: str) -> Iterator[Path]:
    """atomic_path's body for a URL: a temp file in a fresh local folder, then one upload (see storage.put_file)."""
    import tempfile

    from .storage import name_of, put_file

    folder = Path(tempfile.mkdtemp(prefix="coca-video-upload-"))
    try:
        tmp = folder / name_of(url)
        yield tmp
        put_file(tmp, url)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> str | Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path if is_url(path) else Path(path)


def atomic_write_table(table: pa.Table, path: str | os.PathLike) -> str | Path:
    """Write ``table`` as Parquet, or CSV/TSV by suffix, to ``path`` atomically."""
    path = path if is_url(path) else Path(path)
    suffix = os.path.splitext(str(path))[1].lower()
    with atomic_path(path) as tmp:
        if suffix in (".csv", ".tsv"):
            frame = table.to_pandas(integer_object_nulls=True)  # an integer column with nulls stays integers
            frame.to_csv(tmp, index=False, sep="\t" if suffix == ".tsv" else ",")
        else:
            write_parquet(table, tmp)
    return path


def write_parquet(table: pa.Table, path: Path) -> None:
    """The one place a Parquet file is written (a seam for tests that simulate a full disk)."""
    import pyarrow.parquet as pq

    pq.write_table(table, path)


def is_disk_full(err: BaseException) -> bool:
    """True for the ``OSError`` a write raises when the device has no space left (or the quota is exhausted)."""
    return isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)


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


def check_output_dir(folder: str | os.PathLike, key: str = "output_dir") -> Path:
    """Refuse an output folder that is an existing regular file (before any work starts)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{key}={folder}: is an existing file, not a folder; choose a folder path (nothing was "
                          "changed)")
    return folder


def is_our_metrics(path: str | os.PathLike, protocol_key: str) -> bool:
    """True for an existing metrics JSON a task of ours wrote: its ``protocol`` block holds ``protocol_key``."""
    import json

    try:
        protocol = json.loads(Path(path).read_text(encoding="utf-8")).get("protocol")
        return isinstance(protocol, dict) and protocol_key in protocol
    except (OSError, ValueError, AttributeError):
        return False


def first_line(path: str | os.PathLike) -> str | None:
    """The first line of a text file, stripped (how a rerun knows a CSV by its header); None when it cannot be read
    as text."""
    try:
        with Path(path).open(encoding="utf-8") as handle:
            return handle.readline().strip()
    except (OSError, UnicodeDecodeError):
        return None


def check_output_file(path: str | os.PathLike, inputs: Iterable[Path], ours: bool, key: str) -> Path:
    """Refuse to write ``path`` when it is one of ``inputs``, a folder, or an existing file that is not a previous
    output of ours (``ours``: the caller's test for that). ``key`` is the option that named it, for the message."""
    if is_url(path):
        return _check_output_url(str(path), inputs, ours, key)
    path = Path(path)
    resolved = path.resolve()
    if any(not is_url(p) and resolved == Path(p).resolve() for p in inputs):
        raise OutputError(f"{key}={path}: is one of the input files; choose another path (nothing was changed)")
    if path.is_dir():
        raise OutputError(f"{key}={path}: is an existing folder; give a file path")
    if path.exists() and not ours:
        raise OutputError(f"{key}={path}: file exists and was not written by coca-video; choose a new path or "
                          "remove it (nothing was changed)")
    check_writable_folder(path.parent, f"{key}={path}")
    return path


def _check_output_url(url: str, inputs: Iterable[str | Path], ours: bool, key: str) -> str:
    """check_output_file for an object-storage URL: not an input, not an existing object of someone else's, and its
    bucket takes a new object (missing bucket, bad credentials: one line, before any work)."""
    from .storage import check_writable, exists

    if url in {str(p) for p in inputs}:
        raise OutputError(f"{key}={url}: is one of the input files; choose another path (nothing was changed)")
    if not ours and exists(url):
        raise OutputError(f"{key}={url}: object exists and was not written by coca-video; choose a new path or "
                          "remove it (nothing was changed)")
    check_writable(url, key)
    return url


def check_writable_folder(folder: Path, what: str) -> None:
    """``folder`` exists (made here if missing, as the output would make it) and takes a new file: tried by creating
    and removing a temporary one, since permission bits say nothing for root or a read-only file system."""
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise OutputError(f"{what}: cannot write in {folder} ({err.strerror or type(err).__name__}); choose a "
                          "writable folder") from None


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, what: str, advice: str = "wait for it or choose another output"
                   ) -> Iterator[Path]:
    """Hold lock file ``path`` (content ``"pid host"``) for the block; it is removed on exit, exceptions included.

    A lock held by a live process (or by any process on another host) raises :class:`OutputError` naming ``what``
    and the holder; a stale lock (this host, process gone) is taken over with a warning.
    """
    if is_url(path):
        yield from _held_object(str(path), what, advice)
        return
    path = Path(path)
    _acquire(path, what, advice)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def _held_object(url: str, what: str, advice: str) -> Iterator[str]:
    """exclusive_lock's body for a URL: the lock is an object created only if absent (S3's conditional write), so
    of two drivers racing for one output exactly one gets it; a stale one (this host, process gone) is taken over."""
    from .storage import put_new, read_bytes, remove
    from .video.isolate import pid_exists

    host = socket.gethostname()
    for _ in range(2):
        if put_new(url, f"{os.getpid()} {host}\n".encode()):
            break
        try:
            pid, _, holder = read_bytes(url).decode().strip().partition(" ")
            pid = int(pid)
        except FileNotFoundError:  # released meanwhile: try once more
            continue
        except ValueError:  # unreadable: refused, naming the lock
            pid, holder = None, "?"
        if holder != host or pid is None or pid_exists(pid):
            raise OutputError(f"{what} is being written by pid {pid} on host {holder}; {advice} (lock {url})")
        warnings.warn(f"{url}: taking over a stale lock of pid {pid} on {holder} (that process is gone)", stacklevel=4)
        remove(url)
    else:
        raise OutputError(f"{what}: could not take lock {url}; {advice}")
    try:
        yield url
    finally:
        remove(url)


def _acquire(path: Path, what: str, advice: str) -> None:
    from .video.isolate import pid_exists  # numpy and PyAV come with the video package: only once a lock is taken

    path.parent.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname()
    for _ in range(2):  # the second try follows the removal of a stale lock
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_text(f"{os.getpid()} {host}\n")
        try:
            os.link(tmp, path)  # atomic and fails if the lock exists: the lock is never seen half-written
            return
        except FileExistsError:
            pid, holder = _lock_holder(path)
        finally:
            tmp.unlink(missing_ok=True)
        if holder != host or pid is None or pid_exists(pid):
            raise OutputError(f"{what} is being written by pid {pid} on host {holder}; {advice} (lock file {path})")
        warnings.warn(f"{path}: taking over a stale lock of pid {pid} on {holder} (that process is gone)",
                      stacklevel=3)
        path.unlink(missing_ok=True)
    raise OutputError(f"{what}: could not take lock file {path}; {advice}")


def _lock_holder(path: Path) -> tuple[int | None, str]:
    """(pid, host) written in a lock file; (None, "?") when it cannot be read."""
    try:
        pid, _, host = path.read_text().strip().partition(" ")
        return int(pid), host
    except (OSError, ValueError):
        return None, "?"

