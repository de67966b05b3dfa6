"""A video reader of a local file or of an object-storage URL, the one way every caller opens a video it names by
path (scoring's decode, the thumbnails of reports and the server)."""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

from ..storage import is_url, local_copy
from .frame_info import VideoDecodeError
from .reader import VideoReader


@contextlib.contextmanager
def open_video(path: str | os.PathLike, backend: str = "auto", short_side: int | None = None,
               timeout: float | None = None, device: str = "cpu") -> Iterator[VideoReader]:
    """A :class:`~coca_video.video.VideoReader` of a local file, or of a temporary local copy of an object-storage
    URL (``s3://...``: downloaded under the decode's time limit, removed after the block; see
    :func:`~coca_video.storage.local_copy`). Errors inside the block name ``path``, not the copy."""
    options = {"backend": backend, "short_side": short_side, "timeout": timeout, "device": device}
    if not is_url(path):
        yield VideoReader(path, **options)
        return
    with local_copy(str(path), timeout) as local:
        try:
            yield VideoReader(local, **options)
        except VideoDecodeError as err:
            raise VideoDecodeError(path, err.problem.replace(str(local), str(path))) from None
