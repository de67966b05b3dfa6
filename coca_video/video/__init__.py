"""Video input: decoding (decord or PyAV, typed errors, time limits), frame sampling, and writing test clips.

    from coca_video.video import VideoReader, sample_indices, VideoDecodeError
    reader = VideoReader(path, backend="auto")
    frames = reader.get_frames(sample_indices(reader.num_frames, 16))   # uint8 (16, H, W, 3) RGB
"""

from .reader import IMAGE_EXTENSIONS, VideoDecodeError, VideoInfo, VideoReader
from .sampling import (clock, dense_indices, fps_indices, fps_rate, fps_windows, linspace_indices, sample_indices,
                       segment_windows, window_frames, window_indices)
from .writer import write_video

__all__ = [
    "IMAGE_EXTENSIONS", "VideoDecodeError", "VideoInfo", "VideoReader", "clock", "dense_indices", "fps_indices",
    "fps_rate", "fps_windows", "linspace_indices", "sample_indices", "segment_windows", "window_frames",
    "window_indices", "write_video",
]
