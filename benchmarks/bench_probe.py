"""Probe training: an epoch from the feature cache vs an epoch that decodes and encodes (what every epoch costs
without the cache), and finetune epochs with vs without gradient checkpointing. Same data, one run.

    python benchmarks/bench_probe.py [--videos 64] [--frames 8]

The data is a synthetic Kinetics-layout set (mp4 clips + official CSV columns) written to a temporary folder.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

from coca_video.config import load_config
from coca_video.data.video import ClipSampling
from coca_video.model import VideoClassifier, VideoClassifierConfig, create_model
from coca_video.tasks import probe
from coca_video.tasks.probe.features import cached_tokens
from coca_video.tasks.probe.train import finetune_task, frozen_task
from coca_video.training import TrainTask, fit


def config(folder: Path, args, **extra) -> probe.ProbeConfig:
    overrides = {"data.format": "synthetic", "data.video_root": str(folder / "videos"),
                 "data.synthetic.train_videos": args.videos, "data.synthetic.val_videos": 4,
                 "data.synthetic.task": "colour", "decode.num_frames": args.frames, "decode.workers": 2,
                 "output_dir": str(folder / "run"), "train.batch_size": 16, "train.epochs": 3}
    overrides.update(extra)
    return load_config(probe.ProbeConfig, None, [f"{k}={v}" for k, v in overrides.items()])


def epoch_seconds(cfg: probe.ProbeConfig, task: TrainTask) -> float:
    """Seconds of one epoch of ``task`` through the shared loop (optimiser and checkpoint included)."""
    return timed(lambda: fit(task, dataclasses.replace(cfg.train, epochs=1, max_steps=None), cfg.optim,
                             cfg.output_dir, None))


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--videos", type=int, default=64)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--model", default="default")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config(Path(tmp), args, **{"model.name": args.model})
        train_set, _ = probe.load_sets(cfg)  # writes the clips once
        model = create_model(cfg.model.name)
        width = model.cfg.vision.width

        def new_classifier() -> VideoClassifier:
            return VideoClassifier(VideoClassifierConfig(width, len(train_set.classes), num_frames=args.frames))

        filling = timed(lambda: cached_tokens(cfg, model, train_set, ClipSampling(args.frames), "train"))
        task = frozen_task(cfg, model, new_classifier(), train_set)  # finds the cache full
        cached_epoch = min(epoch_seconds(cfg, task) for _ in range(3))
        uncached_epoch = filling + cached_epoch  # decode + encode every clip, then the same training
        print(f"frozen probe, {args.videos} videos x {args.frames} frames, model {args.model}")
        print(f"  epoch without cache (decode + encode + train) {uncached_epoch:7.2f} s")
        print(f"  epoch from the cache                          {cached_epoch:7.3f} s   "
              f"{uncached_epoch / cached_epoch:.0f}x faster")

        for checkpointing in (False, True):
            ft_cfg = config(Path(tmp), args, mode="finetune", **{"model.name": args.model},
                            **{"train.grad_checkpointing": str(checkpointing).lower(), "optim.lr": 1e-5},
                            output_dir=str(Path(tmp) / "ft"))
            ft_model = create_model(ft_cfg.model.name)
            seconds = epoch_seconds(ft_cfg, finetune_task(ft_cfg, ft_model, new_classifier(), train_set))
            print(f"finetune epoch, gradient checkpointing {'on ' if checkpointing else 'off'}: {seconds:6.2f} s "
                  f"({args.videos / seconds:.1f} videos/s)")
        print("(memory with vs without checkpointing: benchmarks/bench_train.py, one fresh process per setting)")


if __name__ == "__main__":
    main()
