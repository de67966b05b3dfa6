"""Zero-shot video representations compared on the synthetic world: the CoCa paper's mean of frame embeddings vs
VideoCoCa's attentional pooling (the model's own contrastive pooler over all frames' tokens), and captions from the
middle frame vs from all frames. The README's table comes from here.

    python pipelines/evaluate_video_pooling.py [--model default] [--clips 500] [--frames 8]

Measured on held-out clips (test split): zero-shot colour, shape and motion accuracy with prompt ensembles in the
captions' words, text-to-video and video-to-text R@1 against the clips' own captions, and for captions the share
naming the main object's colour and shape, on moving clips and on clips whose object changes colour half way (where
"first"/"second" count captions naming the colour of each half).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from coca_video import create_model, get_tokenizer, image_transform
from coca_video.data.synthetic import COLOURS, SHAPES, SyntheticVideos, label_names
from coca_video.metrics import retrieval_metrics_from_embeddings
from coca_video.zero_shot import class_embeddings

TEMPLATES = {  # prompts in the synthetic captions' own language, ensembled over the other attributes
    "colour": tuple(f"a small {{}} {shape}" for shape in SHAPES),
    "shape": tuple(f"a small {colour} {{}}" for colour in COLOURS),
    "motion": tuple(f"a small {colour} {shape} {{}}" for colour in COLOURS for shape in SHAPES),
}


def encode(model, clips: np.ndarray, pooling: str, batch: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Video embeddings (V, D) and encoder tokens (V, T*N, C) of uint8 clips (V, T, H, W, 3)."""
    transform = image_transform(model)
    embeddings, tokens = [], []
    for start in range(0, len(clips), batch):
        frames = torch.stack([transform.frames(clip) for clip in clips[start:start + batch]])
        encoding = model.encode_video(frames, pooling=pooling)
        embeddings.append(encoding.video_embedding)
        tokens.append(encoding.tokens)
    return torch.cat(embeddings), torch.cat(tokens)


def zero_shot(model, tokenizer, videos: torch.Tensor, clips: SyntheticVideos, task: str) -> float:
    names = label_names(task)
    classes = class_embeddings(model, tokenizer, names, TEMPLATES[task])
    truth = torch.tensor([names.index(attribute(clips, i, task)) for i in range(len(clips))])
    return 100.0 * ((videos @ classes.T).argmax(-1) == truth).float().mean().item()


def attribute(clips: SyntheticVideos, index: int, task: str) -> str:
    scene = clips.scene(index)
    if task == "motion":
        return "staying still" if scene.motion == "still" else f"moving {scene.motion}"
    return getattr(scene.main, task)


def colour_change_clips(clips: SyntheticVideos, count: int) -> tuple[np.ndarray, list[tuple[str, str, str]]]:
    """Clips whose first half is one scene and second half another of the same shape and a different colour."""
    made, truth, used = [], [], set()
    for i in range(len(clips)):
        for j in range(i + 1, len(clips)):
            a, b = clips.scene(i).main, clips.scene(j).main
            if i in used or j in used or a.shape != b.shape or a.colour == b.colour:
                continue
            half = clips.num_frames // 2
            made.append(np.concatenate([clips[i][0][:half], clips[j][0][half:]]))
            truth.append((a.colour, b.colour, a.shape))
            used.update((i, j))
            break
        if len(made) == count:
            break
    return np.stack(made), truth


def captions(model, tokenizer, tokens: torch.Tensor, frames: int, source: str) -> list[str]:
    if source == "middle_frame":
        tokens = tokens.unflatten(1, (frames, -1))[:, frames // 2]
    return tokenizer.batch_decode(model.generate_from_tokens(tokens, method="beam"))


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="default")
    parser.add_argument("--clips", type=int, default=500)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--captioned", type=int, default=100, help="clips to caption per kind")
    args = parser.parse_args()
    torch.manual_seed(0)
    model, tokenizer = create_model(args.model).eval(), get_tokenizer(args.model)
    size = model.cfg.vision.image_size
    clips = SyntheticVideos(args.clips, size=size, num_frames=args.frames, seed=77, split="test")
    frames = np.stack([clips[i][0] for i in range(len(clips))])
    text = model.encode_text(tokenizer([clips.caption(i) for i in range(len(clips))]))
    print(f"{args.clips} held-out clips, {args.frames} frames, model {args.model}")
    print(f"{'pooling':<12} {'colour':>7} {'shape':>7} {'motion':>7} {'T2V R@1':>8} {'V2T R@1':>8}")
    tokens = None
    for pooling in ("mean", "attentional"):
        videos, tokens = encode(model, frames, pooling)
        accuracy = [zero_shot(model, tokenizer, videos, clips, task) for task in ("colour", "shape", "motion")]
        recall = retrieval_metrics_from_embeddings(text, videos, torch.arange(len(clips)))
        print(f"{pooling:<12} {accuracy[0]:6.1f}% {accuracy[1]:6.1f}% {accuracy[2]:6.1f}% "
              f"{recall['t2v']['R1']:7.1f}% {recall['v2t']['R1']:7.1f}%")
    print(f"(chance: colour {100 / len(COLOURS):.1f}%, shape {100 / len(SHAPES):.1f}%, motion 20.0%, "
          f"R@1 {100 / args.clips:.1f}%)")
    n = args.captioned
    changing, change_truth = colour_change_clips(clips, n)
    _, change_tokens = encode(model, changing, "mean")
    print(f"\n{'captions from':<14} {'moving clips: colour+shape':>27} {'colour-change clips: first / second / shape':>45}")
    for source in ("middle_frame", "all_frames"):
        moving = captions(model, tokenizer, tokens[:n], args.frames, source)
        right = sum(f"{clips.scene(i).main.colour} {clips.scene(i).main.shape}" in c for i, c in enumerate(moving))
        changed = captions(model, tokenizer, change_tokens, args.frames, source)
        first = sum(a in c for (a, _, _), c in zip(change_truth, changed))
        second = sum(b in c for (_, b, _), c in zip(change_truth, changed))
        shape = sum(s in c for (_, _, s), c in zip(change_truth, changed))
        print(f"{source:<14} {right:>20}/{n} {first:>27}/{len(changed)} / {second}/{len(changed)} / "
              f"{shape}/{len(changed)}")


if __name__ == "__main__":
    main()
