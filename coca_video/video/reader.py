"""One video reader, two backends (decord, PyAV), typed errors, resize while decoding, a time limit.

    reader = VideoReader("clip.mp4", backend="auto", short_side=224, timeout=60)
    reader.num_frames, reader.fps, reader.duration, reader.height, reader.width, reader.rotation
    frames = reader.get_frames(sample_indices(reader.num_frames, 16))   # uint8 (16, H, W, 3) RGB

Metadata comes from the container headers (PyAV) without decoding. Frame ``i`` is the frame shown at time
``i / fps`` (for variable frame rate files: the last frame whose timestamp is at or before it). ``auto`` decodes
with decord, falling back to PyAV when decord is missing or fails on the file, and uses PyAV's keyframe seeking
when the wanted frames are more than ``SEEK_AHEAD_SECONDS`` apart (a few frames from a long video). Still images
(jpg, png, ...) read as one-frame videos.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from .isolate import DecodeTimeout, call_with_timeout

Backend = Literal["auto", "decord", "pyav"]
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
SEEK_AHEAD_SECONDS = 3.0  # decode forward through smaller gaps; seek to a keyframe across larger ones
END_SLACK_FRAMES = 2  # how many frames short of the header's count a stream may end before it counts as truncated


class VideoDecodeError(Exception):
    """A video that cannot be read; ``reason`` names the file and what is wrong with it."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path, self.problem = str(path), problem
        self.reason = f"{path}: {problem}"
        super().__init__(self.reason)

    def __reduce__(self):  # survives the trip back from a decoding child process
        return VideoDecodeError, (self.path, self.problem)


@dataclass(frozen=True)
class VideoInfo:
    """What the headers say: frame count, frame rate, duration (s), stored size, display rotation (degrees)."""

    num_frames: int
    fps: float
    duration: float
    height: int
    width: int
    rotation: int = 0
    codec: str = ""


