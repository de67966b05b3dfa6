"""One video reader, three backends (decord, PyAV, torchcodec), typed errors, resize while decoding, a time limit.

    reader = VideoReader("clip.mp4", backend="auto", short_side=224, timeout=60)
    reader.num_frames, reader.fps, reader.duration, reader.height, reader.width, reader.rotation
    frames = reader.get_frames(sample_indices(reader.num_frames, 16))   # uint8 (16, H, W, 3) RGB

Metadata comes from the container headers (PyAV) without decoding (the display rotation of an MP4/MOV from its
track header; of other containers from the first decoded frame). Frame ``i`` is the frame shown at time
``i / fps``: the last frame whose timestamp (from the first frame's) is at or before ``(i + 0.5) / fps``, the half
frame absorbing rounded timestamps (for variable frame rate files: the last frame at or before that time).
``auto`` decodes with PyAV (see :class:`~.pyav_frames.PyavSource`): it seeks to the keyframe before a wanted frame
whenever the index puts that keyframe beyond the frames decoded, and does not decode non-reference frames it can tell
are not wanted (16 frames of an x264-default 60 s clip: 721 of its 1,800 frames decoded). On the benchmark
(benchmarks/bench_decode.py, 16 frames per file, methods in turns, median) it is the fastest method or within 1.12x
of it on every file; decord (``backend="decord"``) was 1.13-3.9x the best. decord also cannot read display-rotated
files and converts 10-bit video differently, and its frame timestamps fail on AVI with B-frames; it stays as a
backend for those who ask. ``torchcodec`` (an optional extra on the system's FFmpeg) is used only when asked for: at
stored size it returns PyAV's frames bit for bit (exact seek mode, the same timestamp rule, frames turned back to
stored orientation before the common rotation), but its resize is its own antialiased bilinear scaler, so resized
frames differ from PyAV's and decord's by a few levels; it refuses files whose frames it gets wrong (see
``torchcodec_frames.torchcodec_refusal``). On the same benchmark it was 1.0-2.4x the best (the best on two small
files, by 1-12%), so it is not part of ``auto``. ``device="cuda"`` decodes with torchcodec on the GPU
(``torchcodec_frames.py``). Still images (jpg, png, ...) read as one-frame videos.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from . import kept_container
from .frame_info import DECORD_PIXEL_FORMATS, END_SLACK_FRAMES, VideoDecodeError, VideoInfo, rotate
from .isolate import DecodeTimeout, call_with_timeout, report_progress
from .mp4 import is_mp4_without_moov, mp4_rotation
from .pyav_frames import PyavSource, RgbConverter

Backend = Literal["auto", "decord", "pyav", "torchcodec"]
BACKENDS: tuple[Backend, ...] = ("auto", "decord", "pyav", "torchcodec")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
SECONDS_PER_FRAME = 1.0  # decode time allowed per requested frame (a seek and a keyframe interval at 1080p)
SECONDS_PER_VIDEO_SECOND = 0.1  # ... and per second of 1080p video up to the last requested frame (decoding through)
DECODE_DEVICE = re.compile(r"cpu|cuda(:\d+)?")


class VideoReader:
    """Frames of one video as uint8 RGB arrays. ``short_side`` resizes while decoding (the shorter side of the
    displayed frame becomes ``short_side``). ``timeout`` (seconds) runs each decode in a child process that is
    killed when it runs over its budget: reading the headers gets ``timeout`` seconds; ``get_frames`` gets
    ``timeout`` plus ``SECONDS_PER_FRAME`` per requested frame plus ``SECONDS_PER_VIDEO_SECOND`` per second of
    video up to the last requested frame (scaled up for frames larger than 1080p), so a healthy long video is not
    killed while a stuck decoder still is. ``device="cuda"`` (or ``cuda:N``) decodes on that GPU's video decoder
    through torchcodec (``backend`` ``auto`` or ``torchcodec``); the frames still come back as uint8 arrays, equal to
    the CPU's up to the GPU's colour-conversion rounding."""

    def __init__(self, path: str | os.PathLike, backend: Backend = "auto", short_side: int | None = None,
                 timeout: float | None = None, device: str = "cpu"):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        check_decode_device(device, backend)
        if device != "cpu":
            _check_cuda(device)
        check_torchcodec(device, backend)
        self.path, self.backend, self.short_side, self.timeout = Path(path), backend, short_side, timeout
        self.device = device
        _check_file(self.path)
        self.info = self._guarded(self.timeout, "reading the headers", 0, _probe, self.path)
        self.num_frames, self.fps, self.duration = self.info.num_frames, self.info.fps, self.info.duration
        self.height, self.width, self.rotation = self.info.height, self.info.width, self.info.rotation

    def __repr__(self) -> str:
        return (f"VideoReader({str(self.path)!r}, {self.num_frames} frames, {self.fps:.3f} fps, "
                f"{self.width}x{self.height}, rotation {self.rotation})")

    def output_size(self) -> tuple[int, int]:
        """(height, width) of the frames ``get_frames`` returns (stored orientation, before rotation)."""
        return _resized(self.info.height, self.info.width, self.short_side)

    def decode_budget(self, indices: np.ndarray) -> float | None:
        """Seconds a ``get_frames(indices)`` call may take (None: no limit); see the class docstring."""
        if self.timeout is None:
            return None
        video_seconds = (int(np.max(indices)) + 1) / self.fps
        size_factor = max(1.0, self.info.height * self.info.width / (1920 * 1080))
        return (self.timeout + SECONDS_PER_FRAME * len(np.unique(indices))
                + SECONDS_PER_VIDEO_SECOND * size_factor * video_seconds)

    def get_frames(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Frames at ``indices`` (any order, repeats allowed) as uint8 (T, H, W, 3) RGB, upright."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(indices) == 0:
            raise ValueError("no frame indices given")
        if indices.min() < 0 or indices.max() >= self.num_frames:
            raise IndexError(f"{self.path}: frame indices must lie in [0, {self.num_frames}), got "
                             f"{indices.min()}..{indices.max()}")
        count = len(np.unique(indices))
        work = f"{count} frames over {(int(indices.max()) + 1) / self.fps:.0f} s of video"
        frames = self._guarded(self.decode_budget(indices), work, count, _decode, self.path, self.info, indices,
                               self.backend, self.output_size(), self.device)
        return rotate(frames, self.info.rotation)

    def _guarded(self, limit: float | None, work: str, frames_wanted: int, fn, *args):
        """``fn(*args)``, in the helper process under ``limit`` seconds when there is one; every failure becomes a
        VideoDecodeError naming the file (a timeout says how long it waited, for what ``work``, and how many of the
        ``frames_wanted`` frames were decoded by then)."""
        try:
            return fn(*args) if limit is None else call_with_timeout(fn, limit, *args)
        except VideoDecodeError:
            raise
        except DecodeTimeout as err:
            progress = f"; {err.progress} of {frames_wanted} frames decoded" if frames_wanted else ""
            raise VideoDecodeError(self.path, f"decode timed out after {err.waited:.0f} s (budget {limit:.0f} s for "
                                              f"{work}){progress}") from None
        except MemoryError:
            raise VideoDecodeError(self.path, "out of memory while decoding") from None
        except Exception as err:  # noqa: BLE001 -- every backend failure becomes one typed error naming the file
            raise VideoDecodeError(self.path, f"cannot decode ({type(err).__name__}: {err})") from None


def check_decode_device(device: str, backend: str) -> None:
    """``device`` is one frames can be decoded on with ``backend``: the CPU, or a CUDA GPU through torchcodec
    (``backend`` auto or torchcodec); a ``ValueError`` saying which rule is broken otherwise. Whether that GPU exists
    is checked apart (it needs torch)."""
    if not DECODE_DEVICE.fullmatch(device):
        raise ValueError(f"device must be cpu, cuda or cuda:N, got {device!r}")
    if device != "cpu" and backend not in ("auto", "torchcodec"):
        raise ValueError(f"backend must be auto or torchcodec to decode on {device} (torchcodec decodes there), "
                         f"got {backend!r}")


def check_torchcodec(device: str, backend: str) -> None:
    """torchcodec can decode here when it will be used (``backend="torchcodec"`` or a GPU ``device``); a one-line
    ``ValueError`` naming the fix otherwise, given once instead of a loader traceback per file."""
    if backend == "torchcodec" or device != "cpu":
        from .torchcodec_frames import torchcodec_problem

        problem = torchcodec_problem()
        if problem:
            raise ValueError(f"{'backend=torchcodec' if device == 'cpu' else f'device={device}'}: {problem}")


def _check_cuda(device: str) -> None:
    """Refuse a CUDA device this machine lacks once, here, rather than as a decode error on every file."""
    import torch

    index = int(device.partition(":")[2] or 0)
    if not torch.cuda.is_available() or index >= torch.cuda.device_count():
        raise ValueError(f"device {device}: no such CUDA GPU here (torch.cuda.is_available() is "
                         f"{torch.cuda.is_available()}, {torch.cuda.device_count()} devices)")


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
        if is_mp4_without_moov(path):
            raise VideoDecodeError(path, "incomplete MP4: no moov atom (file cut short?)") from None
        raise VideoDecodeError(path, "not a video file (no known container format)") from None
    except av.error.FFmpegError as err:
        raise VideoDecodeError(path, f"cannot open ({err})") from None
    try:
        info = _container_info(path, container, only_mp4)
    except BaseException:
        container.close()
        raise
    if _is_mp4(container):  # nothing demuxed or decoded from it by us: the decode can start from it
        kept_container.keep(path, container)
    else:
        container.close()
    return info


def _container_info(path: Path, container, only_mp4: bool) -> VideoInfo:
    """What the open ``container``'s headers say (``only_mp4``: refuse anything but an MP4/MOV with all of it)."""
    if only_mp4 and not _is_mp4(container):
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
    if only_mp4 and not context.pix_fmt:  # some avcC boxes lack it: the analysis decodes a frame to find it
        raise VideoDecodeError(path, "MP4 header lacks the pixel format")
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
    rotation = mp4_rotation(path, stream.id) if _is_mp4(container) else _first_frame_rotation(container)
    return VideoInfo(num_frames, fps, duration, context.height, context.width, rotation, context.name,
                     context.pix_fmt or "", container.format.name)


