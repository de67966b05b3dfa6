"""Real-encoder corpus: every backend returns, bit for bit at stored size, the frames a full sequential PyAV decode
of the same file shows at the sampled indices (or, for decord and torchcodec, refuses with VideoDecodeError);
rotated clips come out upright. torchcodec joins when its FFmpeg core loads. The clips are encoded here with PyAV, once per module, and never committed."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from probes import torchcodec_problem

from coca_video.video import VideoDecodeError, VideoReader, sample_indices

HAS_TORCHCODEC = torchcodec_problem() is None  # its core library loads FFmpeg (an import proves nothing)
BACKENDS = ("pyav", "decord", "auto") + (("torchcodec",) if HAS_TORCHCODEC else ())
REFUSING = ("decord", "torchcodec")  # may refuse a file (auto never uses them alone), never return wrong frames
SAMPLE_SIZES = (16, 4)


@dataclass(frozen=True)
class Clip:
    """How to encode one corpus file: ``seconds`` at ``fps``, stored ``height`` x ``width``, the encoder set-up."""

    suffix: str
    codec: str = "libx264"
    seconds: float = 4.0
    fps: int = 30
    height: int = 120
    width: int = 160
    pix_fmt: str = "yuv420p"
    options: dict[str, str] = field(default_factory=dict)
    container_options: dict[str, str] = field(default_factory=dict)
    rotation: int = 0  # clockwise degrees to display (the reader's convention)
    audio_first: bool = False
    start_seconds: float = 0.0  # first timestamp
    vfr_gaps: tuple[int, ...] = ()  # frame durations in 1/fps units, cycled: a variable frame rate


QUIET_X265 = {"x265-params": "log-level=error"}
CORPUS = {
    "x264_defaults": Clip("mp4", seconds=40),  # keyint 250, B-frames, CABAC
    "x264_gop600": Clip("mp4", seconds=40, options={"g": "600", "x264-params": "scenecut=0"}),
    "x264_open_gop": Clip("mp4", seconds=12, options={"x264-params": "open-gop=1:keyint=60"}),
    "x264_intra": Clip("mp4", options={"g": "1"}),
    "x264_gop_2s": Clip("mp4", seconds=20, options={"g": "60"}),
    "x264_vfr": Clip("mkv", vfr_gaps=(1, 1, 3, 1, 2, 5)),
    "rotate_90": Clip("mp4", height=48, width=96, rotation=90),
    "rotate_180": Clip("mp4", height=48, width=96, rotation=180),
    "rotate_270": Clip("mp4", height=48, width=96, rotation=270),
    "hevc_10bit": Clip("mp4", codec="libx265", pix_fmt="yuv420p10le", options=QUIET_X265),
    "vp9_altref": Clip("webm", codec="libvpx-vp9",
                       options={"cpu-used": "8", "auto-alt-ref": "1", "lag-in-frames": "16"}),
    "mpeg4_avi": Clip("avi", codec="mpeg4", options={"bf": "2", "g": "30"}),
    "mjpeg_avi": Clip("avi", codec="mjpeg", pix_fmt="yuvj420p"),
    "h264_mkv": Clip("mkv", seconds=12),
    "moov_front": Clip("mp4", seconds=12, container_options={"movflags": "faststart"}),
    "start_offset": Clip("mp4", seconds=12, start_seconds=1.5),
    "audio_first": Clip("mp4", seconds=12, audio_first=True),
    # x264/x265 4:2:0 need even sizes; 4:4:4 takes odd ones (decord and PyAV both convert it)
    "odd_size_444": Clip("mp4", height=241, width=321, pix_fmt="yuv444p", seconds=2),
    "ten_minutes": Clip("mp4", seconds=600, fps=10, height=48, width=64),  # ~3 s with its checks
}


def displayed_frame(index: int, height: int, width: int) -> np.ndarray:
    """What frame ``index`` should look like upright: a bright block in the top-left corner (tells orientation),
    a bar that moves one step per frame and the frame number in binary as grey blocks (tells which frame)."""
    frame = np.full((height, width, 3), 40, np.uint8)
    block = max(4, min(height, width) // 8)
    frame[:block, :block] = 250
    bar = block + (index * 2) % max(1, width - 2 * block)
    frame[block:, bar:bar + 3, 1] = 200
    for bit in range(min(12, width // block - 1)):
        if index >> bit & 1:
            frame[-block:, (bit + 1) * block:(bit + 2) * block, 2] = 220
    return frame


def stored_frame(index: int, clip: Clip) -> np.ndarray:
    """The frame as stored: the upright frame turned back against the display rotation."""
    upright_shape = (clip.width, clip.height) if clip.rotation in (90, 270) else (clip.height, clip.width)
    return np.ascontiguousarray(np.rot90(displayed_frame(index, *upright_shape), k=clip.rotation // 90))


def frame_times(clip: Clip) -> np.ndarray:
    """Timestamps in 1/fps units: evenly spaced, or with the clip's variable gaps."""
    count = int(clip.seconds * clip.fps)
    if not clip.vfr_gaps:
        return np.arange(count)
    gaps = np.resize(np.array(clip.vfr_gaps), count)
    return np.concatenate([[0], np.cumsum(gaps)[:-1]])


