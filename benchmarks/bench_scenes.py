"""Which scene detector ``score segment_by=scenes`` uses: PySceneDetect's content and adaptive detectors (PyAV
backend) against change points of our own per-frame embeddings, on generated videos whose cuts are known.

    PYTHONPATH=. python benchmarks/bench_scenes.py [--size 128] [--seconds 60] [--fps 25]

Four videos of ``--seconds`` each (the synthetic world's scenes, ``--size`` square), two with 11 hard cuts at
irregular frames (``shots_video``: 1.2-9 s shots, every object moving; neighbouring backgrounds at least 40 grey
levels apart in one, any two in the other, some near-equal) and two with none (``gradual_video``: a slow pan with a
2 s cross-dissolve in the middle; whip pans, the camera sweeping two frame widths every 16 frames). For each
detector: cuts found within 2 frames of a true cut (of 11 in each cut video), false cuts (on the cut videos, on the
slow pan, on the whip pans), and CPU seconds of detection per minute of video (decoding included; CPU time, not wall
time, so other work on the machine does not count; all four videos).

The embedding candidate decodes every frame at the model's resolution, embeds it with the model's image encoder
(``--model``, default the built-in one, which knows these scenes) and cuts where the cosine distance between
neighbouring frames exceeds ``--tau`` and is the largest within ``min_scene_seconds``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from coca_video.config import ModelConfig
from coca_video.data.synthetic import gradual_video, shots_video
from coca_video.runtime import load_model
from coca_video.transforms import image_transform
from coca_video.video import write_video
from coca_video.video.scenes import SceneRule, detect_cuts
from coca_video.video.source import open_video

MIN_SCENE_SECONDS = 0.6


def cut_frames(seconds: float, fps: float) -> list[int]:
    """11 irregular cut frames over the video (shots of 1.2 to 9 s)."""
    fractions = np.array([0.02, 0.1, 0.17, 0.3, 0.35, 0.45, 0.6, 0.62, 0.75, 0.85, 0.95])
    gaps = np.diff(np.r_[0, fractions * seconds])
    gaps = np.clip(gaps, 1.2, None)
    return [int(round(t * fps)) for t in np.cumsum(gaps)]


def embedding_cuts(path: Path, model, tau: float, batch: int = 64) -> list[float]:
    """Cut times (seconds) where neighbouring frames' embeddings are farther apart than ``tau`` (cosine distance),
    keeping the largest change within ``MIN_SCENE_SECONDS``."""
    transform = image_transform(model)
    with open_video(path, short_side=transform.image_size) as reader:
        frames = reader.get_frames(np.arange(reader.num_frames))  # (T, H, W, 3) uint8
        fps = reader.fps
    embeddings = []
    with torch.no_grad():
        for start in range(0, len(frames), batch):
            pixels = transform.normalise(transform.crops(torch.as_tensor(frames[start:start + batch]))[0], "cpu")
            embeddings.append(model.encode_image(pixels))  # (b, D), normalised
    e = torch.cat(embeddings)
    distance = (1 - (e[1:] * e[:-1]).sum(-1)).numpy()  # (T-1,) distance[i]: frame i -> i+1
    gap = max(int(round(MIN_SCENE_SECONDS * fps)), 1)
    cuts = []
    for i in np.argsort(-distance):
        if distance[i] <= tau:
            break
        if all(abs(i - c) >= gap for c in cuts):
            cuts.append(int(i))
    return sorted((c + 1) / fps for c in cuts)


def score(found: list[float], truth: list[int], fps: float) -> tuple[int, int]:
    """(true cuts found within 2 frames, false cuts) for one video."""
    frames = [t * fps for t in found]
    hit = {j for j, cut in enumerate(truth) if any(abs(f - cut) <= 2 for f in frames)}
    false = sum(not any(abs(f - cut) <= 2 for cut in truth) for f in frames)
    return len(hit), false


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--fps", type=float, default=25)
    parser.add_argument("--model", default="default")
    parser.add_argument("--tau", type=float, default=0.1)
    args = parser.parse_args()
    torch.set_num_threads(1)  # one core each, as a decoding worker has
    frames = int(args.seconds * args.fps)
    truth = cut_frames(args.seconds, args.fps)
    folder = Path(tempfile.mkdtemp())
    videos = {"shots": shots_video(truth, frames, args.size, seed=1),
              "low contrast": shots_video(truth, frames, args.size, seed=2, contrast=0),
              "slow pan": gradual_video(frames, args.size, seed=1, dissolve_frames=int(2 * args.fps)),
              "whip pans": gradual_video(frames, args.size, seed=2, dissolve_frames=1, sweeps=frames // 16)}
    paths = {name: write_video(folder / f"{name.replace(' ', '_')}.mp4", v, fps=args.fps) for name, v in videos.items()}
    model = load_model(ModelConfig(name=args.model, precision="fp32"))
    detectors = {
        "content (threshold 27)": lambda p: detect_cuts(p, SceneRule("content", 27.0, MIN_SCENE_SECONDS))[1],
        "adaptive (threshold 3)": lambda p: detect_cuts(p, SceneRule("adaptive", 3.0, MIN_SCENE_SECONDS))[1],
        f"embedding change points (tau {args.tau})": lambda p: embedding_cuts(p, model, args.tau),
    }
    print(f"{args.seconds:g} s at {args.fps:g} fps, {args.size}x{args.size}, {len(truth)} cuts; torch on one thread")
    print("| detector | cuts found within 2 frames | ... with low-contrast cuts | false cuts (cut videos) "
          "| false cuts (slow pan + dissolve) | false cuts (whip pans) | CPU seconds per minute of video |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, detect in detectors.items():
        started = time.process_time()
        found = {video: detect(path) for video, path in paths.items()}
        per_minute = (time.process_time() - started) / (len(paths) * args.seconds / 60)
        (hits, false), (hits_low, false_low) = score(found["shots"], truth, args.fps), \
            score(found["low contrast"], truth, args.fps)
        print(f"| {name} | {hits} of {len(truth)} | {hits_low} of {len(truth)} | {false + false_low} "
              f"| {len(found['slow pan'])} | {len(found['whip pans'])} | {per_minute:.2f} |")

if __name__ == "__main__":
    main()
