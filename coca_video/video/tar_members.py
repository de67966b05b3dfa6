"""Files inside a tar archive (a WebDataset shard) named as ``<tar>#<member>``, e.g.
``shards/00000.tar#000000017.mp4`` or ``s3://bucket/shards/00000.tar#000000017.mp4``, read in place: the tar's headers
are scanned once per process (:func:`scan`, which seeks over the members' data), and a member is read by seeking to
its offset (a ranged read of an object). Nothing is extracted from a shard but the one member being decoded.

A scan keeps what it could read: members past a damaged header, or cut off by the end of the file, are missing, and
``problem`` says why (the shard's error row); a member whose data the file cuts short is ``complete=False``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator

from ..storage import filesystem, is_url, stat

MEMBER_PATH = re.compile(r"^(?P<tar>.+\.tar)#(?P<member>[^#]+)$", re.IGNORECASE)
BLOCK = 512  # a tar header block
SMALL_SUFFIXES = (".json", ".txt")  # members a scan reads whole when asked (a sample's metadata and caption)
SCAN_BLOCK_BYTES = 1 << 16  # an object's ranged reads while scanning: a header, or a small member, per request


@dataclass(frozen=True)
class Member:
    """One file of a tar: where its data starts (bytes), its size, its mtime (the tar header's, whole seconds) and
    whether the file holds all of its data."""

    name: str
    offset: int
    size: int
    mtime: float
    complete: bool = True


@dataclass
class TarScan:
    """A tar's members in order; ``texts``: the content of its small members (when asked for); ``problem``: why
    the scan stopped before the archive's end (None: it did not)."""

    members: dict[str, Member] = field(default_factory=dict)
    texts: dict[str, bytes] = field(default_factory=dict)
    problem: str | None = None


class NotATar(ValueError):
    """The file's first header is not a tar header: it is not a shard at all."""


def member_path(tar: str, member: str) -> str:
    """The name of ``member`` of ``tar``: ``<tar>#<member>``."""
    return f"{tar}#{member}"


def split_member(path: str | os.PathLike) -> tuple[str, str] | None:
    """(tar, member) of a ``<tar>#<member>`` name, None for any other path."""
    found = MEMBER_PATH.match(str(path))
    return (found["tar"], found["member"]) if found else None


@contextlib.contextmanager
def opened(tar: str) -> Iterator[BinaryIO]:
    """The tar as a seekable binary file: a local file, or an object read in ranged requests."""
    if not is_url(tar):
        with open(tar, "rb") as file:
            yield file
        return
    fs, inner = filesystem(tar)
    with fs.open(inner, "rb", block_size=SCAN_BLOCK_BYTES, cache_type="bytes") as file:
        yield file


def scan(tar: str, texts: bool = False) -> TarScan:
    """The members of ``tar`` from its headers (the data is seeked over), and with ``texts`` the content of its
    ``.json``/``.txt`` members. Raises :class:`NotATar` when the file does not start with a tar header, OSError when
    it cannot be read; damage after the first header ends the scan with ``problem`` set."""
    found = TarScan()
    with opened(tar) as file:
        size = file.seek(0, os.SEEK_END)
        file.seek(0)
        try:
            archive = tarfile.open(fileobj=file, mode="r:")
        except tarfile.ReadError as err:
            raise NotATar(f"not a tar archive ({err})") from None
        try:
            for info in archive:
                if not info.isfile():
                    continue
                complete = info.offset_data + info.size <= size
                found.members[info.name] = Member(info.name, info.offset_data, info.size, float(info.mtime), complete)
                if texts and complete and info.name.lower().endswith(SMALL_SUFFIXES):
                    found.texts[info.name] = archive.extractfile(info).read()
        except tarfile.TarError as err:
            found.problem = f"cut short or damaged after {len(found.members)} members ({err}): the members after " \
                            "them are lost"
        else:
            found.problem = end_problem(file, archive.offset, size)
    return found


def end_problem(file: BinaryIO, offset: int, size: int) -> str | None:
    """Why a scan that tarfile ended at ``offset`` did not reach the archive's end (None: it did): tarfile stops
    quietly at a damaged header, and at a file cut off right after a member."""
    if offset >= size:
        return f"cut short after {size} bytes (no end-of-archive marker): members after it are lost"
    file.seek(offset)
    header = file.read(BLOCK)
    if header.strip(b"\0"):
        return f"damaged header at byte {offset}: the members after it are lost"
    return None


@functools.lru_cache(maxsize=8)
def _cached_scan(tar: str, stamp: tuple[int, float]) -> TarScan:
    return scan(tar)


def find_member(tar: str, name: str) -> Member:
    """``name`` in ``tar`` (its headers scanned once per process and version of the file); FileNotFoundError when the
    tar has no such member."""
    stamp = (0, 0.0) if is_url(tar) else stat(tar)  # an object is not rewritten under a run; a request saved per read
    member = _cached_scan(tar, stamp).members.get(name)
    if member is None:
        raise FileNotFoundError(f"{member_path(tar, name)}: no such member in the tar")
    return member


def read_member(tar: str, member: Member) -> bytes:
    """The data of ``member`` of ``tar`` (an object: one ranged read)."""
    if not member.complete:
        raise EOFError(f"cut short: the tar ends inside this member ({member.size} bytes)")
    if is_url(tar):
        fs, inner = filesystem(tar)
        return fs.cat_file(inner, start=member.offset, end=member.offset + member.size)
    with open(tar, "rb") as file:
        file.seek(member.offset)
        return file.read(member.size)


def member_bytes(path: str) -> bytes:
    """The data of the member ``<tar>#<member>`` (OSError, EOFError when it cannot be read whole)."""
    tar, name = split_member(path)
    return read_member(tar, find_member(tar, name))


@contextlib.contextmanager
def temporary_copy(name: str, data: bytes) -> Iterator[Path]:
    """A temporary file called ``name`` holding ``data`` for the block (the decoders read files by name), removed
    after it."""
    folder = Path(tempfile.mkdtemp(prefix="coca-video-member-"))
    try:
        local = folder / os.path.basename(name)
        local.write_bytes(data)
        yield local
    finally:
        shutil.rmtree(folder, ignore_errors=True)
