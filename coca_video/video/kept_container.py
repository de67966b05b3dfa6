"""The PyAV container a header read opened, kept for the decode that usually follows it in the same process.

Opening a file costs FFmpeg's stream analysis, which decodes a frame or more even when the MP4 header has all the
metadata (2.4 ms on a 320 px Kinetics-like clip, ~10% of decoding its 16 frames; 11 ms on a 720p clip whose header
lacks the pixel format, like bigbuckbunny.mp4). The decode that follows (in the same process, or the same helper
process under a time limit) opened it again. An MP4's container is kept instead, as opened (nothing demuxed from it:
its metadata comes from the header), for one file at a time: keeping a new one closes the last. Other containers are
not kept (their rotation is read from a decoded frame). Keyed by path, size and modification time, so a changed file
is opened again.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

_lock = threading.Lock()
_kept: tuple[tuple[str, int, int], Any] | None = None


def _key(path: Path) -> tuple[str, int, int]:
    stat = os.stat(path)
    return str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns


def keep(path: Path, container: Any) -> None:
    """Keep ``container`` (opened on ``path``, nothing demuxed from it yet) for :func:`take`; closes the one kept
    before."""
    global _kept
    with _lock:
        previous, _kept = _kept, (_key(path), container)
    if previous is not None:
        previous[1].close()


def take(path: Path) -> Any | None:
    """The container kept for ``path`` (the caller now owns it), or None."""
    global _kept
    key = _key(path)
    with _lock:
        if _kept is None or _kept[0] != key:
            return None
        container, _kept = _kept[1], None
    return container
