"""Videos/s of `coca-video score` vs a naive loop vs the encoder alone, same folder, same model, one run; then the
peak memory of scoring 1,000 videos vs 10 (fresh processes), which must not grow with the folder.

    python benchmarks/bench_score.py [--videos 160] [--model default] [--frames 16] [--memory-videos 1000]
    python benchmarks/bench_score.py --threads 1 --workers 1 --memory-videos 0   # a core for the model, one to decode
    python benchmarks/bench_score.py --model coca_ViT-B-32 --precisions fp32,bf16,int8 --videos 64 --memory-videos 0

Two folders: small clips (128 px, 48 frames: decoding is cheap next to the model) and Kinetics-like ones (320 px,
5 s at 25 fps with one keyframe: decoding costs about as much as encoding, as with real clips).

- naive: for each video, decode its frames, preprocess, encode; one video at a time, one process;
- score: the real command path (DataLoader with 2 decoding workers, batches, parquet parts, merge);
- encoder only: the same frames already decoded and preprocessed in memory, encoded in the same batches; the
  ceiling the pipeline approaches when decoding is fully hidden behind the model.

All three run per ``--precisions`` entry (``model.precision``: the same architecture in fp32, bf16 or int8). score and
encoder only take turns for ``--rounds`` rounds and each round's ratio compares the two measured back to back: on a
shared machine the encoder's own rate drifts by 5-10% from minute to minute (another tenant, clocks), more than the
difference being measured, so one reading of each says little; the median of the rounds' ratios is printed with its
range.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from coca_video import create_model, image_transform
from coca_video.data.synthetic import SyntheticVideos
from coca_video.config import DecodeConfig, ModelConfig
from coca_video.tasks.score import ScoreConfig, run
from coca_video.video import VideoReader, sample_indices, write_video


def make_folder(folder: Path, count: int, size: int, num_frames: int) -> list[Path]:
    clips = SyntheticVideos(count, size=size, num_frames=num_frames, seed=0, split="test")
    return [write_video(folder / f"clip{i:04d}.mp4", clips[i][0], fps=25) for i in range(count)]


@torch.no_grad()
def naive(paths: list[Path], model, frames: int) -> float:
    transform = image_transform(model)
    start = time.perf_counter()
    for path in paths:
        reader = VideoReader(path)
        pixels = transform.frames(reader.get_frames(sample_indices(reader.num_frames, frames)))
        model.encode_video(pixels[None])
    return len(paths) / (time.perf_counter() - start)


@torch.no_grad()
def encoder_only(paths: list[Path], model, frames: int, batch_size: int) -> float:
    transform = image_transform(model)
    clips = []
    for path in paths:
        reader = VideoReader(path, short_side=transform.image_size)
        clips.append(transform.frames(reader.get_frames(sample_indices(reader.num_frames, frames))))
    clips = torch.stack(clips)
    start = time.perf_counter()
    for i in range(0, len(clips), batch_size):
        model.encode_video(clips[i:i + batch_size])
    return len(paths) / (time.perf_counter() - start)


def peak_memory_mb(folder: Path, out: Path, model: str, frames: int) -> float:
    """Peak RSS of a fresh `coca-video score` process over ``folder`` (model loading included)."""
    import subprocess
    import sys

    code = ("import resource, sys; from coca_video.cli import main; "
            "main(['score', sys.argv[1], '--out', sys.argv[2], '--model', sys.argv[3], "
            "f'decode.num_frames={sys.argv[4]}', 'decode.workers=2']); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "
            "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)")
    result = subprocess.run([sys.executable, "-c", code, str(folder), str(out), model, str(frames)],
                            capture_output=True, text=True, check=True)
    main_mb, worker_mb = map(float, result.stdout.strip().splitlines()[-1].split())
    return main_mb + 2 * worker_mb  # the main process plus its two decoding workers at their peak


def fmt(values: list[float], spec: str = ".2f") -> str:
    return " ".join(format(value, spec) for value in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--videos", type=int, default=160)
    parser.add_argument("--model", default="default")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0, help="torch threads for all three (0: torch's default)")
    parser.add_argument("--workers", type=int, default=2, help="decoding workers of `score`")
    parser.add_argument("--precisions", default="fp32", help="comma-separated model.precision values to compare")
    parser.add_argument("--rounds", type=int, default=3, help="score and encoder only, back to back, this many times")
    parser.add_argument("--folders", default="small,kinetics", help="which folders: small, kinetics or both")
    parser.add_argument("--memory-videos", type=int, default=1000, help="0 skips the memory comparison")
    args = parser.parse_args()
    folders = {"small": ("small clips, 128 px x 48 frames", 128, 48),
               "kinetics": ("Kinetics-like, 320 px x 125 frames", 320, 125)}
    unknown = sorted(set(args.folders.split(",")) - set(folders))
    if unknown:
        parser.error(f"--folders: unknown {', '.join(unknown)} (choose from {', '.join(folders)})")
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    precisions = args.precisions.split(",")
    models = {precision: create_model(args.model, precision=precision).eval() for precision in precisions}
    print(f"{args.videos} videos per folder, {args.frames} frames each, model {args.model}, "
          f"{torch.get_num_threads()} threads, score with {args.workers} decoding workers")
    for name, size, length in (folders[key] for key in args.folders.split(",")):
        print(f"{name}:")
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "videos"
            folder.mkdir()
            paths = make_folder(folder, args.videos, size, num_frames=length)
            for precision, model in models.items():
                naive_rate = naive(paths, model, args.frames)
                score_rates, ceilings = [], []
                for round_ in range(args.rounds):  # score and encoder only back to back, then again
                    cfg = ScoreConfig(videos=str(folder), out=str(Path(tmp) / f"scores_{precision}_{round_}.parquet"),
                                      model=ModelConfig(args.model, precision=precision),
                                      decode=DecodeConfig(args.frames, batch_size=args.batch_size,
                                                          workers=args.workers))
                    summary = run(cfg)
                    score_rates.append(summary["videos"] / summary["seconds"])
                    ceilings.append(encoder_only(paths, model, args.frames, args.batch_size))
                ratios = [100 * score / ceiling for score, ceiling in zip(score_rates, ceilings)]
                score_rate, ceiling = statistics.median(score_rates), statistics.median(ceilings)
                print(f"  {precision:<5} naive loop    {naive_rate:7.2f} videos/s")
                print(f"  {precision:<5} score         {score_rate:7.2f} videos/s   "
                      f"{score_rate / naive_rate:.2f}x naive   (rounds: {fmt(score_rates)})")
                print(f"  {precision:<5} encoder only  {ceiling:7.2f} videos/s   (rounds: {fmt(ceilings)})")
                print(f"  {precision:<5} score / encoder only, per round: {fmt(ratios, '.0f')} %; median "
                      f"{statistics.median(ratios):.0f}%")
    if args.memory_videos:
        with tempfile.TemporaryDirectory() as tmp:
            small, large = Path(tmp) / "small", Path(tmp) / "large"
            small.mkdir()
            large.mkdir()
            make_folder(small, 10, 64, num_frames=16)
            make_folder(large, args.memory_videos, 64, num_frames=16)
            mem_small = peak_memory_mb(small, Path(tmp) / "small.parquet", args.model, args.frames)
            mem_large = peak_memory_mb(large, Path(tmp) / "large.parquet", args.model, args.frames)
        print(f"peak memory (main + 2 workers): 10 videos {mem_small:.0f} MB, {args.memory_videos} videos "
              f"{mem_large:.0f} MB, ratio {mem_large / mem_small:.2f}x")


if __name__ == "__main__":
    main()
