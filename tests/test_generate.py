"""Caption generation: the KV cache changes nothing, beam search finds the exact optimum when it can see all."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_config

import coca_video

SMALL_VOCAB = {"vocab_size": 6, "sot_id": 4, "eot_id": 5, "pad_id": 0}


def naive_greedy(model, images, max_len, min_len, process=None):
    """Greedy decoding by re-running the full teacher-forced forward on the whole prefix every step (no cache);
    ``process(ids, logits)`` edits each step's logits first (an HF logits processor)."""
    sot, eot, pad = model.cfg.text.sot_id, model.cfg.text.eot_id, model.cfg.text.pad_id
    out = torch.full((images.shape[0], 1), sot)
    tokens = model.image_features(images).tokens
    done = torch.zeros(images.shape[0], dtype=torch.bool)
    while out.shape[1] < max_len:
        logits = model.caption_logits(tokens, model.text(out).token_states)[:, -1]
        if process is not None:
            logits = process(out, logits)
        if out.shape[1] < min_len:
            logits[:, eot] = -float("inf")
        nxt = logits.argmax(-1) if out.shape[1] + 1 < max_len else torch.full((out.shape[0],), eot)
        nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
        out = torch.cat([out, nxt[:, None]], 1)
        done |= (nxt == eot) | (nxt == pad)
        if done.all():
            break
    return out


@pytest.mark.slow
@torch.no_grad()
def test_cached_greedy_equals_uncached_greedy(tiny_model):
    images = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    expected = naive_greedy(tiny_model, images, max_len=14, min_len=5)
    torch.testing.assert_close(tiny_model.generate(images, method="greedy", max_len=14), expected)


def repeats(ids: torch.Tensor) -> int:
    """Tokens that repeat an earlier token of their row (SOT, EOT and padding aside)."""
    return sum(len(row) - len(set(row)) for row in ([t for t in r.tolist() if t > 0][1:-1] for r in ids))


@torch.no_grad()
def test_repetition_penalty_is_hf_repetition_penalty_and_repeats_less(tiny_model):
    from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

    images = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    plain = tiny_model.generate(images, method="greedy", max_len=14)
    expected = naive_greedy(tiny_model, images, max_len=14, min_len=5, process=RepetitionPenaltyLogitsProcessor(1.3))
    penalised = tiny_model.generate(images, method="greedy", max_len=14, repetition_penalty=1.3)
    torch.testing.assert_close(penalised, expected)
    assert repeats(plain) > 0 and repeats(penalised) < repeats(plain)
    two = images[:2]
    beams = tiny_model.generate(two, method="beam", max_len=14, repetition_penalty=1e4, num_beams=3)
    assert repeats(beams) < repeats(tiny_model.generate(two, method="beam", max_len=14, num_beams=3))


def sequence_logprob(model, image_tokens, ids):
    """Sum of log p(ids[t+1] | ids[:t+1]) from one teacher-forced pass: ids (L,) -> a float, or a batch of
    sequences of one length (K, L) -> (K,)."""
    batch = ids if ids.dim() == 2 else ids[None]
    logits = model.caption_logits(image_tokens.expand(len(batch), -1, -1), model.text(batch).token_states)[:, :-1]
    logprobs = F.log_softmax(logits, -1).gather(-1, batch[:, 1:, None]).sum((1, 2))
    return logprobs if ids.dim() == 2 else logprobs.item()


@pytest.mark.slow
@torch.no_grad()
def test_exhaustive_beam_search_finds_the_best_normalised_caption():
    """With more beams than possible prefixes, beam search must return argmax of sum log-prob / length."""
    torch.manual_seed(3)
    model = coca_video.CoCa(tiny_config(text=SMALL_VOCAB)).eval()
    images = torch.randn(2, 3, 64, 64)
    max_len, min_len = 5, 3
    ids = model.generate(images, method="beam", num_beams=300, max_len=max_len, min_len=min_len)
    tokens = model.image_features(images).tokens
    body_tokens = [t for t in range(6) if t != 5]
    for row in range(2):
        best, best_ids = -float("inf"), None
        for n in range(min_len - 1, max_len - 1):  # n generated tokens before EOT; length n + 2 >= min_len + 1
            candidates = torch.tensor([[4, *body, 5] for body in itertools.product(body_tokens, repeat=n)])
            scores = sequence_logprob(model, tokens[row : row + 1], candidates) / (n + 2)  # all of length n + 2
            if scores.max().item() > best:
                best, best_ids = scores.max().item(), candidates[scores.argmax()]
        got = ids[row][: len(best_ids)]
        assert got.tolist() == best_ids.tolist()
        assert (ids[row][len(best_ids) :] == 0).all()


@pytest.mark.slow
@torch.no_grad()
def test_beam_search_beats_or_ties_greedy_on_its_own_objective():
    torch.manual_seed(4)
    model = coca_video.CoCa(tiny_config(text=SMALL_VOCAB)).eval()
    model.caption_head.weight[0] = 0.0  # pad logit 0: rarely the argmax, so greedy mostly ends with EOT
    images = torch.randn(8, 3, 64, 64)
    tokens = model.image_features(images).tokens

    def score(row, ids):
        ids = ids[: (ids == 5).nonzero()[0, 0] + 1]
        return sequence_logprob(model, tokens[row : row + 1], ids) / len(ids)

    greedy = model.generate(images, method="greedy", max_len=8)
    beam = model.generate(images, method="beam", num_beams=4, max_len=8)
    ended_by_eot = [row for row in range(8) if (greedy[row] == 5).any()]  # greedy also stops on the pad id
    assert len(ended_by_eot) >= 3
    for row in ended_by_eot:
        assert score(row, beam[row]) >= score(row, greedy[row]) - 1e-6


@pytest.mark.slow
@torch.no_grad()
def test_top_p_sampling_is_reproducible_and_tiny_p_is_greedy(tiny_model):
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    a = tiny_model.generate(images, method="top_p", top_p=0.9, generator=torch.Generator().manual_seed(5))
    b = tiny_model.generate(images, method="top_p", top_p=0.9, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b)
    nucleus_of_one = tiny_model.generate(images, method="top_p", top_p=1e-9, max_len=12)
    torch.testing.assert_close(nucleus_of_one, tiny_model.generate(images, method="greedy", max_len=12))


def test_generation_limits_are_checked(tiny_model):
    images = torch.randn(1, 3, 64, 64)
    with pytest.raises(ValueError, match="max_len"):
        tiny_model.generate(images, max_len=80)
    with pytest.raises(ValueError, match="unknown generation method"):
        tiny_model.generate(images, method="nope")


def test_generate_restores_training_mode(tiny_model):
    tiny_model.train()
    tiny_model.generate(torch.randn(1, 3, 64, 64), method="greedy", max_len=8)
    assert tiny_model.training
