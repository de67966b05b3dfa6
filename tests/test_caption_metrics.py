"""Captioning metrics against pycocoevalcap (coco-caption) on the same inputs, and hand-worked closed forms.

The corpus has what real captions have: punctuation, case, an empty prediction, a prediction that is only
punctuation, accents, curly quotes, dashes, an emoji, clitics, numbers, abbreviations, several references a video.
"""

from __future__ import annotations

import math

import pytest

from coca_video.caption_metrics import bleu, caption_scores, cider_d, rouge_l
from coca_video.metrics import caption_metrics
from coca_video.ptb_tokenize import PYTHON_TOKENIZER, java_ptb_tokenize, ptb_jar, python_ptb_tokenize
from helpers import coco_scores, needs_coco_caption


PREDICTIONS = {
    "video7010": "A man is playing a guitar.",
    "video7011": "",
    "video7012": "The dog's ball isn't RED; it's blue!",
    "video7013": "two people (a man & a woman) are talking...",
    "video7014": "Un café crème — naïve résumé… “quoted” don’t",
    "video7015": "a cartoon of a cat 😀 and a dog",
    "video7016": "?!",
    "video7017": "a woman is cooking in a kitchen",
    "video7018": "Mr. Smith visits Washington D.C. at 5 p.m. with 1,000 people, 3.5 km away",
}
REFERENCES = {
    "video7010": ["a man plays the guitar", "A person is playing a guitar on stage.", "someone plays music"],
    "video7011": ["a girl is dancing", "A girl dances."],
    "video7012": ["a dog plays with a red ball", "The dog's ball is blue.", "a dog can't catch its ball"],
    "video7013": ["two people talk", "A man and a woman are having a conversation!", "people (two) talking"],
    "video7014": ["un café crème", "a naïve résumé — “quoted”", "I don’t know…"],
    "video7015": ["a cartoon cat and dog", "Animated cat & dog play 🐱."],
    "video7016": ["a man is running", "someone runs fast"],
    "video7017": ["a woman is cooking", "a woman cooks food in a kitchen", "a lady is cooking in the kitchen",
                  "someone prepares food"],
    "video7018": ["Mr. Smith is in Washington D.C.", "a crowd of 1,000 people at 5 p.m."],
}


def corpus_lines() -> list[str]:
    return [*PREDICTIONS.values(), *(r for refs in REFERENCES.values() for r in refs)]


