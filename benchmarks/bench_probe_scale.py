"""Does the frozen probe scale flat? The same synthetic run at two sizes, each in a fresh process: peak memory
(main process + decoding workers), the feature cache's size on disk against what ``plan_cache`` planned, and the
seconds per video of filling the cache and of one training epoch.

    python benchmarks/bench_probe_scale.py [--small 500] [--large 5000] [--frames 4]

Clips are the synthetic world's (64 px, colour task), written once per size into a temporary folder; the default
model; one epoch; evaluation on 20 clips.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

RUN = r"""
import json, resource, sys, time
from pathlib import Path
from coca_video.config import load_config
from coca_video.data.feature_cache import plan_cache
from coca_video.tasks import probe

folder, videos, frames = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
cfg = load_config(probe.ProbeConfig, None, [
    "data.format=synthetic", f"data.video_root={folder / 'videos'}", "data.synthetic.task=colour",
    f"data.synthetic.train_videos={videos}", "data.synthetic.val_videos=20", f"decode.num_frames={frames}",
    "decode.workers=2", f"output_dir={folder / 'run'}", "train.epochs=1", "train.batch_size=64", "optim.warmup_steps=1"])
probe.load_sets(cfg)  # write the clips before timing
start = time.perf_counter()
probe.run(cfg)
seconds = time.perf_counter() - start
cache = sorted((folder / "run" / "feature_cache").glob("*.tokens.npy"), key=lambda p: p.stat().st_size)[-1]
from coca_video import create_model
model = create_model("default")
plan = plan_cache(videos, 1, frames, model.image_encoder.num_tokens, model.cfg.vision.width)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 + 2 * resource.getrusage(
    resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "peak_mb": peak, "cache_bytes": cache.stat().st_size,
                  "planned_bytes": plan.total_bytes}))
"""


def measure(videos: int, frames: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        result = subprocess.run([sys.executable, "-c", RUN, tmp, str(videos), str(frames)], capture_output=True,
                                text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=500)
    parser.add_argument("--large", type=int, default=5000)
    parser.add_argument("--frames", type=int, default=4)
    args = parser.parse_args()
    small, large = measure(args.small, args.frames), measure(args.large, args.frames)
    print(f"frozen probe, default model, {args.frames} frames, one epoch; fresh process per size")
    for name, videos, m in (("small", args.small, small), ("large", args.large, large)):
        header = 128  # the .npy header: the plan counts values only
        print(f"  {videos:6d} videos: peak {m['peak_mb']:7.0f} MB, {1000 * m['seconds'] / videos:6.1f} ms per video, "
              f"cache {m['cache_bytes']:,} bytes = plan {m['planned_bytes']:,} + {m['cache_bytes'] - m['planned_bytes']} "
              f"header bytes{'' if m['cache_bytes'] - m['planned_bytes'] <= header else ' (MORE THAN A HEADER)'}")
    print(f"  ratios large/small: peak memory {large['peak_mb'] / small['peak_mb']:.2f}x, time per video "
          f"{(large['seconds'] / args.large) / (small['seconds'] / args.small):.2f}x")


if __name__ == "__main__":
    main()
