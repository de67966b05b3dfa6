"""Frames through torchcodec (an optional extra on the system's FFmpeg), on the CPU or on a CUDA GPU's decoder: the
reader's ``backend="torchcodec"`` and ``device="cuda"``.

On the CPU, at stored size, the frames are PyAV's bit for bit. On a GPU (NVDEC through torchcodec) the decoded
pictures are the same but the colour conversion to RGB is the GPU's, so frames may differ from the CPU's by rounding
(its test allows 2 levels on average per frame, 4 when resized); the frames come back to the CPU as uint8 arrays
like every backend's, so the time limit's helper process and every caller work unchanged. Neither the frames nor the
speed on a GPU were checked where this was written (no GPU: the test is skipped).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from .isolate import report_progress
from .frame_info import DECORD_PIXEL_FORMATS, END_SLACK_FRAMES, VideoDecodeError, VideoInfo, rotate


@functools.cache
def torchcodec_problem() -> str | None:
    """Why torchcodec cannot decode videos on this machine (None: it can), in one line with the fix. torchcodec
    imports without FFmpeg and fails only when it decodes, so this loads its FFmpeg core library, as its decoders do
    first thing (torchcodec's ``load_core_libraries``: libtorchcodec_core9 down to 4, each linked to that FFmpeg)."""
    try:
        from torchcodec._internally_replaced_utils import load_core_libraries
    except ImportError:
        return "torchcodec is not installed: pip install 'coca-video[torchcodec]'"
    except Exception as err:  # noqa: BLE001 -- installed but broken (e.g. built for another torch)
        return f"torchcodec does not import ({type(err).__name__}: {str(err).splitlines()[0][:160]})"
    try:
        load_core_libraries()
    except Exception:  # noqa: BLE001 -- its message is a 60-line loader traceback; the cause is nearly always FFmpeg
        return "torchcodec cannot load FFmpeg's shared libraries (it needs FFmpeg 4-9: apt-get install ffmpeg)"
    return None


def torchcodec_refusal(info: VideoInfo) -> str | None:
    """Why torchcodec 0.17 would not return PyAV's frames for this file (None: it does): it converts pixel formats
    other than 8-bit YUV to RGB differently (10-bit HEVC: off by about half a level on average), and in AVI files
    with B-frames it returns the frame before the one shown at a time (their timestamps are decode times)."""
    if info.pixel_format not in DECORD_PIXEL_FORMATS:
        return f"pixel format {info.pixel_format or 'unknown'}"
    if "avi" in info.container.split(","):
        return "AVI container (frame timestamps in decode order)"
    return None


def decode_torchcodec(path: Path, info: VideoInfo, indices: np.ndarray, size: tuple[int, int],
                      device: str = "cpu") -> np.ndarray:
    """Frame i is the one torchcodec plays at (i + 0.5) / fps after the first frame (exact seek mode: its index of
    every frame, from a scan of the file; approximate mode trusts the header's rate and misses on variable frame
    rate). torchcodec turns frames upright and resizes after turning; the frames go back to stored orientation
    here, as the other backends return them. ``device`` is ``cpu`` or a CUDA device (``cuda``, ``cuda:N``), always
    named: torchcodec's default is torch's default device, which a caller may have set to a GPU."""
    refusal = torchcodec_refusal(info)
    if refusal:
        raise VideoDecodeError(path, f"backend torchcodec cannot read this file: {refusal}")
    problem = torchcodec_problem()
    if problem:
        raise VideoDecodeError(path, problem)
    from torchcodec.decoders import VideoDecoder
    from torchcodec.transforms import Resize

    turned = info.rotation in (90, 270)
    upright_size = size[::-1] if turned else size
    stored = upright_size == ((info.width, info.height) if turned else (info.height, info.width))
    decoder = VideoDecoder(str(path), seek_mode="exact", dimension_order="NHWC", num_ffmpeg_threads=1, device=device,
                           transforms=None if stored else [Resize(list(upright_size))])
    begin, end = decoder.metadata.begin_stream_seconds, decoder.metadata.end_stream_seconds
    unique, inverse = np.unique(indices, return_inverse=True)
    last_index = max(0, int(round((end - begin) * info.fps)) - 1)
    if unique[-1] > last_index + END_SLACK_FRAMES:
        raise VideoDecodeError(path, f"truncated: frames decodable up to about #{last_index}, the header claims "
                                     f"{info.num_frames}")
    times = np.minimum(begin + (unique + 0.5) / info.fps, np.nextafter(end, begin))
    frames = decoder.get_frames_played_at(times.tolist()).data.cpu().numpy()
    report_progress(len(unique))
    return rotate(frames, (-info.rotation) % 360)[inverse]
