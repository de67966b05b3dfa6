"""The question-answering head of CoCa's multimodal-understanding recipe (paper Appendix B, VQA): a new
single-query attentional pooler over the multimodal decoder's outputs of the question, then a linear classifier
over the answer vocabulary. Saved beside the CoCa weights in a model folder:

    model/answer_head.json          {"config": AnswerHeadConfig, "answers": [...]} (answers in class order)
    model/answer_head.safetensors   the head's weights
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from torch import Tensor, nn

from ..errors import CheckpointError
from .layers import layer_norm
from .pooler import AttentionalPooler
from .state_dict import load_strict, save_safetensors

HEAD_FILE, HEAD_WEIGHTS = "answer_head.json", "answer_head.safetensors"


@dataclass
class AnswerHeadConfig:
    width: int  # the multimodal decoder's width
    num_answers: int  # classes: the answer vocabulary's size
    heads: int = 4  # the pooler's attention heads


class AnswerHead(nn.Module):
    """Decoder outputs (B, L, W) and which positions hold the question (B, L) bool -> answer logits (B, K)."""

    def __init__(self, cfg: AnswerHeadConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.pool = AttentionalPooler(cfg.width, cfg.width, 1, cfg.heads)
        self.norm = layer_norm(cfg.width)
        self.classifier = nn.Linear(cfg.width, cfg.num_answers)
        nn.init.normal_(self.classifier.weight, std=cfg.width**-0.5)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, decoder_states: Tensor, question_mask: Tensor) -> Tensor:
        pooled = self.pool(decoder_states, context_mask=question_mask)[:, 0]  # (B, W)
        return self.classifier(self.norm(pooled))  # (B, K)


def save_answer_head(folder: str | os.PathLike, head: AnswerHead, answers: list[str]) -> list[Path]:
    """Write the head's two files into ``folder`` (a staging folder: save_pretrained copies them beside the CoCa
    weights); returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_safetensors(head, folder / HEAD_WEIGHTS)
    (folder / HEAD_FILE).write_text(json.dumps({"config": asdict(head.cfg), "answers": answers}, indent=2) + "\n")
    return [folder / HEAD_FILE, folder / HEAD_WEIGHTS]


def load_answer_head(folder: str | os.PathLike) -> tuple[AnswerHead, list[str]]:
    """The head and its answer vocabulary from a videoqa model folder (strict: every weight must fit)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / HEAD_FILE).is_file() or not (folder / HEAD_WEIGHTS).is_file():
        raise CheckpointError(f"{folder}: not a videoqa model folder (no {HEAD_FILE} / {HEAD_WEIGHTS}; "
                              "coca-video videoqa writes one in output_dir/model)")
    try:
        info = json.loads((folder / HEAD_FILE).read_text())
        head = AnswerHead(AnswerHeadConfig(**info["config"]))
        answers = [str(a) for a in info["answers"]]
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{folder / HEAD_FILE}: malformed ({type(err).__name__}: {err})") from None
    if len(answers) != head.cfg.num_answers:
        raise CheckpointError(f"{folder / HEAD_FILE}: {len(answers)} answers for {head.cfg.num_answers} classes")
    load_strict(head, load_file(str(folder / HEAD_WEIGHTS)), folder / HEAD_WEIGHTS)
    return head.eval(), answers

