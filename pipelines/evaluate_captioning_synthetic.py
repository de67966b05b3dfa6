"""The README's caption-finetuning table: the default model's captions of held-out colour-change clips ("a small
red square that turns blue") before and after caption finetuning on a training split of such clips.

    python pipelines/evaluate_captioning_synthetic.py [--output runs/captioning_synthetic] [--train-videos 200]
        [--test-videos 100] [--config configs/captioning/synthetic_finetune.yaml] [key=value ...]

Writes both splits (train and test seeds of the synthetic world never overlap), runs ``captioning`` with the default
model (middle frame, the source it was trained for, and all frames), ``finetune-captions`` with the config (plus
the key=value overrides) twice, without and with ``temporal_embedding`` (the same data, steps and seed; with the
middle frame only without), and ``captioning`` with each finetuned model, the same frames and source. Prints a markdown
table: BLEU-4, METEOR (when Java is there), ROUGE-L, CIDEr-D, the share of captions that name both colours of their
clip (and in the right order: the first before "turns", the second after), and how many distinct captions there are.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from coca_video.config import load_config
from coca_video.data.synthetic import ColourChangeClips, write_colour_change_set
from coca_video.tasks import captioning, finetune_captions


def colour_shares(predictions_csv: Path, clips: ColourChangeClips) -> tuple[float, float]:
    """Percent of the predictions naming the clip's first colour and the colour it turns (clip i: test{i:05d}),
    and percent naming them in that order (the first before "turns", the second after it)."""
    with predictions_csv.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    named = ordered = 0
    for row in rows:
        scene = clips.scene(int(Path(row["video"]).stem[len(clips.split):]))
        words = row["caption"].lower().split()
        named += scene.main.colour in words and scene.turns in words
        if "turns" in words:
            turn = words.index("turns")
            ordered += scene.main.colour in words[:turn] and scene.turns in words[turn + 1:]
    return 100 * named / len(rows), 100 * ordered / len(rows)


def caption_row(name: str, out: Path, clips: ColourChangeClips) -> str:
    metrics = json.loads(out.read_text())
    predictions = out.with_name(out.stem + "_predictions.csv")
    with predictions.open(encoding="utf-8") as handle:
        distinct = len({row["caption"] for row in csv.DictReader(handle)})
    meteor = f"{metrics['meteor']:.1f}" if "meteor" in metrics else "n/a (no Java)"
    named, ordered = colour_shares(predictions, clips)
    return (f"| {name} | {metrics['bleu_4']:.1f} | {meteor} | {metrics['rouge_l']:.1f} | {metrics['cider']:.1f} | "
            f"{named:.0f}% | {ordered:.0f}% | {distinct} of {metrics['protocol']['videos']} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=Path("runs/captioning_synthetic"))
    parser.add_argument("--train-videos", type=int, default=200)
    parser.add_argument("--test-videos", type=int, default=100)
    parser.add_argument("--config", default="configs/captioning/synthetic_finetune.yaml")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the finetuning config")
    args = parser.parse_args()
    def finetune_config(name: str, temporal: bool) -> finetune_captions.FinetuneCaptionsConfig:
        return load_config(finetune_captions.FinetuneCaptionsConfig, args.config, [
            f"source.captions={args.output / 'train' / 'captions.csv'}", f"output_dir={args.output / name}",
            f"val.captions={args.output / 'test' / 'captions.csv'}",  # validate on the held-out clips: train on all
            *args.overrides, f"temporal_embedding={str(temporal).lower()}"])

    finetune_cfg = finetune_config("finetune", False)
    frames, source = finetune_cfg.decode.num_frames, finetune_cfg.caption.source
    write_colour_change_set(args.output / "train", args.train_videos, "train", num_frames=frames)
    test_csv = write_colour_change_set(args.output / "test", args.test_videos, "test", num_frames=frames)
    clips = ColourChangeClips(args.test_videos, num_frames=frames, split="test")

    def caption_run(name: str, model: str, caption_source: str) -> Path:
        out = args.output / name / "metrics.json"
        captioning.run(load_config(captioning.CaptioningConfig, None, [
            f"source.captions={test_csv}", f"out={out}", f"model.name={model}", f"caption.source={caption_source}",
            f"decode.num_frames={frames}"]))
        return out

    rows = [("default model, zero-shot, middle frame", caption_run("zero_shot_middle", "default", "middle_frame")),
            ("default model, zero-shot, all frames", caption_run("zero_shot_all", "default", "all_frames"))]
    finetuned = f"caption-finetuned ({args.train_videos} clips), {source.replace('_', ' ')}"
    finetune_captions.run(finetune_cfg)
    rows.append((finetuned, caption_run("finetuned", str(args.output / "finetune" / "model"), source)))
    if source == "all_frames":
        finetune_captions.run(finetune_config("finetune_temporal", True))
        rows.append((f"{finetuned}, temporal embedding",
                     caption_run("finetuned_temporal", str(args.output / "finetune_temporal" / "model"), source)))
    print(f"\n{args.test_videos} held-out colour-change clips, {frames} frames, beam search (6 beams):\n")
    print("| model | BLEU-4 | METEOR | ROUGE-L | CIDEr | both colours named | in order | distinct captions |")
    print("|---|---|---|---|---|---|---|---|")
    for name, out in rows:
        print(caption_row(name, out, clips))


if __name__ == "__main__":
    main()
