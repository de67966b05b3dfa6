"""Tokenizer throughput: ours vs open_clip's SimpleTokenizer on the same 10,000 captions, measured side by side.

    python benchmarks/bench_tokenizer.py [--captions 10000]

Two corpora of random captions over a caption vocabulary: plain English (printable ASCII, like most caption
datasets: ours skips ftfy there, which is exact because ftfy and html.unescape leave such text unchanged) and
"unicode" (every caption carries accents, emoji, CJK or HTML entities: both tokenizers must run ftfy, which then
dominates). Ids are checked equal before timing; both tokenizers are warmed on the corpus first.
"""

import argparse
import random
import time

import torch
from open_clip.tokenizer import SimpleTokenizer

from coca_video.tokenizer import ClipBpeTokenizer

WORDS = ("a the small big red green blue yellow purple orange circle square triangle star moving left right up down "
         "above below next to on grass sky street kitchen person dog cat playing guitar riding bike cooking").split()
EXTRA = ["café au lait &amp; croissant", "naïve “quoted” text", "日本語 caption", "emoji 🎬 clip", "Fish &lt;b&gt;"]


def captions(n: int, unicode: bool, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 25))) for _ in range(n)]
    return [text + " " + rng.choice(EXTRA) for text in texts] if unicode else texts


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--captions", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    ours, reference = ClipBpeTokenizer(context_length=76), SimpleTokenizer(context_length=76)
    for corpus in ("english", "unicode"):
        texts = captions(args.captions, unicode=corpus == "unicode")
        assert torch.equal(ours(texts), reference(texts)), "token ids differ"
        t_ours = best_of(lambda: ours(texts), args.repeats)
        t_ref = best_of(lambda: reference(texts), args.repeats)
        print(f"{corpus:8s} {args.captions} captions  open_clip {t_ref:.3f}s  ours {t_ours:.3f}s  "
              f"ratio {t_ref / t_ours:.1f}x")


if __name__ == "__main__":
    main()
