"""What a model trained on the synthetic world has learned, measured on held-out (test split) images.

    python pipelines/evaluate_synthetic.py [--model default] [--images 1000]

Prints zero-shot colour and shape accuracy (prompt ensembles in caption language), image-text retrieval recall
on held-out image-caption pairs (one caption per image, so chance R@1 is 1/N), and how many beam-search captions
name the right colour and shape of the main object. The README's figures for the default model come from here.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from coca_video import create_model, get_tokenizer, image_transform
from coca_video.data.synthetic import SyntheticImageText
from coca_video.metrics import retrieval_metrics_from_embeddings
from coca_video.tasks.pretrain import EvalConfig, evaluate_zero_shot


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="default", help="model name or checkpoint folder")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--captions", type=int, default=200, help="images to caption (beam search)")
    args = parser.parse_args()
    torch.manual_seed(0)
    model, tokenizer = create_model(args.model).eval(), get_tokenizer(args.model)
    transform = image_transform(model)
    size = model.cfg.vision.image_size

    zero_shot = evaluate_zero_shot(model, tokenizer, EvalConfig(num_images=args.images))
    for name, accuracy in zero_shot.items():
        print(f"{name:<24} {accuracy:5.1f}%  (chance {100 / (6 if 'colour' in name else 4):.1f}%)")

    pairs = SyntheticImageText(args.images, size=size, seed=12345, split="test")
    images, captions = zip(*(pairs[i] for i in range(len(pairs))))
    pixels = transform.frames(np.stack(images))
    image_embeddings = torch.cat([model.encode_image(pixels[i:i + 256]) for i in range(0, len(pixels), 256)])
    text_embeddings = torch.cat([model.encode_text(tokenizer(list(captions[i:i + 256])))
                                 for i in range(0, len(captions), 256)])
    metrics = retrieval_metrics_from_embeddings(text_embeddings, image_embeddings, torch.arange(len(captions)))
    for direction, name in (("t2v", "text->image"), ("v2t", "image->text")):
        m = metrics[direction]
        print(f"retrieval {name:<14} R@1 {m['R1']:5.1f}  R@5 {m['R5']:5.1f}  R@10 {m['R10']:5.1f}  "
              f"(chance R@1 {100 / len(captions):.2f}, {len(captions)} held-out pairs)")

    count = min(args.captions, len(pairs))
    generated = tokenizer.batch_decode(model.generate(pixels[:count], method="beam"))
    right = [pairs.scene(i).main for i in range(count)]
    names_both = sum(f"{t.colour} {t.shape}" in text for t, text in zip(right, generated))
    print(f"captions naming the main object's colour and shape: {names_both}/{count} = {100 * names_both / count:.1f}%")
    for i in range(3):
        print(f"  truth: {captions[i]!r}\n  model: {generated[i]!r}")


if __name__ == "__main__":
    main()
