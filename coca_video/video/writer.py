"""Write frames to a video file with PyAV (tests, the demo and the synthetic world's clips use it)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float = 25, codec: str = "libx264",
                options: dict[str, str] | None = None, pixel_format: str = "yuv420p",
                container_format: str | None = None) -> Path:
    """Encode uint8 RGB frames (T, H, W, 3) to ``path`` (container from the suffix, or ``container_format``, e.g.
    "mp4" for a temp name). H and W should be even for 4:2:0 codecs. ``options`` go to the encoder (e.g.
    ``{"crf": "0"}``)."""
    import av
    from fractions import Fraction

    path = Path(path)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    with av.open(str(path), "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pixel_format
        if options:
            stream.options = options
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
