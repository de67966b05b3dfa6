"""Thumbnails of a video, one home for reports and the server: frames of a window decoded small, each letterboxed
into a fixed box (the whole frame scaled to fit inside it, centred on black bars where the aspect ratios differ:
nothing cropped), and encoded as a small JPEG."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from .sampling import window_indices
from .source import open_video

THUMBNAIL_BOX = (128, 72)  # (width, height) in pixels: every thumbnail is exactly this size, the frame inside it
THUMBNAIL_MAX_BYTES = 6_000  # its JPEG is re-encoded at a lower quality above this, and left out if still above
THUMBNAIL_QUALITIES = (75, 50, 30)  # JPEG qualities tried in turn
DECODE_TIMEOUT = 30.0  # seconds of base budget for decoding a thumbnail's frames (growing with the video)


def window_frames(path: str, count: int, height: int = THUMBNAIL_BOX[1], start: float | None = None,
                  end: float | None = None) -> np.ndarray:
    """``count`` evenly spaced frames (count, H, W, 3) uint8 of a video, or of its [start, end) window in seconds,
    ``height`` pixels on the short side (fewer when the window holds fewer frames: each frame once), decoded in the
    guarded helper process with a time limit (``DECODE_TIMEOUT`` base budget, growing with the video as the
    reader's ``timeout`` does), so one hanging file cannot stall the caller; raises when the video cannot be
    read."""
    with open_video(path, short_side=height, timeout=DECODE_TIMEOUT) as reader:  # an s3:// URL: a temporary copy
        indices = window_indices(reader.fps, reader.num_frames, count, start, end)
        return reader.get_frames(np.unique(indices))


def letterbox(frame: np.ndarray, box: tuple[int, int] = THUMBNAIL_BOX) -> np.ndarray:
    """``frame`` (H, W, 3) uint8 scaled to fit inside ``box`` (width, height) whole and centred on black bars:
    (box height, box width, 3) uint8. A frame wider than the box has bars above and below, a narrower one left and
    right; none is cropped."""
    height, width = frame.shape[:2]
    scale = min(box[0] / width, box[1] / height)
    size = (min(box[0], max(1, round(width * scale))), min(box[1], max(1, round(height * scale))))
    canvas = Image.new("RGB", box)
    canvas.paste(Image.fromarray(frame).resize(size, Image.Resampling.BICUBIC),
                 ((box[0] - size[0]) // 2, (box[1] - size[1]) // 2))
    return np.asarray(canvas)


def thumbnail_jpeg(frame: np.ndarray) -> bytes | None:
    """``frame`` letterboxed into ``THUMBNAIL_BOX`` as a JPEG of at most ``THUMBNAIL_MAX_BYTES`` (the first of
    ``THUMBNAIL_QUALITIES`` that fits), or None when even the lowest quality is too big (e.g. pure noise)."""
    image = Image.fromarray(letterbox(frame))
    for quality in THUMBNAIL_QUALITIES:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality)
        if buffer.tell() <= THUMBNAIL_MAX_BYTES:
            return buffer.getvalue()
    return None


def middle_thumbnail(path: str, start: float | None = None, end: float | None = None) -> bytes | None:
    """The JPEG thumbnail of the middle frame of a video, or of its [start, end) window; None when the window holds
    no frame or its JPEG cannot be made small enough. Raises when the video cannot be read."""
    frames = window_frames(path, 1, start=start, end=end)
    return thumbnail_jpeg(frames[len(frames) // 2]) if len(frames) else None
