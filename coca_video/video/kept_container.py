"""The PyAV container a header read opened, kept for the decode that usually follows it in the same process.

A file whose MP4 header alone does not give its pixel format (bigbuckbunny.mp4 among the benchmark's samples), and
every non-MP4, is opened with FFmpeg's full stream analysis, which decodes a few frames: 11 ms on a 720p clip. The
decode that follows (in the same process, or the same helper process under a time limit) opened it again for another
11 ms. The container is kept instead, as freshly opened (nothing read from it yet), for one file at a time: keeping a
new one closes the last. Keyed by path, size and modification time, so a changed file is opened again.
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