def _is_mp4(container) -> bool:
    return "mp4" in container.format.name.split(",")


def _first_frame_rotation(container) -> int:
    """Display rotation (degrees clockwise) that FFmpeg attaches to decoded frames from the stream's display
    matrix (Matroska/WebM carry one too); 0 when the first frame does not decode (decoding reports that later)."""
    import av

    try:
        frame = next(container.decode(video=0), None)
    except av.error.FFmpegError:
        return 0
    return (-frame.rotation) % 360 if frame is not None else 0  # frame.rotation is counter-clockwise


def _resized(height: int, width: int, short_side: int | None) -> tuple[int, int]:
    if short_side is None:
        return height, width
    scale = short_side / min(height, width)
    return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


# -- decoding ----------------------------------------------------------------------------------------------------------
def _decode(path: Path, info: VideoInfo, indices: np.ndarray, backend: Backend, size: tuple[int, int],
            device: str) -> np.ndarray:
    if info.codec == "image":
        return _decode_image(path, len(indices), size)
    if backend == "torchcodec" or device != "cpu":
        from .torchcodec_frames import decode_torchcodec

        return decode_torchcodec(path, info, indices, size, device)
    if backend == "decord":
        return _decode_decord(path, info, indices, size)
    return _decode_pyav(path, info, indices, size)


