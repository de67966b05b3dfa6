"""Answering a question about a video with CoCa's multimodal decoder, three ways: a trained :class:`AnswerHead`
over the decoder's outputs of the question (classification), each answer of a vocabulary ranked by the decoder's
likelihood of "question answer" (zero-shot, LAVIS's rank inference), or the answer decoded after the question
(open-ended).

The question goes in as ``SOT question`` (its EOT left out), and in training as ``SOT question answer EOT``: the
decoder is causal, so its outputs at the question's positions are the same either way, and one pass gives both the
head's input and the captioning loss's logits.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .answer_head import AnswerHead
from .coca import CoCa


class QuestionIds(NamedTuple):
    ids: Tensor  # (B, L) token ids, cut after the longest row
    prefix: Tensor  # (B,) how many leading positions hold SOT and the question


def question_ids(tokenizer: Callable, questions: list[str], answers: list[str] | None = None,
                 pad_id: int = 0) -> QuestionIds:
    """Ids of ``SOT question EOT`` (or ``SOT question answer EOT`` with ``answers``) and each question's prefix."""
    alone = tokenizer(questions)  # (B, C)
    prefix = (alone != pad_id).sum(1) - 1  # SOT + question tokens, EOT left out
    ids = tokenizer([f"{q} {a}" for q, a in zip(questions, answers)]) if answers is not None else alone
    longest = int((ids != pad_id).sum(1).max()) if len(ids) else 1
    return QuestionIds(ids[:, :longest], prefix)


def decoder_states(model: CoCa, image_tokens: Tensor, ids: Tensor) -> Tensor:
    """The multimodal decoder's outputs (B, L, W) for text ids (B, L) attending to image tokens (B, Q, D)."""
    return model.decoder(model.text(ids).token_states, image_tokens)


def question_mask(ids: Tensor, prefix: Tensor) -> Tensor:
    """(B, L) bool: True on each row's first ``prefix`` positions (SOT and the question)."""
    return torch.arange(ids.shape[1], device=ids.device)[None] < prefix.to(ids.device)[:, None]


class QAOutput(NamedTuple):
    answer_logits: Tensor  # (B, K): the head's
    caption_logits: Tensor  # (B, L-1, V): position i predicts ids[:, i+1] (the captioning loss on the QA text)


def answer_and_caption_logits(model: CoCa, head: AnswerHead, encoder_tokens: Tensor, ids: Tensor, prefix: Tensor,
                              num_frames: int | None) -> QAOutput:
    """One pass over ``SOT question answer EOT`` ids (B, L) given a clip's encoder tokens (B, T*N, C): the head's
    answer logits from the question's positions, and the vocabulary logits of every next token."""
    image_tokens = model.generative_tokens(encoder_tokens, num_frames)  # (B, Q, D)
    states = decoder_states(model, image_tokens, ids)  # (B, L, W)
    return QAOutput(head(states, question_mask(ids, prefix)), model.vocab_logits(states[:, :-1]))


def answer_logits(model: CoCa, head: AnswerHead, encoder_tokens: Tensor, ids: Tensor, prefix: Tensor,
                  num_frames: int | None) -> Tensor:
    """The head's answer logits (B, K) for question ids (B, L) about clips' encoder tokens (B, T*N, C)."""
    image_tokens = model.generative_tokens(encoder_tokens, num_frames)
    return head(decoder_states(model, image_tokens, ids), question_mask(ids, prefix))


@torch.no_grad()
def answer_log_likelihoods(model: CoCa, image_tokens: Tensor, tokenizer: Callable, questions: list[str],
                           answers: list[str], chunk: int = 256) -> Tensor:
    """(B, K): for question b about image tokens (B, Q, D) and answer k, the decoder's summed log-probability of
    the answer's tokens and the EOT after ``SOT question`` (LAVIS's rank inference scores the answer so)."""
    pad = model.special_tokens.pad
    pairs = [(b, k) for b in range(len(questions)) for k in range(len(answers))]
    scores = torch.empty(len(questions) * len(answers))
    for start in range(0, len(pairs), chunk):
        part = pairs[start:start + chunk]
        ids, prefix = question_ids(tokenizer, [questions[b] for b, _ in part], [answers[k] for _, k in part], pad)
        ids = ids.to(image_tokens.device)
        tokens = image_tokens[torch.tensor([b for b, _ in part], device=image_tokens.device)]
        logits = model.vocab_logits(decoder_states(model, tokens, ids)[:, :-1]).float()  # (n, L-1, V)
        labels = ids[:, 1:]
        token_logp = F.log_softmax(logits, -1).gather(-1, labels[..., None])[..., 0]  # (n, L-1)
        position = torch.arange(labels.shape[1], device=ids.device)[None] + 1  # the label's position in ids
        scored = (position >= prefix.to(ids.device)[:, None]) & (labels != pad)
        scores[start:start + len(part)] = (token_logp * scored).sum(1).cpu()
    return scores.view(len(questions), len(answers))


@torch.no_grad()
def rank_answers(model: CoCa, encoder_tokens: Tensor, tokenizer: Callable, questions: list[str],
                 answers: list[str], num_frames: int | None) -> list[str]:
    """Zero-shot: each question's most likely answer of ``answers`` (:func:`answer_log_likelihoods`)."""
    image_tokens = model.generative_tokens(encoder_tokens, num_frames)
    best = answer_log_likelihoods(model, image_tokens, tokenizer, questions, answers).argmax(1)
    return [answers[k] for k in best.tolist()]


@torch.no_grad()
def generate_answers(model: CoCa, encoder_tokens: Tensor, tokenizer: Callable, questions: list[str],
                     num_frames: int | None, max_tokens: int = 8) -> list[str]:
    """Open-ended: each answer greedily decoded after ``SOT question`` (at most ``max_tokens`` tokens, up to EOT)."""
    image_tokens = model.generative_tokens(encoder_tokens, num_frames)
    ids, prefix = question_ids(tokenizer, questions, pad_id=model.special_tokens.pad)
    eot, answers = model.special_tokens.eot, []
    for b in range(len(questions)):
        state = model.start_decoding(image_tokens[b:b + 1])
        new_ids, generated = ids[b:b + 1, :int(prefix[b])].to(image_tokens.device), []
        room = model.special_tokens.context_length - int(prefix[b])
        for _ in range(min(max_tokens, room)):
            token = int(state.next_logits(new_ids).argmax(-1))
            if token == eot:
                break
            generated.append(token)
            new_ids = torch.tensor([[token]], device=image_tokens.device)
        answers.append(tokenizer.batch_decode(torch.tensor([generated], dtype=torch.long))[0].strip()
                       if generated else "")
    return answers
