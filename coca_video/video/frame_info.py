"""What every decoding path shares: the typed error naming the file, the header facts (:class:`VideoInfo`), the
truncation slack, the pixel formats converted alike everywhere, and turning frames by a display rotation."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..errors import UserError

# 8-bit formats decord converts to RGB exactly as PyAV does (tested on the corpus in tests/test_video_corpus.py)
DECORD_PIXEL_FORMATS = ("yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "nv12")
END_SLACK_FRAMES = 2  # how many frames short of the header's count a stream may end before it counts as truncated


class VideoDecodeError(UserError):
    """A video that cannot be read; ``reason`` names the file and what is wrong with it (a user's file: batch jobs
    record it as that file's error row, single-file calls get one line)."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path, self.problem = str(path), problem
        self.reason = f"{path}: {problem}"
        super().__init__(self.reason)

    def __reduce__(self):  # survives the trip back from a decoding child process
        return VideoDecodeError, (self.path, self.problem)


@dataclass(frozen=True)
class VideoInfo:
    """What the headers say: frame count, frame rate, duration (s), stored size, display rotation (degrees
    clockwise), codec, pixel format and container format names."""

    num_frames: int
    fps: float
    duration: float
    height: int
    width: int
    rotation: int = 0
    codec: str = ""
    pixel_format: str = ""
    container: str = ""


def rotate(frames: np.ndarray, rotation: int) -> np.ndarray:
    if rotation in (90, 180, 270):
        frames = np.ascontiguousarray(np.rot90(frames, k=-rotation // 90, axes=(1, 2)))
    return frames
