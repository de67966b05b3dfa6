"""Caption generation with a KV cache: greedy, nucleus (top-p) sampling and beam search.

Every method starts from ``[SOT]``, blocks EOT while the sequence (SOT included) is shorter than ``min_len``, forces
EOT at ``max_len`` (SOT included) and returns ids (B, <= max_len) padded with the pad id, as open_clip 3.3.0 does.
A row also ends if it emits the pad id (open_clip treats pad like EOT). Greedy equals open_clip's greedy decoding
(``generation_type="top_k", top_k=1``) token for token.

``repetition_penalty`` (CTRL, Keskar et al. 2019; HF's ``RepetitionPenaltyLogitsProcessor``; 1.0: off) divides the
logit of every token already in a row (SOT included) by the penalty when positive and multiplies it when negative,
before the softmax, in every method (HF applies it to the log-probabilities in beam search; here beams rank by
log-probabilities of the penalised distribution).

Beam search differs from open_clip on purpose: open_clip ranks beams by the sum of raw (unnormalised) logits, which
is not a probability and depends on the logits' arbitrary offset per step; ours ranks by the sum of log-probabilities
(log-softmax), divided by ``length ** length_penalty`` for finished hypotheses, as HF and the CoCa paper do.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor


class SpecialTokens(NamedTuple):
    """The ids and length limit generation needs from a model."""

    sot: int
    eot: int
    pad: int
    context_length: int


class DecodingState(Protocol):
    """Incremental decoding of one batch of hypotheses (the model keeps its caches inside)."""

    def next_logits(self, new_ids: Tensor) -> Tensor:
        """Feed ``new_ids`` (B, s); return the vocabulary logits (B, V) of the last position."""
        ...

    def reorder(self, index: Tensor) -> None:
        """Keep hypotheses ``index`` (B',) in that order (beam search)."""
        ...


class CaptionDecoder(Protocol):
    """What a captioning model offers the decoding loops here: its special tokens, and a fresh decoding state for
    a batch of image tokens. :class:`coca_video.model.coca.CoCa` is one; nothing here knows its class."""

    special_tokens: SpecialTokens

    def start_decoding(self, image_tokens: Tensor) -> DecodingState:
        ...


OPEN_CLIP_METHODS = {"beam_search": "beam", "top_p": "top_p", "top_k": "greedy"}  # open_clip generation_type


def from_open_clip_options(method: str, max_len: int, options: dict[str, Any]) -> tuple[str, int, dict[str, Any]]:
    """Translate open_clip's ``generate`` keywords into ours: ``generation_type`` (``beam_search`` -> ``beam``,
    ``top_p``, ``top_k`` with ``top_k=1`` -> ``greedy``), ``seq_len`` -> ``max_len``, ``min_seq_len`` -> ``min_len``;
    ``top_k`` means nothing outside top-k generation (open_clip ignores it there too)."""
    options = dict(options)
    kind = options.pop("generation_type", None)
    top_k = options.pop("top_k", 1)
    if kind is not None:
        if kind not in OPEN_CLIP_METHODS:
            raise ValueError(f"generation_type must be one of {', '.join(OPEN_CLIP_METHODS)}, got {kind!r}")
        if kind == "top_k" and top_k != 1:
            raise ValueError(f"top_k sampling is supported only as top_k=1 (greedy), got top_k={top_k}")
        if method not in ("beam", OPEN_CLIP_METHODS[kind]):
            raise ValueError(f"method={method!r} and generation_type={kind!r} disagree; give one of them")
        method = OPEN_CLIP_METHODS[kind]
    if "seq_len" in options:
        max_len = options.pop("seq_len")
    if "min_seq_len" in options:
        options["min_len"] = options.pop("min_seq_len")
    return method, max_len, options


def generate_captions(
    model: CaptionDecoder,
    image_tokens: Tensor,
    method: str = "beam",
    max_len: int = 30,
    min_len: int = 5,
    num_beams: int = 6,
    length_penalty: float = 1.0,
    top_p: float = 0.9,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    repetition_penalty: float = 1.0,
) -> Tensor:
    """Caption ids (B, <= max_len) for decoder image tokens (B, Q, D); see the module docstring."""
    limit = model.special_tokens.context_length
    if not min_len < max_len <= limit:
        raise ValueError(f"need min_len < max_len <= {limit} (context length), got min_len={min_len} max_len={max_len}")
    if not repetition_penalty > 0:
        raise ValueError(f"repetition_penalty must be > 0 (1.0: off), got {repetition_penalty}")
    if num_beams < 1:
        raise ValueError(f"num_beams must be >= 1, got {num_beams}")
    if method == "greedy":
        return _sample(model, image_tokens, max_len, min_len, lambda logits: logits.argmax(-1), repetition_penalty)
    if method == "top_p":
        pick = lambda logits: _nucleus_pick(logits, top_p, temperature, generator)  # noqa: E731
        return _sample(model, image_tokens, max_len, min_len, pick, repetition_penalty)
    if method == "beam":
        return _beam_search(model, image_tokens, max_len, min_len, num_beams, length_penalty, repetition_penalty)
    raise ValueError(f"unknown generation method {method!r}: use 'beam', 'greedy' or 'top_p'")


def _block_eot(logits: Tensor, cur_len: int, min_len: int, eot: int) -> Tensor:
    if cur_len < min_len:
        logits[:, eot] = float("-inf")
    return logits


def penalise_repeats(logits: Tensor, ids: Tensor, penalty: float) -> Tensor:
    """``logits`` (B, V) with every token of ``ids`` (B, L) penalised: divided by ``penalty`` where positive,
    multiplied where negative (CTRL's repetition penalty); unchanged for ``penalty == 1``."""
    if penalty == 1.0:
        return logits
    seen = logits.gather(1, ids)
    return logits.scatter(1, ids, torch.where(seen < 0, seen * penalty, seen / penalty))


def _sample(model: CaptionDecoder, image_tokens: Tensor, max_len: int, min_len: int, pick,
            repetition_penalty: float = 1.0) -> Tensor:
    """Greedy or sampled decoding, one token per row per step."""
    sot, eot, pad, _ = model.special_tokens
    batch = image_tokens.shape[0]
    out = torch.full((batch, 1), sot, dtype=torch.long, device=image_tokens.device)
    finished = torch.zeros(batch, dtype=torch.bool, device=out.device)
    state, new_ids = model.start_decoding(image_tokens), out
    while out.shape[1] < max_len:
        cur_len = out.shape[1]
        logits = penalise_repeats(state.next_logits(new_ids), out, repetition_penalty)
        logits = _block_eot(logits, cur_len, min_len, eot)
        token = pick(logits)
        if cur_len + 1 == max_len:
            token = torch.full_like(token, eot)
        token = torch.where(finished, torch.full_like(token, pad), token)
        out = torch.cat([out, token[:, None]], dim=1)
        finished |= (token == eot) | (token == pad)
        if finished.all():
            break
        new_ids = token[:, None]
    return out


def _nucleus_pick(logits: Tensor, top_p: float, temperature: float, generator: torch.Generator | None) -> Tensor:
    """Sample from the smallest set of tokens whose probability mass reaches ``top_p``."""
    probs = F.softmax(logits / temperature, dim=-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
    sorted_probs = sorted_probs.masked_fill(mass_before >= top_p, 0.0)  # the top token always stays
    choice = torch.multinomial(sorted_probs, 1, generator=generator)
    return order.gather(-1, choice)[:, 0]


def _beam_search(
    model: CaptionDecoder, image_tokens: Tensor, max_len: int, min_len: int, num_beams: int, length_penalty: float,
    repetition_penalty: float = 1.0,
) -> Tensor:
    """Beam search over log-probabilities; returns the best finished hypothesis per image."""
    sot, eot, pad, _ = model.special_tokens
    batch, device = image_tokens.shape[0], image_tokens.device
    state = model.start_decoding(image_tokens.repeat_interleave(num_beams, dim=0))
    beams = torch.full((batch * num_beams, 1), sot, dtype=torch.long, device=device)
    scores = torch.full((batch, num_beams), float("-inf"), device=device)
    scores[:, 0] = 0.0  # the beams start identical: keep one
    finished = [BeamHypotheses(num_beams, length_penalty) for _ in range(batch)]
    while beams.shape[1] < max_len and not _all_done(finished, scores, max_len):
        cur_len = beams.shape[1]
        logits = penalise_repeats(state.next_logits(beams[:, -1:]), beams, repetition_penalty)
        logprobs = _block_eot(F.log_softmax(logits, dim=-1), cur_len, min_len, eot)
        if cur_len + 1 == max_len:  # force EOT
            logprobs[:, torch.arange(logprobs.shape[1], device=device) != eot] = float("-inf")
        candidates = (scores.reshape(-1, 1) + logprobs).view(batch, -1)  # (B, K*V)
        top_scores, top_index = candidates.topk(2 * num_beams, dim=1)
        rows, tokens, scores = _advance(beams, top_scores, top_index, finished, logprobs.shape[1], eot)
        beams = torch.cat([beams[rows], tokens[:, None]], dim=1)
        state.reorder(rows)
    return _best(finished, beams, scores, pad)


def _all_done(finished: list[BeamHypotheses], scores: Tensor, max_len: int) -> bool:
    return all(hyps.is_done(row.max().item(), max_len) for hyps, row in zip(finished, scores))


class BeamHypotheses:
    """The best ``num_beams`` finished captions of one image, scored by sum log-prob / length ** length_penalty."""

    def __init__(self, num_beams: int, length_penalty: float) -> None:
        self.num_beams, self.length_penalty = num_beams, length_penalty
        self.items: list[tuple[float, Tensor]] = []

    def add(self, ids: Tensor, logprob: float) -> None:
        self.items.append((logprob / ids.shape[0] ** self.length_penalty, ids))
        self.items = sorted(self.items, key=lambda item: item[0], reverse=True)[: self.num_beams]

    def is_done(self, best_running_logprob: float, max_len: int) -> bool:
        """No running beam can still beat the worst kept caption.

        Exact for ``length_penalty >= 0``: a continuation's log-prob sum only falls and its length is at most
        ``max_len``, so its score is at most ``best_running_logprob / max_len ** length_penalty``.
        """
        if len(self.items) < self.num_beams:
            return False
        return self.items[-1][0] >= best_running_logprob / max_len**self.length_penalty


def _advance(
    beams: Tensor, top_scores: Tensor, top_index: Tensor, finished: list[BeamHypotheses], vocab: int, eot: int
) -> tuple[Tensor, Tensor, Tensor]:
    """From each image's 2K best candidates: EOT ones among the top K finish, the best K others continue.

    Returns the source rows (B*K,), their next tokens (B*K,) and the new scores (B, K).
    """
    batch = top_scores.shape[0]
    num_beams = beams.shape[0] // batch
    rows, tokens, scores = [], [], []
    for b in range(batch):
        kept = 0
        for rank, (score, index) in enumerate(zip(top_scores[b].tolist(), top_index[b].tolist())):
            beam, token = divmod(index, vocab)
            row = b * num_beams + beam
            if token == eot:
                if rank < num_beams and score > float("-inf"):
                    finished[b].add(torch.cat([beams[row], beams.new_tensor([eot])]), score)
                continue
            rows.append(row)
            tokens.append(token)
            scores.append(score)
            kept += 1
            if kept == num_beams:
                break
    return beams.new_tensor(rows), beams.new_tensor(tokens), top_scores.new_tensor(scores).view(batch, num_beams)


def _best(finished: list[BeamHypotheses], beams: Tensor, scores: Tensor, pad: int) -> Tensor:
    """Best finished caption per image (the best running beam if none finished), right-padded with ``pad``."""
    num_beams = scores.shape[1]
    best = []
    for b, hyps in enumerate(finished):
        best.append(hyps.items[0][1] if hyps.items else beams[b * num_beams + int(scores[b].argmax())])
    return torch.nn.utils.rnn.pad_sequence(best, batch_first=True, padding_value=pad)
