"""Just enough of the MP4/MOV box structure to read what FFmpeg (through PyAV) does not expose: whether the index
(moov) was ever written, and a track's display rotation from its tkhd matrix."""

from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import BinaryIO, Iterator


def mp4_boxes(file: BinaryIO, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, payload end) of the MP4 boxes in bytes [start, end) of ``file``; stops at a box that
    runs past ``end`` (a file cut short)."""
    position = start
    while position + 8 <= end:
        file.seek(position)
        size, kind = struct.unpack(">I4s", file.read(8))
        header = 8
        if size == 1:
            size, header = struct.unpack(">Q", file.read(8))[0], 16
        elif size == 0:
            size = end - position
        if size < header or position + size > end:
            return
        yield kind, position + header, position + size
        position += size


def is_mp4_without_moov(path: Path) -> bool:
    """An MP4/MOV (starts with an ftyp box) whose top level has no moov box: the index was never written."""
    with open(path, "rb") as file:
        kinds = [kind for kind, _, _ in mp4_boxes(file, 0, path.stat().st_size)]
    return bool(kinds) and kinds[0] == b"ftyp" and b"moov" not in kinds


def mp4_rotation(path: Path, track_id: int) -> int:
    """Display rotation (degrees clockwise) from the matrix in the tkhd box of track ``track_id`` (FFmpeg's stream
    id for MP4), read from the file directly: FFmpeg's display matrix side data is not exposed by PyAV's streams."""
    with open(path, "rb") as file:
        for moov in (box for box in mp4_boxes(file, 0, path.stat().st_size) if box[0] == b"moov"):
            for trak in (box for box in mp4_boxes(file, moov[1], moov[2]) if box[0] == b"trak"):
                for kind, start, _ in mp4_boxes(file, trak[1], trak[2]):
                    if kind == b"tkhd":
                        matrix_track, rotation = _tkhd_rotation(file, start)
                        if matrix_track == track_id:
                            return rotation
    return 0


def _tkhd_rotation(file: BinaryIO, start: int) -> tuple[int, int]:
    """(track id, clockwise rotation) of the tkhd box whose payload starts at ``start``. The matrix is
    [a b u; c d v; x y w] with a, b, c, d in 16.16 fixed point; displaying rotates by atan2(b, a) clockwise."""
    file.seek(start)
    version = file.read(1)[0]
    times = 8 if version == 1 else 4
    file.seek(start + 4 + 2 * times)
    track_id = struct.unpack(">I", file.read(4))[0]
    file.seek(start + 4 + 2 * times + 4 + 4 + times + 8 + 8)  # track id, reserved, duration, reserved, layer...
    a, b = struct.unpack(">ii", file.read(8))
    return track_id, round(math.degrees(math.atan2(b, a))) % 360
