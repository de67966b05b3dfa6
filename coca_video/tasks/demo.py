"""The README's demo, offline in well under a minute: generate a folder of synthetic videos (and one corrupt file),
score it with the built-in default model (zero-shot colour+shape labels, captions, embeddings, HTML report), then
compare the labels with the scenes' truth and run a text search over the embeddings."""

from __future__ import annotations

import os
from pathlib import Path

from ..data.synthetic import COLOURS, SHAPES, SyntheticVideos
from ..video import write_video
from ..config import CaptionConfig, DecodeConfig
from ..search import search
from .score import ScoreConfig, run


def write_demo_videos(folder: Path, count: int, size: int = 96, num_frames: int = 24) -> dict[str, str]:
    """``count`` synthetic mp4 clips plus one corrupt file; returns path -> true "colour shape" of the main object."""
    folder.mkdir(parents=True, exist_ok=True)
    clips = SyntheticVideos(count, size=size, num_frames=num_frames, seed=7, split="test", p_reference=0.0)
    truth = {}
    for index in range(count):
        path = folder / f"clip_{index:03d}.mp4"
        if not path.exists():
            frames, _, _ = clips[index]
            write_video(path, frames, fps=12)
        scene = clips.scene(index)
        truth[str(path)] = f"{scene.main.colour} {scene.main.shape}"
    (folder / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this file was cut short")
    return truth


def run_demo(output: Path, count: int = 24) -> None:
    """Generate, score, check, search; print what happened and where the results are."""
    output = Path(os.path.abspath(output))  # score keys its rows by absolute paths
    truth = write_demo_videos(output / "videos", count)
    labels = output / "labels.txt"
    labels.write_text("\n".join(f"{colour} {shape}" for colour in COLOURS for shape in SHAPES) + "\n")
    cfg = ScoreConfig(videos=str(output / "videos"), out=str(output / "scores.csv"), labels=str(labels),
                      top_k=3, caption=CaptionConfig(), report=str(output / "report.html"),
                      decode=DecodeConfig(num_frames=8, workers=2))
    print(f"scoring {count + 1} videos in {cfg.videos} with the built-in default model ...")
    summary = run(cfg)
    import pandas as pd

    scores = pd.read_csv(cfg.out)
    ok = scores[scores.status == "ok"]
    hits = sum(truth.get(row.path) == row.top1_label for row in ok.itertuples())
    print(f"\n{'video':<16} {'truth':<16} {'top-1 label':<16} {'p':>5}  caption")
    for row in ok.head(8).itertuples():
        print(f"{Path(row.path).name:<16} {truth[row.path]:<16} {row.top1_label:<16} {row.top1_score:5.2f}  "
              f"{row.caption}")
    for row in scores[scores.status != "ok"].itertuples():
        print(f"{Path(row.path).name:<16} error: {row.error}")
    print(f"\nzero-shot colour+shape top-1: {hits}/{len(ok)} = {100 * hits / max(len(ok), 1):.0f}% "
          f"(chance {100 / (len(COLOURS) * len(SHAPES)):.1f}%); {summary['seconds']} s")
    query = with_article(next(iter(truth.values())))
    print(f"\nsearch for '{query}':")
    for hit in search(summary["embeddings"], query, k=3):
        print(f"  {hit.score:+.3f}  {Path(hit.path).name}  ({truth[hit.path]})")
    print(f"\nresults: {cfg.out}, {summary['embeddings']}, {cfg.report}")


def with_article(noun_phrase: str) -> str:
    """``an orange triangle``, ``a red square``: the indefinite article by the first letter (the synthetic world's
    colour and shape words have no silent h or sounded-out vowels)."""
    return f"{'an' if noun_phrase[:1].lower() in 'aeiou' else 'a'} {noun_phrase}"