def _decord_refusal(info: VideoInfo) -> str | None:
    """Why decord 0.6 would not return PyAV's frames for this file (None: it does): it fails on display-rotated
    files (its frame buffers get the rotated size) and converts high bit depth / other pixel formats to RGB
    differently (errors of tens of levels at edges on 10-bit HEVC)."""
    if info.rotation:
        return f"display rotation ({info.rotation} degrees)"
    if info.pixel_format not in DECORD_PIXEL_FORMATS:
        return f"pixel format {info.pixel_format or 'unknown'}"
    return None


def _decode_image(path: Path, count: int, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        if image.size != (size[1], size[0]):
            image = image.resize((size[1], size[0]), Image.BICUBIC)
        frame = np.asarray(image)
    return np.repeat(frame[None], count, axis=0)


def _decode_decord(path: Path, info: VideoInfo, indices: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    refusal = _decord_refusal(info)
    if refusal:
        raise VideoDecodeError(path, f"backend decord cannot read this file: {refusal}")
    try:
        import decord
    except ImportError:
        raise VideoDecodeError(path, "backend decord requested but decord is not installed") from None

    height, width = size
    resize = {} if (height, width) == (info.height, info.width) else {"width": width, "height": height}
    reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1, **resize)
    # Frame i is the frame shown at i / fps: map through the decoded timestamps (identity for constant frame rate).
    starts = reader.get_frame_timestamp(np.arange(len(reader)))[:, 0]
    if len(starts) > 1 and not np.all(np.diff(starts) > 0):  # e.g. AVI with B-frames: no timestamps (all "NOPTS")
        raise VideoDecodeError(path, "decord gives no usable frame timestamps")
    unique, inverse = np.unique(indices, return_inverse=True)
    positions = np.searchsorted(starts - starts[0], unique / info.fps + 0.5 / info.fps, side="right") - 1
    last_index = int(round((starts[-1] - starts[0]) * info.fps))
    if unique[-1] > last_index + END_SLACK_FRAMES:
        raise VideoDecodeError(path, f"truncated: frames decodable up to about #{last_index}, the header claims "
                                     f"{info.num_frames}")
    frames = reader.get_batch(np.clip(positions, 0, len(starts) - 1).tolist()).asnumpy()
    return frames[inverse]


def _decode_pyav(path: Path, info: VideoInfo, indices: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Decode forward in presentation order, taking for each wanted time the last frame at or before it (plus half
    a frame period, so rounded timestamps of constant-rate files map exactly). It seeks to the keyframe at or before
    the next wanted time only when that keyframe lies beyond the frames already decoded (``PyavSource.worth_seeking``):
    every seek moves forward, so the loop ends."""
    import av

    height, width = size
    unique, inverse = np.unique(indices, return_inverse=True)
    half_frame = 0.5 / info.fps
    out = np.empty((len(unique), height, width, 3), np.uint8)
    to_rgb = RgbConverter()
    with kept_container.take(path) or av.open(str(path)) as container:
        source = PyavSource(container)
        frames = source.frames_from_start()
        previous, upcoming = None, next(frames, None)
        first_shown = upcoming[0] if upcoming is not None else 0.0  # times count from the first frame shown
        for i, index in enumerate(unique):
            limit = first_shown + index / info.fps + half_frame
            source.wanted_until = limit
            if upcoming is not None and source.worth_seeking(upcoming[0], limit):
                frames = source.frames_from_keyframe_before(limit)
                previous, upcoming = None, next(frames, None)
            while upcoming is not None and upcoming[0] <= limit:
                previous, upcoming = upcoming, next(frames, None)
            shown = previous or upcoming  # no frame at or before the time: the stream's first frame
            last_index = round((shown[0] - first_shown) * info.fps) if shown else 0
            if shown is None or (upcoming is None and index > last_index + END_SLACK_FRAMES):
                raise VideoDecodeError(path, f"truncated: frames decodable up to about #{last_index}, the header "
                                             f"claims {info.num_frames}")
            out[i] = to_rgb(shown[1], height, width)
            report_progress(i + 1)
    return out[inverse]
