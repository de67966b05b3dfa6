"""Projected feature-cache sizes of a frozen probe at dataset scale, from the same :func:`plan_cache` the probe
checks before it encodes (README table): ``python pipelines/plan_probe_cache.py [--frames 16]``.

Train: 1 view per video; val: 12 views (4 temporal x 3 crops). Video counts from the datasets' papers (current
downloads are smaller, as videos vanish from the web)."""

from __future__ import annotations

import argparse

from coca_video.data.feature_cache import plan_cache
from coca_video.model import get_model_config

DATASETS = {"K400": (240_000, 20_000), "K600": (392_000, 30_000), "K700": (545_000, 35_000),
            "MiT": (802_000, 33_900)}  # (train, val) videos
MODELS = ("coca_ViT-B-32", "coca_ViT-L-14")
FORMATS = ("fp16", "int8", "pooled")


def tokens_per_frame(name: str) -> int:
    """Class token + patch grid of ``name`` at its own image size."""
    vision = get_model_config(name).vision
    return 1 + (vision.image_size // vision.patch_size) ** 2


def table(frames: int, train_views: int = 1, val_views: int = 12) -> str:
    """A Markdown table: one row per (dataset, model), train + val cache size per format."""
    lines = [f"| dataset | model | tokens/frame | {' | '.join(f'{f} train + val' for f in FORMATS)} |",
             "|---|---|---|" + "---|" * len(FORMATS)]
    for dataset, (train, val) in DATASETS.items():
        for name in MODELS:
            vision, n = get_model_config(name).vision, tokens_per_frame(name)
            cells = []
            for fmt in FORMATS:
                sizes = [plan_cache(videos, views, frames, n, vision.width, fmt).total_bytes
                         for videos, views in ((train, train_views), (val, val_views))]
                cells.append(f"{sizes[0] / 1e9:,.0f} + {sizes[1] / 1e9:,.0f} GB")
            lines.append(f"| {dataset} | {name} | {n} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=16)
    print(table(parser.parse_args().frames))


if __name__ == "__main__":
    main()
