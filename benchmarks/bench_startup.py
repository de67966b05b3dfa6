"""Start-up of a process that decodes or encodes (a decoding worker, a Ray actor, a torchrun rank, the CLI): CPU
seconds to import what it imports, ours against the same plus timm and torchvision's transforms (what these modules
imported until the ViT trunk and the resizing were written on torch alone), each in fresh interpreters, side by side.

    python benchmarks/bench_startup.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys

OURS = "import coca_video.model, coca_video.data.video, coca_video.engines.ray_engine"
WITH_TIMM = OURS + "; import timm.models.vision_transformer, torchvision.transforms.v2.functional"


def cpu_seconds(code: str) -> float:
    """User + system CPU seconds of a fresh interpreter running ``code``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-c", code], check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    ours, theirs = [], []
    for _ in range(args.rounds):  # interleaved, so a busy moment hits both alike
        ours.append(cpu_seconds(OURS))
        theirs.append(cpu_seconds(WITH_TIMM))
    a, b = statistics.median(ours), statistics.median(theirs)
    print(f"import, CPU seconds (median of {args.rounds}): ours {a:.2f}, with timm + torchvision {b:.2f}; "
          f"ours takes {a / b:.2f}x the time ({b - a:.2f} s less a process)")


if __name__ == "__main__":
    main()