class VideoReader:
    """Frames of one video as uint8 RGB arrays. ``short_side`` resizes while decoding (the shorter side of the
    displayed frame becomes ``short_side``); ``timeout`` (seconds) runs each decode in a child process that is
    killed when it runs over."""

    def __init__(self, path: str | os.PathLike, backend: Backend = "auto", short_side: int | None = None,
                 timeout: float | None = None):
        if backend not in ("auto", "decord", "pyav"):
            raise ValueError(f"backend must be auto, decord or pyav, got {backend!r}")
        self.path, self.backend, self.short_side, self.timeout = Path(path), backend, short_side, timeout
        _check_file(self.path)
        self.info = self._guarded(_probe, self.path)
        self.num_frames, self.fps, self.duration = self.info.num_frames, self.info.fps, self.info.duration
        self.height, self.width, self.rotation = self.info.height, self.info.width, self.info.rotation

    def __repr__(self) -> str:
        return (f"VideoReader({str(self.path)!r}, {self.num_frames} frames, {self.fps:.3f} fps, "
                f"{self.width}x{self.height}, rotation {self.rotation})")

    def output_size(self) -> tuple[int, int]:
        """(height, width) of the frames ``get_frames`` returns (stored orientation, before rotation)."""
        return _resized(self.info.height, self.info.width, self.short_side)

    def get_frames(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Frames at ``indices`` (any order, repeats allowed) as uint8 (T, H, W, 3) RGB, upright."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(indices) == 0:
            raise ValueError("no frame indices given")
        if indices.min() < 0 or indices.max() >= self.num_frames:
            raise IndexError(f"{self.path}: frame indices must lie in [0, {self.num_frames}), got "
                             f"{indices.min()}..{indices.max()}")
        frames = self._guarded(_decode, self.path, self.info, indices, self.backend, self.output_size())
        return _rotate(frames, self.info.rotation)

    def _guarded(self, fn, *args):
        try:
            return fn(*args) if self.timeout is None else call_with_timeout(fn, self.timeout, *args)
        except VideoDecodeError:
            raise
        except DecodeTimeout as err:
            raise VideoDecodeError(self.path, f"decode timed out ({err})") from None
        except MemoryError:
            raise VideoDecodeError(self.path, "out of memory while decoding") from None
        except Exception as err:  # noqa: BLE001 -- every backend failure becomes one typed error naming the file
            raise VideoDecodeError(self.path, f"cannot decode ({type(err).__name__}: {err})") from None


# -- headers -----------------------------------------------------------------------------------------------------------
def _check_file(path: Path) -> None:
    if not path.exists():
        raise VideoDecodeError(path, "file not found")
    if path.is_dir():
        raise VideoDecodeError(path, "is a directory, not a video file")
    if path.stat().st_size == 0:
        raise VideoDecodeError(path, "empty file (0 bytes)")


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _probe(path: Path) -> VideoInfo:
    """Read the headers with PyAV. MP4/MOV headers hold everything, so those are read without FFmpeg's stream
    analysis (which decodes packets of every stream: ~12 ms on a 720p clip with audio); other containers, or an
    MP4 whose header lacks something, get the full analysis."""
    if _is_image(path):
        from PIL import Image

        try:
            with Image.open(path) as image:
                return VideoInfo(1, 1.0, 0.0, image.height, image.width, codec="image")
        except Exception as err:  # noqa: BLE001
            raise VideoDecodeError(path, f"not a readable image ({type(err).__name__})") from None
    try:
        return _header_info(path, {"probesize": "32"}, only_mp4=True)
    except VideoDecodeError:
        return _header_info(path, {}, only_mp4=False)


def _header_info(path: Path, options: dict[str, str], only_mp4: bool) -> VideoInfo:
    import av

    try:
        container = av.open(str(path), options=options)
    except av.error.InvalidDataError:
        raise VideoDecodeError(path, "not a video file (no known container format)") from None
    except av.error.FFmpegError as err:
        raise VideoDecodeError(path, f"cannot open ({err})") from None
    with container:
        if only_mp4 and "mp4" not in container.format.name.split(","):
            raise VideoDecodeError(path, "not an MP4/MOV file")
        if not container.streams.video:
            kinds = ", ".join(sorted({s.type for s in container.streams})) or "none"
            raise VideoDecodeError(path, f"no video stream (streams: {kinds})")
        stream = container.streams.video[0]
        context = stream.codec_context
        if context is None or not context.name:
            raise VideoDecodeError(path, "unsupported codec (no decoder available)")
        if not context.width or not context.height:
            raise VideoDecodeError(path, "video stream has no frame size (damaged header)")
        fps = float(stream.average_rate or stream.guessed_rate or stream.base_rate or 0)
        duration = float(stream.duration * stream.time_base) if stream.duration else \
            (container.duration / 1e6 if container.duration else 0.0)
        num_frames = stream.frames or int(round(duration * fps))
        if fps <= 0 and duration > 0 and num_frames:
            fps = num_frames / duration
        if num_frames <= 0 or fps <= 0:
            raise VideoDecodeError(path, "no frames (the header gives neither a frame count nor a duration)")
        if not duration:
            duration = num_frames / fps
        return VideoInfo(num_frames, fps, duration, context.height, context.width, _rotation(stream), context.name)


def _rotation(stream) -> int:
    """Display rotation in degrees clockwise (0, 90, 180, 270) from the stream's display matrix or rotate tag."""
    tag = stream.metadata.get("rotate")
    if tag is not None:
        return int(tag) % 360
    side_data = getattr(stream, "side_data", None)
    if side_data:
        for key, value in (side_data.items() if hasattr(side_data, "items") else []):
            if "DISPLAYMATRIX" in str(key).upper():
                return int(round(-float(value))) % 360
    return 0


def _resized(height: int, width: int, short_side: int | None) -> tuple[int, int]:
    if short_side is None:
        return height, width
    scale = short_side / min(height, width)
    return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


def _rotate(frames: np.ndarray, rotation: int) -> np.ndarray:
    if rotation in (90, 180, 270):
        frames = np.ascontiguousarray(np.rot90(frames, k=-rotation // 90, axes=(1, 2)))
    return frames


# -- decoding ----------------------------------------------------------------------------------------------------------
def _decode(path: Path, info: VideoInfo, indices: np.ndarray, backend: Backend, size: tuple[int, int]) -> np.ndarray:
    if info.codec == "image":
        return _decode_image(path, len(indices), size)
    if backend == "pyav" or (backend == "auto" and _sparse(indices, info.fps)):
        return _decode_pyav(path, info, indices, size)
    try:
        import decord  # noqa: F401
    except ImportError:
        if backend == "decord":
            raise VideoDecodeError(path, "backend decord requested but decord is not installed") from None
        return _decode_pyav(path, info, indices, size)
    try:
        return _decode_decord(path, info, indices, size)
    except Exception:
        if backend == "decord":
            raise
        return _decode_pyav(path, info, indices, size)


def _sparse(indices: np.ndarray, fps: float) -> bool:
    """Frames so far apart that seeking to each beats decoding through (decord decodes through)."""
    unique = np.unique(indices)
    return len(unique) > 1 and float(np.diff(unique).min()) / fps > SEEK_AHEAD_SECONDS


def _decode_image(path: Path, count: int, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        if image.size != (size[1], size[0]):
            image = image.resize((size[1], size[0]), Image.BICUBIC)
        frame = np.asarray(image)
    return np.repeat(frame[None], count, axis=0)


def _decode_decord(path: Path, info: VideoInfo, indices: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import decord

    height, width = size
    resize = {} if (height, width) == (info.height, info.width) else {"width": width, "height": height}
    reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1, **resize)
    # Frame i is the frame shown at i / fps: map through the decoded timestamps (identity for constant frame rate).
    starts = reader.get_frame_timestamp(np.arange(len(reader)))[:, 0]
    unique, inverse = np.unique(indices, return_inverse=True)
    positions = np.searchsorted(starts - starts[0], unique / info.fps + 0.5 / info.fps, side="right") - 1
    last_index = int(round((starts[-1] - starts[0]) * info.fps))
    if unique[-1] > last_index + END_SLACK_FRAMES:
        raise VideoDecodeError(path, f"truncated: frames decodable up to about #{last_index}, the header claims "
                                     f"{info.num_frames}")
    frames = reader.get_batch(np.clip(positions, 0, len(starts) - 1).tolist()).asnumpy()
    return frames[inverse]


def _decode_pyav(path: Path, info: VideoInfo, indices: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Decode forward in presentation order, taking for each wanted time the last frame at or before it; seek to
    a keyframe only across long gaps (sequential decoding beats per-frame seeks for short clips)."""
    import av

    height, width = size
    unique, inverse = np.unique(indices, return_inverse=True)
    targets = unique / info.fps  # seconds from the stream start
    out = np.empty((len(unique), height, width, 3), np.uint8)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "SLICE"
        start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        half_frame = 0.5 / info.fps

        def frames_from(seconds: float | None):
            if seconds is not None:
                container.seek(int((start + seconds) / stream.time_base), stream=stream, backward=True)
            for packet in container.demux(stream):
                try:
                    decoded = packet.decode()
                except av.error.InvalidDataError:  # a damaged packet (often the cut-off last one): skip it
                    continue
                for frame in decoded:
                    if frame.pts is not None:
                        yield float(frame.pts * stream.time_base) - start, frame

        def to_array(frame) -> np.ndarray:  # one swscale pass, bilinear: decord's scaler, bit for bit
            return frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="BILINEAR")

        frames, previous, position, i = frames_from(None), None, 0.0, 0
        while i < len(targets):
            if targets[i] - position > SEEK_AHEAD_SECONDS:
                frames, previous, position = frames_from(targets[i]), None, targets[i]
            step = next(frames, None)
            if step is None:  # end of stream: what is left takes the last frame, if the stream really ended there
                last_index = int(round(position * info.fps))
                if previous is None or unique[-1] > last_index + END_SLACK_FRAMES:
                    raise VideoDecodeError(path, f"truncated: frames decodable up to about #{last_index}, the "
                                                 f"header claims {info.num_frames}")
                out[i:] = to_array(previous)
                break
            time, frame = step
            while i < len(targets) and time > targets[i] + half_frame:
                out[i] = to_array(previous if previous is not None else frame)
                i += 1
            previous, position = frame, time
    return out[inverse]
