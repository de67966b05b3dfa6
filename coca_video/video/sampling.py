"""Which frames to decode: TSN segment sampling, dense multi-view clips, start/end windows, frames at a fixed rate
(``fps_*``), and how a time in a video is written (``clock``).

All functions work on frame indices of one video with ``num_frames`` frames; videos shorter than the number of
frames asked for repeat frames (a single-frame video or a still image yields the same frame N times).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np


def sample_indices(num_frames: int, n: int = 16, mode: Literal["eval", "train"] = "eval",
                   rng: np.random.Generator | None = None) -> np.ndarray:
    """N frame indices by uniform segment sampling: the video is cut into N equal segments and one frame is taken
    from each, at the segment's centre (``eval``) or at a random point in it (``train``, TSN-style)."""
    if mode == "eval":
        return segment_points(num_frames, n, 0.5)
    if mode == "train":
        return segment_points(num_frames, n, (rng or np.random.default_rng()).random(n))
    raise ValueError(f"mode must be eval or train, got {mode!r}")


def segment_points(num_frames: int, n: int, offset: float | np.ndarray) -> np.ndarray:
    """The point at fraction ``offset`` (one for all, or one per segment) of each of n equal segments: 0.5 gives
    the TSN evaluation centres; other fractions shift multi-view clips within their segments."""
    if num_frames < 1:
        raise ValueError(f"a video needs at least one frame, got {num_frames}")
    points = (np.arange(n) + offset) * num_frames / n
    return np.minimum(points.astype(np.int64), num_frames - 1)


def linspace_indices(num_frames: int, n: int = 16) -> np.ndarray:
    """N indices evenly spaced from the first frame to the last, truncated (the CLIP4Clip / pytorchvideo rule)."""
    if num_frames < 1:
        raise ValueError(f"a video needs at least one frame, got {num_frames}")
    return np.linspace(0, num_frames - 1, n).astype(np.int64)


def dense_indices(num_frames: int, n: int, stride: int, views: int = 1) -> np.ndarray:
    """``views`` clips of N frames at ``stride``, their starts spread evenly over the video: (views, N).
    A clip longer than the video is centred on it and its out-of-range frames clamp to the ends."""
    if num_frames < 1:
        raise ValueError(f"a video needs at least one frame, got {num_frames}")
    span = (n - 1) * stride + 1
    if span >= num_frames:
        starts = np.full(views, (num_frames - span) // 2)
    else:
        starts = np.round(np.linspace(0, num_frames - span, views) if views > 1 else
                          np.array([(num_frames - span) / 2])).astype(np.int64)
    clips = starts[:, None] + np.arange(n)[None, :] * stride
    return np.clip(clips, 0, num_frames - 1)


def window_frames(fps: float, num_frames: int, start_sec: float | None, end_sec: float | None) -> tuple[int, int]:
    """The (first frame, frame count) of the [start_sec, end_sec) window of a video, e.g. Kinetics'
    time_start/time_end within an untrimmed file; the whole video when both are None. Never empty."""
    first = 0 if start_sec is None else int(round(max(start_sec, 0.0) * fps))
    last = num_frames if end_sec is None else int(round(end_sec * fps))
    first = min(first, num_frames - 1)
    last = min(max(last, first + 1), num_frames)
    return first, last - first


def segment_windows(duration: float, seconds: float, stride: float | None = None) -> list[tuple[float, float]]:
    """Consecutive [start, end) windows of ``seconds`` covering ``duration`` seconds, starting every ``stride``
    seconds (default ``seconds``: no overlap, no gap); the last window ends at the video's end and may be shorter.
    A video shorter than one window is one window."""
    if seconds <= 0:
        raise ValueError(f"segment length must be > 0 seconds, got {seconds}")
    stride = seconds if stride is None else stride
    if stride <= 0:
        raise ValueError(f"segment stride must be > 0 seconds, got {stride}")
    windows, start = [], 0.0
    while True:
        end = min(start + seconds, duration)
        windows.append((round(start, 6), round(end, 6)))
        if end >= duration or start + stride >= duration:
            return windows
        start += stride


def window_indices(fps: float, num_frames: int, n: int, start_sec: float | None = None,
                   end_sec: float | None = None) -> np.ndarray:
    """``sample_indices`` of the [start_sec, end_sec) window (the whole video when both are None)."""
    first, count = window_frames(fps, num_frames, start_sec, end_sec)
    return first + sample_indices(count, n)


def fps_rate(duration: float, fps: float, max_frames: int | None = None) -> float:
    """Frames per second to sample from a ``duration``-second video: ``fps``, lowered to ``max_frames / duration``
    when the video is long enough to give more than ``max_frames`` (then the frames spread over all of it)."""
    if max_frames is not None and duration * fps > max_frames:
        return max_frames / duration
    return fps


def fps_windows(start: float, end: float, rate: float, limit: int | None = None) -> list[tuple[float, float]]:
    """The [start, end) window cut into intervals of ``1 / rate`` seconds from ``start`` (the last one ends at
    ``end`` and may be shorter), at most ``limit``: each interval is one sampled frame's row. Never empty."""
    count = max(1, math.ceil((end - start) * rate - 1e-6))
    count = min(count, limit) if limit else count
    return [(round(start + j / rate, 6), round(min(start + (j + 1) / rate, end), 6)) for j in range(count)]


def fps_indices(fps: float, num_frames: int, windows: list[tuple[float, float]]) -> np.ndarray:
    """The frame shown at the centre of each window (frame i is shown from ``i / fps``), clamped to the video."""
    centres = np.array([(lo + hi) / 2 for lo, hi in windows])
    return np.minimum(np.floor(centres * fps + 1e-6).astype(np.int64), num_frames - 1)


def clock(seconds: float) -> str:
    """A time in a video, to the nearest tenth of a second: ``83`` -> ``01:23``; ``3723`` -> ``1:02:03``; a time
    that is not a whole second shows its tenths, ``0.5`` -> ``00:00.5``, ``83.46`` -> ``01:23.5``."""
    whole, tenths = divmod(int(round(seconds * 10)), 10)  # rounded once, so 59.96 is 01:00, never 00:60
    minutes, secs = divmod(whole, 60)
    hours, minutes = divmod(minutes, 60)
    text = f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"
    return f"{text}.{tenths}" if tenths else text
