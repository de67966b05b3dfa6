"""Retrieval metrics for 60,000 captions x 3,000 videos: our chunked ranks vs a naive full-matrix argsort.

    python benchmarks/bench_retrieval_metrics.py [--captions 60000] [--videos 3000] [--dim 512]

Times the default convention (t2v, and v2t="videos": CLIP4Clip's rank among videos, each video scored by its best
caption). The naive side is CLIP4Clip's own recipe: the full matrix, padded to (videos, max captions, videos) for the
per-video max, a full argsort per direction. Each method runs in a fresh process (so peak memory is its own); both
must give the same R@1/5/10, MdR, MnR on the same random embeddings (20 captions per video, MSR-VTT Full's shape).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CODE = r"""
import json, resource, sys, time, torch
from coca_video.metrics import retrieval_metrics_from_embeddings
method, n_text, n_video, dim = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
g = torch.Generator().manual_seed(0)
video = torch.nn.functional.normalize(torch.randn(n_video, dim, generator=g), dim=-1)
caption_video = torch.arange(n_text) % n_video
text = torch.nn.functional.normalize(video[caption_video] + 1.5 * torch.randn(n_text, dim, generator=g), dim=-1)
peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
before = peak()
start = time.perf_counter()
if method == "ours":
    m = retrieval_metrics_from_embeddings(text, video, caption_video)
    out = {d: [m[d][k] for k in ("R1", "R5", "R10", "MdR", "MnR")] for d in ("t2v", "v2t")}
else:  # naive: the full matrix, a full argsort per direction
    sim = text @ video.T
    order = sim.argsort(dim=1, descending=True)
    t2v = (order == caption_video[:, None]).nonzero()[:, 1].float()
    by_video = caption_video.argsort(stable=True)             # (C,) captions grouped by video
    counts = torch.bincount(caption_video, minlength=n_video)
    slot = torch.arange(n_text) - (counts.cumsum(0) - counts)[caption_video[by_video]]
    padded = torch.full((n_video, int(counts.max()), n_video), float("-inf"))  # (V, max captions, V)
    padded[caption_video[by_video], slot] = sim[by_video]
    video_sim = padded.amax(dim=1).T                           # (V, V): [video, other video's best caption]
    order_v = video_sim.argsort(dim=1, descending=True)
    v2t = (order_v == torch.arange(n_video)[:, None]).nonzero()[:, 1].float()
    def summary(r):
        recalls = [100 * (r < k).float().mean().item() for k in (1, 5, 10)]
        return recalls + [r.quantile(0.5).item() + 1, r.mean().item() + 1]
    out = {"t2v": summary(t2v), "v2t": summary(v2t)}
print(json.dumps({"seconds": time.perf_counter() - start, "peak_growth_mb": peak() - before, "metrics": out}))
"""


def run(method: str, args) -> dict:
    result = subprocess.run([sys.executable, "-c", CODE, method, str(args.captions), str(args.videos), str(args.dim)],
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--captions", type=int, default=60_000)
    parser.add_argument("--videos", type=int, default=3_000)
    parser.add_argument("--dim", type=int, default=512)
    args = parser.parse_args()
    ours, naive = run("ours", args), run("naive", args)
    for direction in ("t2v", "v2t"):
        a, b = ours["metrics"][direction], naive["metrics"][direction]
        assert all(abs(x - y) < 1e-6 * max(1, abs(y)) for x, y in zip(a, b)), (direction, a, b)
    print(f"{args.captions} x {args.videos}: metrics agree (t2v R@1 {ours['metrics']['t2v'][0]:.2f})")
    print("peak memory is the growth beyond the peak reached while creating the embeddings")
    print(f"naive argsort  {naive['seconds']:6.2f} s   peak +{naive['peak_growth_mb']:6.0f} MB")
    print(f"ours (chunked) {ours['seconds']:6.2f} s   peak +{ours['peak_growth_mb']:6.0f} MB   "
          f"{naive['seconds'] / ours['seconds']:.1f}x faster")


if __name__ == "__main__":
    main()
