"""encode_image throughput: coca-video vs open_clip 3.3.0 on the same coca_ViT-B-32 weights, same threads.

Runs fp32 and bf16 autocast on CPU, alternating the two implementations repetition by repetition so both see the
same machine load, and prints images/s and the ratio (ours / open_clip; > 1 means ours is faster).

    python benchmarks/bench_encode_image.py [--batch 16] [--repeats 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path

import torch

import coca_video


def best_time(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import open_clip

    torch.manual_seed(0)
    ref = open_clip.create_model("coca_ViT-B-32").eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "open_clip_pytorch_model.bin"
        torch.save(ref.state_dict(), path)
        ours = coca_video.create_model("coca_ViT-B-32", pretrained=str(path))
    images = torch.randn(args.batch, 3, 224, 224)
    print(f"coca_ViT-B-32 encode_image, batch {args.batch}, {args.threads} threads, best of {args.repeats}")
    for precision in ("fp32", "bf16"):
        autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext())
        with torch.inference_mode(), autocast:
            for model in (ref, ours):  # warm-up
                model.encode_image(images)
            ref_times, our_times = [], []
            for _ in range(args.repeats):
                ref_times += best_time(lambda: ref.encode_image(images), 1)
                our_times += best_time(lambda: ours.encode_image(images), 1)
        ref_ips, our_ips = args.batch / min(ref_times), args.batch / min(our_times)
        print(f"{precision}: ours {our_ips:7.1f} img/s   open_clip {ref_ips:7.1f} img/s   "
              f"ratio {our_ips / ref_ips:.2f}x")


if __name__ == "__main__":
    main()
