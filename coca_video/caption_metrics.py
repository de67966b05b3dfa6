"""Captioning metrics as coco-caption (pycocoevalcap) computes them, in percent as papers print them.

Captions are PTB-tokenized, lower-cased and stripped of punctuation first (:mod:`coca_video.ptb_tokenize`). Then:
  - BLEU-1..4 (Papineni et al.): corpus-level clipped n-gram precisions, geometric mean up to n, brevity penalty
    ``exp(1 - r/c)`` when c < r, where c is the total prediction length and r the sum over videos of the reference
    length closest to the prediction's (``closest``; a tie takes the shorter); coco-caption's smoothing constants
    (1e-15 on the matches, 1e-9 on the counts).
  - ROUGE-L: per video the longest common subsequence with each reference, F-measure with beta 1.2 from the best
    precision and the best recall; the mean over videos.
  - CIDEr-D (coco-caption's ``Cider``): n-grams n = 1..4 weighted by tf-idf, with the document frequencies and
    ``log(number of videos)`` taken from the evaluated references; per n the cosine of the prediction's vector with
    each reference's, the prediction's weights clipped at the reference's, times the Gaussian length penalty
    ``exp(-delta^2 / (2 * 6^2))``; averaged over n and references, times 10; the mean over videos.
  - METEOR 1.5 (``-l en -norm``): the jar pycocoevalcap ships, through Java; left out, with one line saying so,
    when Java or pycocoevalcap is missing.
BLEU, ROUGE-L and CIDEr-D are computed here (pure Python, the same numbers as pycocoevalcap to 1e-9 on the same
tokens: tests/test_caption_metrics.py), so they need neither Java nor pycocoevalcap.
"""

from __future__ import annotations

import math
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np

from .ptb_tokenize import java_problem, ptb_jar, ptb_tokenize

CAPTION_METRIC_KEYS = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider")
ROUGE_BETA = 1.2
CIDER_N, CIDER_SIGMA = 4, 6.0
BLEU_N = 4


@dataclass
class CaptionScores:
    """Corpus metrics (percent), each video's CIDEr-D and ROUGE-L (percent), and how they were computed."""

    metrics: dict[str, float]
    per_video_cider: dict[str, float]
    per_video_rouge_l: dict[str, float]
    tokenizer: str
    meteor: str  # how METEOR was computed, or why it was not
    warnings: list[str] = field(default_factory=list)


def caption_metrics(predictions: dict[str, str], references: dict[str, list[str]]) -> dict[str, float]:
    """BLEU-1..4, METEOR, ROUGE-L and CIDEr-D in percent (CIDEr 73.2, not 0.732), as coco-caption computes them,
    of ``predictions`` (video -> caption) against ``references`` (video -> its reference captions). Without Java
    the PTB tokenizer's Python equal is used and ``meteor`` is left out (one line on stderr says so); see the module
    doc and :func:`caption_scores` (per-video scores, the tokenizer used)."""
    return caption_scores(predictions, references).metrics


def caption_scores(predictions: dict[str, str], references: dict[str, list[str]],
                   use_java: bool | None = None, warn: bool = True) -> CaptionScores:
    """The metrics of :func:`caption_metrics` with each video's CIDEr-D and ROUGE-L and the tokenizer's name.
    ``use_java``: None uses Java when it runs here, False never. ``warn``: print the warnings on stderr too."""
    videos = check_inputs(predictions, references)
    warnings = []
    problem = "pycocoevalcap not installed (pip install 'coca-video[captioning]')" if ptb_jar() is None \
        else java_problem()
    if use_java is False:
        problem = problem or "not asked for"
    elif problem:
        warnings.append(f"{problem}: METEOR left out; BLEU, ROUGE-L and CIDEr-D computed with the Python equal "
                        "of the PTB tokenizer")
    if len(videos) == 1:
        warnings.append("one video: CIDEr-D's IDF is degenerate (log(1) = 0 gives every n-gram weight 0), so CIDEr-D "
                        "is 0 whatever the caption")
    lines = [predictions[v] for v in videos] + [r for v in videos for r in references[v]]
    tokens, tokenizer = ptb_tokenize(lines, use_java=not problem)
    res = {v: tokens[i] for i, v in enumerate(videos)}
    gts, at = {}, len(videos)
    for v in videos:
        gts[v] = tokens[at:at + len(references[v])]
        at += len(references[v])
    bleus = bleu(res, gts)
    rouge = rouge_l(res, gts)
    cider = cider_d(res, gts)
    metrics = {f"bleu_{n}": 100.0 * b for n, b in enumerate(bleus, start=1)}
    meteor_text = f"left out: {problem}" if problem else "METEOR 1.5 (pycocoevalcap's jar, -l en -norm)"
    if not problem:
        metrics["meteor"] = 100.0 * meteor(res, gts)
    metrics["rouge_l"] = 100.0 * float(np.mean(list(rouge.values())))
    metrics["cider"] = 100.0 * float(np.mean(list(cider.values())))
    if warn:
        for line in warnings:
            print(f"warning: {line}", file=sys.stderr)
    return CaptionScores(metrics, {v: 100.0 * s for v, s in cider.items()},
                         {v: 100.0 * s for v, s in rouge.items()}, tokenizer, meteor_text, warnings)