def encode(path: Path, clip: Clip) -> Path:
    with av.open(str(path), "w", options=clip.container_options) as container:
        if clip.audio_first:
            audio = container.add_stream("aac", rate=16000)
        stream = container.add_stream(clip.codec, rate=clip.fps)
        stream.height, stream.width, stream.pix_fmt = clip.height, clip.width, clip.pix_fmt
        stream.options = dict(clip.options)
        stream.codec_context.time_base = Fraction(1, clip.fps)
        if clip.rotation:
            stream.set_display_rotation(-clip.rotation)  # PyAV takes counter-clockwise degrees
        offset = round(clip.start_seconds * clip.fps)
        for index, tick in enumerate(frame_times(clip)):
            frame = av.VideoFrame.from_ndarray(stored_frame(index, clip), format="rgb24")
            frame.pts, frame.time_base = int(tick) + offset, Fraction(1, clip.fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if clip.audio_first:
            write_silence(container, audio, clip.seconds)
    return path


def write_silence(container, stream, seconds: float) -> None:
    for start in range(0, int(seconds * 16000), 1024):
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 16000, start
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


class Corpus:
    """Corpus files, each encoded on first use into one folder."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.paths = folder, {}

    def path(self, name: str) -> Path:
        if name not in self.paths:
            clip = CORPUS[name]
            if clip.codec not in av.codecs_available:
                pytest.skip(f"PyAV's FFmpeg has no {clip.codec} encoder")
            self.paths[name] = encode(self.folder / f"{name}.{clip.suffix}", clip)
        return self.paths[name]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Corpus:
    return Corpus(tmp_path_factory.mktemp("corpus"))


def sequential_frames(path: Path, fps: float, wanted: np.ndarray, by_time: bool) -> dict[int, np.ndarray]:
    """The reference: decode every frame in presentation order with PyAV and keep frame i for each wanted i:
    the i-th frame shown, or (``by_time``, variable frame rate) the last frame whose time from the first frame is
    at or before (i + 0.5) / fps."""
    shown_times, kept = [], {}
    wanted_set = set(wanted.tolist())
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for ordinal, frame in enumerate(container.decode(stream)):
            shown_times.append(float(frame.pts * stream.time_base))
            if by_time or ordinal in wanted_set:
                kept[ordinal] = frame.to_ndarray(format="rgb24")
    if not by_time:
        return {i: kept[i] for i in wanted_set}
    times = np.array(shown_times) - shown_times[0]
    return {i: kept[int(np.searchsorted(times, (i + 0.5) / fps, side="right") - 1)] for i in wanted_set}


def upright(frame: np.ndarray, rotation: int) -> np.ndarray:
    """The stored frame turned clockwise by ``rotation`` degrees, as a player shows it."""
    return np.rot90(frame, k=-(rotation // 90))


@pytest.mark.parametrize("name", list(CORPUS))
def test_sampled_frames_equal_a_full_sequential_decode(corpus, name):
    clip, path = CORPUS[name], corpus.path(name)
    probe = VideoReader(path, backend="pyav")
    assert probe.rotation == clip.rotation
    assert probe.fps == pytest.approx(clip.fps, rel=0.2 if clip.vfr_gaps else 1e-3)
    if not clip.vfr_gaps:
        assert abs(probe.num_frames - int(clip.seconds * clip.fps)) <= 1
    wanted = np.concatenate([sample_indices(probe.num_frames, n) for n in SAMPLE_SIZES])
    reference = sequential_frames(path, probe.fps, wanted, by_time=bool(clip.vfr_gaps))
    for backend in BACKENDS:
        for n in SAMPLE_SIZES:
            indices = sample_indices(probe.num_frames, n)
            try:
                frames = VideoReader(path, backend=backend, timeout=60).get_frames(indices)
            except VideoDecodeError:
                if backend in REFUSING:
                    continue
                raise
            expected = np.stack([upright(reference[i], clip.rotation) for i in indices.tolist()])
            assert frames.shape == expected.shape, (backend, n)
            mismatched = [int(i) for i, a, b in zip(indices, frames, expected) if not np.array_equal(a, b)]
            assert not mismatched, f"{name} {backend} n={n}: wrong frames at indices {mismatched}"


@pytest.mark.parametrize("name", ["x264_defaults", "x264_open_gop", "h264_mkv", "vp9_altref", "hevc_10bit"])
def test_runs_and_spacings_of_frames_equal_a_full_sequential_decode(corpus, name):
    """PyAV skips decoding non-reference frames it can tell are not wanted (a frame shown later, and still in time,
    was read before them): every frame of a run, frames a few apart and frames a keyframe interval apart still come
    out as a full decode shows them."""
    clip, path = CORPUS[name], corpus.path(name)
    reader = VideoReader(path, backend="pyav")
    count = int(clip.seconds * clip.fps)  # encoded frames (a WebM header's estimate may say more)
    indices = np.unique(np.concatenate([np.arange(0, 40), np.arange(40, 200, 3), np.arange(200, count, 97),
                                        [count - 1]]))
    indices = indices[indices < count]
    reference = sequential_frames(path, reader.fps, indices, by_time=False)
    frames = reader.get_frames(indices)
    mismatched = [int(i) for i, frame in zip(indices, frames) if not np.array_equal(frame, reference[int(i)])]
    assert not mismatched, f"{name}: wrong frames at indices {mismatched}"


@pytest.mark.parametrize("name", ["rotate_90", "rotate_180", "rotate_270"])
def test_rotated_clips_come_out_upright(corpus, name):
    clip, path = CORPUS[name], corpus.path(name)
    for backend in ("pyav", "auto"):
        frames = VideoReader(path, backend=backend).get_frames([0, 5])
        upright_shape = (clip.width, clip.height) if clip.rotation in (90, 270) else (clip.height, clip.width)
        assert frames.shape == (2, *upright_shape, 3)
        block = max(4, min(upright_shape) // 8)
        corners = [frames[:, :block, :block], frames[:, :block, -block:], frames[:, -block:, :block],
                   frames[:, -block:, -block:]]
        assert corners[0].mean() > 200 and all(corner.mean() < 150 for corner in corners[1:]), backend


@pytest.mark.needs("ffmpeg")
@pytest.mark.parametrize("name", ["rotate_90", "rotate_270"])
def test_rotation_matches_ffmpeg_autorotate(corpus, name):
    """The ffmpeg CLI rotates by the display matrix on its own: our upright frame is its output."""
    path = corpus.path(name)
    ours = VideoReader(path, backend="pyav").get_frames([0])[0]
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-frames:v", "1", "-f", "rawvideo", "-pix_fmt",
                          "rgb24", "-"], capture_output=True, check=True).stdout
    theirs = np.frombuffer(raw, np.uint8).reshape(ours.shape)
    assert np.abs(theirs.astype(int) - ours).mean() < 2.0


def test_cut_mp4_without_moov_says_so(corpus, tmp_path):
    data = corpus.path("x264_intra").read_bytes()  # moov at the end (PyAV's default): a cut loses it
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoDecodeError, match=r"incomplete MP4: no moov atom \(file cut short\?\)"):
        VideoReader(cut)


needs_torchcodec = pytest.mark.needs("torchcodec")


@needs_torchcodec
@pytest.mark.parametrize("name", ["x264_defaults", "rotate_90"])
def test_torchcodec_resizes_close_to_pyav(corpus, name):
    """torchcodec's scaler is its own (antialiased bilinear): resized frames have PyAV's shape and orientation and
    differ from PyAV's swscale bilinear by a few levels, never by a wrong frame."""
    path = corpus.path(name)
    indices = sample_indices(VideoReader(path).num_frames, 8)
    ours, theirs = (VideoReader(path, backend=b, short_side=32).get_frames(indices) for b in ("torchcodec", "pyav"))
    assert ours.shape == theirs.shape
    errors = np.abs(ours.astype(int) - theirs).mean(axis=(1, 2, 3))
    assert errors.max() < 4.0, errors


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


@needs_torchcodec
@pytest.mark.needs("cuda")
@pytest.mark.parametrize("name", ["x264_defaults", "x264_open_gop", "rotate_90"])
def test_gpu_decoding_gives_the_cpu_frames_up_to_colour_rounding(corpus, name):
    """device=cuda decodes on the GPU (torchcodec, NVDEC): the same frames as PyAV on the CPU, upright, at stored
    size and resized, through the time-limited helper too; the GPU's YUV-to-RGB conversion may round differently."""
    path = corpus.path(name)
    indices = sample_indices(VideoReader(path).num_frames, 16)
    for short_side, timeout in ((None, None), (None, 60), (32, None)):
        gpu = VideoReader(path, device="cuda", short_side=short_side, timeout=timeout).get_frames(indices)
        cpu = VideoReader(path, backend="pyav", short_side=short_side).get_frames(indices)
        assert gpu.shape == cpu.shape and gpu.dtype == np.uint8
        errors = np.abs(gpu.astype(int) - cpu).mean(axis=(1, 2, 3))
        assert errors.max() < (2.0 if short_side is None else 4.0), (short_side, errors)


def test_gpu_decoding_is_asked_for_with_torchcodec_or_auto(corpus):
    path = corpus.path("x264_intra")
    with pytest.raises(ValueError, match="backend must be auto or torchcodec"):
        VideoReader(path, backend="decord", device="cuda")
    with pytest.raises(ValueError, match="device must be cpu, cuda or cuda:N"):
        VideoReader(path, device="gpu")
    if not cuda_available():
        with pytest.raises(ValueError, match="no such CUDA GPU here"):
            VideoReader(path, device="cuda")


@needs_torchcodec
@pytest.mark.parametrize("name", ["hevc_10bit", "mpeg4_avi"])
def test_torchcodec_refuses_what_it_gets_wrong_naming_the_file(corpus, name):
    path = corpus.path(name)
    with pytest.raises(VideoDecodeError, match=f"{path.name}: backend torchcodec cannot read this file"):
        VideoReader(path, backend="torchcodec").get_frames([0])



@pytest.mark.slow
def test_every_corpus_file_scores_ok_and_the_report_finishes(corpus, tmp_path):
    """The whole corpus through `score` (default model, the real decode path with its time limit) and its HTML
    report: every file gets status ok, and the report lists every one."""
    import pandas as pd

    from coca_video.config import load_config
    from coca_video.tasks import score

    for name in CORPUS:
        corpus.path(name)
    out, report = tmp_path / "scores.csv", tmp_path / "report.html"
    score.run(load_config(score.ScoreConfig, None, [f"videos={corpus.folder}", f"out={out}", f"report={report}",
                                                    "decode.num_frames=4", "decode.workers=2"]))
    table = pd.read_csv(out)
    assert sorted(Path(p).stem for p in table.path) == sorted(corpus.paths)
    assert (table.status == "ok").all(), table[table.status != "ok"][["path", "error"]].to_string()
    page = report.read_text()
    assert all(Path(p).name in page for p in table.path)
