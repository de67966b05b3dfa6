"""A video reader of a local file, of an object-storage URL or of a member of a tar shard, the one way every caller
opens a video it names by path (scoring's decode, the thumbnails of reports and the server)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from ..storage import is_url, local_copy
from .frame_info import VideoDecodeError
from .reader import VideoReader
from .tar_members import member_bytes, split_member, temporary_copy


@contextlib.contextmanager
def open_video(path: str | os.PathLike, backend: str = "auto", short_side: int | None = None,
               timeout: float | None = None, device: str = "cpu") -> Iterator[VideoReader]:
    """A :class:`~coca_video.video.VideoReader` of a local file, or of a temporary local copy of an object-storage
    URL (``s3://...``: downloaded under the decode's time limit, removed after the block; see
    :func:`~coca_video.storage.local_copy`) or of a tar member (``shard.tar#key.mp4``, local or in object storage:
    see :mod:`.tar_members`). Errors inside the block name ``path``, not the copy."""
    options = {"backend": backend, "short_side": short_side, "timeout": timeout, "device": device}
    if not is_url(path) and split_member(path) is None:
        yield VideoReader(path, **options)
        return
    with local_file(str(path), timeout) as local:
        try:
            yield VideoReader(local, **options)
        except VideoDecodeError as err:
            raise VideoDecodeError(path, err.problem.replace(str(local), str(path))) from None


class LastCopy:
    """The local copy of the last object or tar member opened, kept for the next open of the same path (a video's
    scenes or windows are consecutive items): one download per video, not one per item."""

    def __init__(self) -> None:
        self.path: str | None = None
        self.local: Path | None = None
        self.held = contextlib.ExitStack()

    def get(self, path: str, timeout: float | None) -> Path:
        """The copy of ``path``: the kept one, or a new one that replaces it (removed first)."""
        if path != self.path:
            self.close()
            self.local = self.held.enter_context(fresh_copy(path, timeout))
            self.path = path
        return self.local

    def close(self) -> None:
        """Remove the kept copy."""
        self.path, self.local = None, None
        self.held.close()


_kept: LastCopy | None = None  # inside reused_copies()


@contextlib.contextmanager
def reused_copies() -> Iterator[None]:
    """Within the block, opening the same object or tar member again reuses its local copy (the last one opened is
    kept, removed when another is opened or the block ends): a batch of a video's scenes downloads it once."""
    global _kept
    if _kept is not None:  # an enclosing block keeps copies already
        yield
        return
    _kept = LastCopy()
    try:
        yield
    finally:
        _kept.close()
        _kept = None


@contextlib.contextmanager
def local_file(path: str, timeout: float | None) -> Iterator[Path]:
    """A temporary local copy of an object or of a tar member, for the block (inside :func:`reused_copies`, the
    copy it keeps); a member that cannot be read is a :class:`VideoDecodeError` naming ``path``."""
    if _kept is not None:
        yield _kept.get(path, timeout)
        return
    with fresh_copy(path, timeout) as local:
        yield local


@contextlib.contextmanager
def fresh_copy(path: str, timeout: float | None) -> Iterator[Path]:
    """A new temporary local copy of an object or of a tar member, removed after the block."""
    if split_member(path) is None:
        with local_copy(path, timeout) as local:
            yield local
        return
    try:
        data = member_bytes(path)
    except (OSError, EOFError) as err:
        raise VideoDecodeError(path, str(err).removeprefix(f"{path}: ")) from None
    with temporary_copy(split_member(path)[1], data) as local:
        yield local