def coco_tokenize(captions: dict[str, list[str]]) -> dict[str, list[str]]:
    """pycocoevalcap's own PTBTokenizer, given what COCOEvalCap gives it."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    return PTBTokenizer().tokenize({k: [{"caption": c} for c in v] for k, v in captions.items()})


def python_tokens() -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    res = {v: [python_ptb_tokenize(c)] for v, c in PREDICTIONS.items()}
    gts = {v: [python_ptb_tokenize(r) for r in refs] for v, refs in REFERENCES.items()}
    return res, gts


@needs_coco_caption
@pytest.mark.needs("java")
def test_python_tokenizer_equals_the_ptb_jar_on_the_corpus():
    jar_tokens = coco_tokenize({str(i): [c] for i, c in enumerate(corpus_lines())})
    expected = [jar_tokens[str(i)][0] for i in range(len(corpus_lines()))]
    assert java_ptb_tokenize(corpus_lines(), ptb_jar()) == expected  # our run of the jar is pycocoevalcap's
    assert [python_ptb_tokenize(c) for c in corpus_lines()] == expected
    assert expected[0] == "a man is playing a guitar" and "" in expected  # punctuation gone, the empty caption kept
    assert "-lrb-" in expected[3]  # coco-caption's quirk: lower-cased bracket names are not removed


@needs_coco_caption
def test_bleu_rouge_cider_equal_pycocoevalcap_on_the_same_tokens():
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    res, gts = python_tokens()
    expected = coco_scores(res, gts, with_meteor=False)
    ours = {v: c[0] for v, c in res.items()}
    assert [100 * b for b in bleu(ours, gts)] == pytest.approx([expected[f"bleu_{n}"] for n in range(1, 5)],
                                                                abs=1e-9, rel=0)
    _, coco_rouge = Rouge().compute_score(gts, res)
    _, coco_cider = Cider().compute_score(gts, res)
    assert list(rouge_l(ours, gts).values()) == pytest.approx(list(coco_rouge), abs=1e-9, rel=0)
    assert list(cider_d(ours, gts).values()) == pytest.approx(list(coco_cider), abs=1e-9, rel=0)
    scores = caption_scores(PREDICTIONS, REFERENCES, use_java=False, warn=False)
    assert scores.metrics == pytest.approx(expected, abs=1e-9, rel=0) and scores.tokenizer == PYTHON_TOKENIZER
    assert 0 < expected["cider"] and 0 < expected["bleu_4"] < expected["bleu_1"] < 100  # a corpus that discriminates


@pytest.mark.slow
@needs_coco_caption
@pytest.mark.needs("java")
def test_every_metric_equals_coco_caption_with_java():
    """The whole of COCOEvalCap (its PTB tokenizer, then BLEU, METEOR, ROUGE-L, CIDEr) against caption_metrics."""
    res = coco_tokenize({v: [c] for v, c in PREDICTIONS.items()})
    gts = coco_tokenize(REFERENCES)
    expected = coco_scores(res, gts, with_meteor=True)
    got = caption_metrics(PREDICTIONS, REFERENCES)
    assert list(got) == ["bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider"]
    assert got == pytest.approx(expected, abs=1e-9, rel=0)
    assert 5 < got["meteor"] < 60


@needs_coco_caption
def test_without_java_one_line_says_so_and_the_java_free_metrics_come_from_the_python_tokenizer(
        tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no java on it
    got = caption_metrics(PREDICTIONS, REFERENCES)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "java not found" in lines[0] and "METEOR left out" in lines[0]
    assert "meteor" not in got
    res, gts = python_tokens()  # equal to the PTB jar's tokens on this corpus (the test above)
    assert got == pytest.approx(coco_scores(res, gts, with_meteor=False), abs=1e-9, rel=0)


def test_hand_worked_bleu():
    """Video 1: "one two three four five" vs "one two three four six": matches 4 of 5 unigrams, 3 of 4 bigrams,
    2 of 3 trigrams, 1 of 2 four-grams. Video 2: "one two" vs "one two three" and "one two three four five six": 2/2
    unigrams, 1/1 bigram, 0 tri- and four-grams out of 0; the closest reference length is 3.
    Corpus: p1 = 6/7, p2 = 4/5, p3 = 2/3, p4 = 1/2; c = 7 words, r = 5 + 3 = 8, brevity penalty exp(1 - 8/7).
    BLEU-n = (p1 ... pn)^(1/n) * exp(-1/7)."""
    predictions = {"a": "one two three four five", "b": "One two."}
    references = {"a": ["one two three four six"], "b": ["one two three", "one two three four five six"]}
    got = caption_scores(predictions, references, use_java=False, warn=False).metrics
    precisions = [6 / 7, 4 / 5, 2 / 3, 1 / 2]
    penalty = math.exp(1 - 8 / 7)
    for n in range(1, 5):
        assert got[f"bleu_{n}"] == pytest.approx(100 * math.prod(precisions[:n]) ** (1 / n) * penalty, rel=1e-7)


def test_hand_worked_cider():
    """Two videos, so log(N) = log 2 =: L; every reference n-gram occurs in one video's references: idf = L, and an
    n-gram in no reference gets idf L too (log(max(1, 0)) = 0).
    Video a: "x y x" vs "x y". 1-grams: prediction (x: 2L, y: L), reference (x: L, y: L); clipped dot
    min(2L, L) L + L L = 2L^2; norms sqrt(5) L and sqrt(2) L: 2 / sqrt(10). 2-grams: prediction (x y: L, y x: L),
    reference (x y: L): L^2 / (sqrt(2) L * L) = 1 / sqrt(2). 3- and 4-grams: the reference has none: 0.
    coco-caption's length counts bigrams: 2 vs 1, penalty exp(-1 / (2 * 36)).
    CIDEr-D(a) = 10 * exp(-1/72) * (2/sqrt(10) + 1/sqrt(2) + 0 + 0) / 4 (one reference). Video b: no shared n-gram:
    0. Corpus: the mean, CIDEr-D(a) / 2, in percent."""
    predictions = {"a": "x y x", "b": "z w"}
    references = {"a": ["x y"], "b": ["u v"]}
    scores = caption_scores(predictions, references, use_java=False, warn=False)
    video_a = 10 * math.exp(-1 / 72) * (2 / math.sqrt(10) + 1 / math.sqrt(2)) / 4
    assert scores.per_video_cider == pytest.approx({"a": 100 * video_a, "b": 0.0}, abs=1e-9)
    assert scores.metrics["cider"] == pytest.approx(100 * video_a / 2, abs=1e-9)


def test_one_video_warns_that_cider_idf_is_degenerate(capsys):
    scores = caption_scores({"v": "a red square"}, {"v": ["a red square", "a square"]}, use_java=False)
    assert scores.metrics["cider"] == 0.0 and scores.metrics["bleu_1"] == pytest.approx(100.0, rel=1e-6)
    assert any("IDF" in w for w in scores.warnings) and "IDF is degenerate" in capsys.readouterr().err


def test_mismatched_videos_and_empty_references_are_refused():
    with pytest.raises(ValueError, match="same videos"):
        caption_metrics({"a": "x"}, {"b": ["x"]})
    with pytest.raises(ValueError, match="non-empty list"):
        caption_metrics({"a": "x"}, {"a": []})
