"""The synthetic video question-answering table (docs/videoqa.md): accuracy per question type of the built-in
default model answering questions about synthetic clips, zero-shot (answers ranked by the decoder's likelihood),
trained without temporal embeddings, and trained with them.

    python pipelines/videoqa.py [--output runs/videoqa_synthetic] [--train-videos 150] [--test-videos 60]
        [--config configs/videoqa/synthetic.yaml] [key=value ...]

Writes the question set in MSRVTT-QA's layout (:func:`coca_video.data.synthetic.write_qa_format`: colour, shape,
direction of motion, colour at the start and at the end of colour-change clips; train and test seeds never
overlap), runs ``videoqa`` three times with the config (plus the overrides; the runs share one feature cache) and
prints a markdown table with each run's wall-clock time.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from coca_video.config import load_config
from coca_video.data.synthetic import QA_TYPES, write_qa_format
from coca_video.tasks import videoqa

RUNS = {"trained, temporal embedding": ["temporal_embedding=true"], "trained, no temporal embedding": [],
        "zero-shot ranking": ["mode=zeroshot"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="runs/videoqa_synthetic")
    parser.add_argument("--train-videos", type=int, default=150)
    parser.add_argument("--test-videos", type=int, default=60)
    parser.add_argument("--config", default="configs/videoqa/synthetic.yaml")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    output = Path(args.output)
    base = load_config(videoqa.VideoQAConfig, args.config, ["source.qa_dir=.", *args.overrides])
    qa_dir, videos = write_qa_format(output / "data", args.train_videos, args.test_videos,
                                     num_frames=base.decode.num_frames)
    lines = [f"| run | {' | '.join(QA_TYPES)} | all | minutes |", "|---|" + "---|" * (len(QA_TYPES) + 2)]
    for name, extra in RUNS.items():
        folder = output / name.replace(" ", "_").replace(",", "")
        cfg = load_config(videoqa.VideoQAConfig, args.config, [
            f"source.qa_dir={qa_dir}", f"source.videos={videos}", f"output_dir={folder}",
            f"cache_dir={output / 'feature_cache'}", *extra, *args.overrides])
        started = time.time()
        result = videoqa.run(cfg)
        minutes = (time.time() - started) / 60
        cells = " | ".join(f"{result['per_type'].get(kind, float('nan')):.1f}" for kind in QA_TYPES)
        lines.append(f"| {name} | {cells} | {result['accuracy']:.1f} | {minutes:.1f} |")
        print("\n".join(lines), flush=True)
    print(f"\n{args.train_videos} training clips ({args.train_videos * 3} questions), {args.test_videos} test clips "
          f"({args.test_videos * 3} questions), {base.decode.num_frames} frames, model {base.model.name}")


if __name__ == "__main__":
    main()
