"""Segment scoring of one long video vs scoring the same content cut into separate files; then whether peak memory
grows with the video's length.

    python benchmarks/bench_segments.py [--model default] [--frames 8] [--hours 2]

1. Speed: a 10-minute 96x64 clip at 10 fps scored with ``segment_seconds=10`` (60 segments) vs a folder of the 60
   10 s files holding the same frames, same model and settings; seconds of scoring per minute of video for both
   (model loading excluded: ``summary["seconds"]``), and the ratio.
2. Memory: peak RSS (main process + its two decoding workers, fresh process each, as bench_score.py measures it)
   of segment-scoring a 10-minute vs a ``--hours`` long clip, both 64x48 at 2 fps to keep generation short; then the
   same two clips with ``decode.sampling=fps decode.fps=1`` (a row per second, 600 vs 7,200 rows).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from coca_video.config import DecodeConfig, ModelConfig
from coca_video.tasks.score import ScoreConfig, run

SEGMENT_SECONDS = 10


def frame_at(t: int, height: int, width: int) -> np.ndarray:
    """Frame ``t`` of the generated content: a gradient, a bar moving a step per frame, and a block whose colour
    changes every 100 frames (so segments differ)."""
    frame = np.broadcast_to(np.linspace(0, 160, width, dtype=np.uint8)[None, :, None], (height, width, 3)).copy()
    frame[:, (t * 2) % width] = 255
    frame[: height // 3, : width // 3] = (t // 100 * 53 % 256, t // 100 * 101 % 256, 90)
    return frame


def encode(path: Path, first: int, count: int, fps: int, height: int, width: int) -> Path:
    """Frames ``first .. first + count - 1`` of the content as an H.264 file (x264 defaults, ultrafast)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for t in range(first, first + count):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame_at(t, height, width), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def score_seconds(videos: Path, out: Path, model: str, frames: int, segment_seconds: float) -> float:
    """Seconds ``score`` spends on ``videos`` after loading the model."""
    cfg = ScoreConfig(videos=str(videos), out=str(out), segment_seconds=segment_seconds, model=ModelConfig(model),
                      decode=DecodeConfig(frames, workers=2))
    return run(cfg)["seconds"]


def speed(folder: Path, model: str, frames: int) -> None:
    fps, height, width, minutes = 10, 64, 96, 10
    long_clip = encode(folder / "long.mp4", 0, minutes * 60 * fps, fps, height, width)
    pieces = folder / "pieces"
    pieces.mkdir()
    per_file = SEGMENT_SECONDS * fps
    for k in range(minutes * 60 // SEGMENT_SECONDS):
        encode(pieces / f"piece{k:03d}.mp4", k * per_file, per_file, fps, height, width)
    segmented = score_seconds(long_clip, folder / "segmented.parquet", model, frames, SEGMENT_SECONDS)
    separate = score_seconds(pieces, folder / "separate.parquet", model, frames, 0)
    print(f"speed, {minutes} min {width}x{height} at {fps} fps, {frames} frames per 10 s, model {model}:")
    print(f"  one file, segment_seconds=10  {segmented / minutes:6.2f} s per minute of video")
    print(f"  60 separate 10 s files        {separate / minutes:6.2f} s per minute of video")
    print(f"  ratio segmented / separate    {segmented / separate:6.2f}")


def peak_memory_mb(video: Path, out: Path, model: str, frames: int, rows: list[str]) -> float:
    """Peak RSS of a fresh `coca-video score` process (model loading included; ``rows``: the overrides that make its
    rows) plus its two decoding workers at their peak."""
    code = ("import resource, sys; from coca_video.cli import main; "
            "main(['score', sys.argv[1], '--out', sys.argv[2], '--model', sys.argv[3], "
            "f'decode.num_frames={sys.argv[4]}', 'decode.workers=2', *sys.argv[5:]]); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "
            "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)")
    result = subprocess.run([sys.executable, "-c", code, str(video), str(out), model, str(frames), *rows],
                            capture_output=True, text=True, check=True)
    main_mb, worker_mb = map(float, result.stdout.strip().splitlines()[-1].split())
    return main_mb + 2 * worker_mb


def memory(folder: Path, model: str, frames: int, hours: float) -> None:
    fps, height, width = 2, 48, 64
    short = encode(folder / "ten_minutes.mp4", 0, 600 * fps, fps, height, width)
    long = encode(folder / "long.mp4", 0, int(hours * 3600) * fps, fps, height, width)
    for name, rows in [(f"segment_seconds={SEGMENT_SECONDS}", [f"segment_seconds={SEGMENT_SECONDS}"]),
                       ("sampling=fps, 1 per second", ["decode.sampling=fps", "decode.fps=1"])]:
        mem_short = peak_memory_mb(short, folder / f"short-{len(rows)}.parquet", model, frames, rows)
        mem_long = peak_memory_mb(long, folder / f"long-{len(rows)}.parquet", model, frames, rows)
        print(f"peak memory (main + 2 workers), {name}, {width}x{height} at {fps} fps: 10 min {mem_short:.0f} MB, "
              f"{hours:g} h {mem_long:.0f} MB, ratio {mem_long / mem_short:.2f}x (goal: within 1.20x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="default")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--hours", type=float, default=2.0, help="length of the long clip of the memory comparison")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        speed(Path(tmp), args.model, args.frames)
    with tempfile.TemporaryDirectory() as tmp:
        memory(Path(tmp), args.model, args.frames, args.hours)


if __name__ == "__main__":
    main()