def check_inputs(predictions: dict[str, str], references: dict[str, list[str]]) -> list[str]:
    """The videos, in ``predictions`` order; a ValueError unless both name the same videos, every prediction is a
    string and every video has at least one reference string."""
    if set(predictions) != set(references):
        extra = sorted(set(predictions) ^ set(references), key=str)[:3]
        raise ValueError(f"predictions and references must name the same videos (differ on {extra})")
    if not predictions:
        raise ValueError("no videos to score")
    for video, caption in predictions.items():
        if not isinstance(caption, str):
            raise ValueError(f"{video}: the prediction must be a string, got {type(caption).__name__}")
        refs = references[video]
        if isinstance(refs, str) or not refs or not all(isinstance(r, str) for r in refs):
            raise ValueError(f"{video}: references must be a non-empty list of strings")
    return list(predictions)


def ngrams(words: list[str], n: int) -> Counter:
    """Counts of every k-gram, k = 1..n, of ``words``."""
    return Counter(tuple(words[i:i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1))


def bleu(res: dict[str, str], gts: dict[str, list[str]], n: int = BLEU_N) -> list[float]:
    """Corpus BLEU-1..n (fractions) of tokenized predictions ``res`` against tokenized references ``gts``, with the
    closest reference length and coco-caption's smoothing."""
    small, tiny = 1e-9, 1e-15
    guess, correct = [0] * n, [0] * n
    test_len = ref_len = 0
    for video, hypothesis in res.items():
        words = hypothesis.split()
        max_ref_counts: dict[tuple, int] = {}
        ref_lens = []
        for ref in gts[video]:
            ref_words = ref.split()
            ref_lens.append(len(ref_words))
            for gram, count in ngrams(ref_words, n).items():
                max_ref_counts[gram] = max(max_ref_counts.get(gram, 0), count)
        test_len += len(words)
        ref_len += min((abs(length - len(words)), length) for length in ref_lens)[1]
        for k in range(n):
            guess[k] += max(0, len(words) - k)
        for gram, count in ngrams(words, n).items():
            correct[len(gram) - 1] += min(max_ref_counts.get(gram, 0), count)
    scores, product = [], 1.0
    for k in range(n):
        product *= (correct[k] + tiny) / (guess[k] + small)
        scores.append(product ** (1.0 / (k + 1)))
    ratio = (test_len + tiny) / (ref_len + small)
    if ratio < 1:
        scores = [s * math.exp(1 - 1 / ratio) for s in scores]
    return scores


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence of two token lists."""
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(res: dict[str, str], gts: dict[str, list[str]], beta: float = ROUGE_BETA) -> dict[str, float]:
    """Each video's ROUGE-L F-measure (fraction): best precision and best recall of the LCS over its references.
    Tokens are split on single spaces as coco-caption does (an empty caption is one empty token)."""
    scores = {}
    for video, hypothesis in res.items():
        candidate = hypothesis.split(" ")
        precision = recall = 0.0
        for ref in gts[video]:
            reference = ref.split(" ")
            lcs = lcs_length(reference, candidate)
            precision, recall = max(precision, lcs / len(candidate)), max(recall, lcs / len(reference))
        scores[video] = ((1 + beta ** 2) * precision * recall / (recall + beta ** 2 * precision)
                         if precision and recall else 0.0)
    return scores


def cider_d(res: dict[str, str], gts: dict[str, list[str]], n: int = CIDER_N,
            sigma: float = CIDER_SIGMA) -> dict[str, float]:
    """Each video's CIDEr-D (coco-caption's ``Cider``; not yet x 100): tf-idf n-gram vectors with the document
    frequencies of the evaluated references, clipped cosine per n with a Gaussian length penalty, mean over n and
    references, x 10."""
    ref_counts = {video: [ngrams(ref.split(), n) for ref in refs] for video, refs in gts.items()}
    document_frequency: Counter = Counter()
    for counts in ref_counts.values():
        document_frequency.update(set(gram for c in counts for gram in c))
    log_videos = np.log(float(len(gts)))

    def vector(counts: Counter) -> tuple[list[dict], list[float], int]:
        vec = [defaultdict(float) for _ in range(n)]
        norm = [0.0] * n
        length = 0
        for gram, term_frequency in counts.items():
            k = len(gram) - 1
            weight = float(term_frequency) * (log_videos - np.log(max(1.0, document_frequency[gram])))
            vec[k][gram] = weight
            norm[k] += weight ** 2
            if k == 1:  # coco-caption's "length" counts bigrams: words - 1 for a non-empty caption
                length += term_frequency
        return vec, [np.sqrt(x) for x in norm], length

    scores = {}
    for video, hypothesis in res.items():
        vec, norm, length = vector(ngrams(hypothesis.split(), n))
        total = np.zeros(n)
        for counts in ref_counts[video]:
            vec_ref, norm_ref, length_ref = vector(counts)
            penalty = np.e ** (-(float(length - length_ref) ** 2) / (2 * sigma ** 2))
            for k in range(n):
                value = sum(min(weight, vec_ref[k].get(gram, 0.0)) * vec_ref[k].get(gram, 0.0)
                            for gram, weight in vec[k].items())
                if norm[k] != 0 and norm_ref[k] != 0:
                    value /= norm[k] * norm_ref[k]
                total[k] += value * penalty
        scores[video] = float(np.mean(total) / len(ref_counts[video]) * 10.0)
    return scores


def meteor(res: dict[str, str], gts: dict[str, list[str]]) -> float:
    """Corpus METEOR 1.5 (fraction) from pycocoevalcap's jar (needs Java), on tokenized captions."""
    from pycocoevalcap.meteor.meteor import Meteor

    scorer = Meteor()
    try:
        score, _ = scorer.compute_score(gts, {video: [caption] for video, caption in res.items()})
    finally:
        if scorer.lock.locked():  # its __del__ (which stops the jar) takes the lock: a failed call left it held
            scorer.lock.release()
        del scorer
    return float(score)
