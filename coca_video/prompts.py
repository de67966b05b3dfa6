"""Text for zero-shot use: which prompt templates a model classifies with (one rule for the Python API and every
command), and text encoded in chunks (class prompts, captions, search queries)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import Tensor

from .data.labels import read_templates, video_templates
from .model import CoCa
from .model.factory import TEMPLATES_FILE


def prompt_templates(model: CoCa, templates: str | Path | None = None) -> list[str]:
    """The prompt templates zero-shot labels use with ``model``: the file ``templates`` when given, else those its
    checkpoint folder ships (``prompt_templates.txt``, e.g. the built-in default model's), else the shipped video
    templates ("a video of {}." and the like)."""
    if templates:
        return read_templates(templates)
    own = model.checkpoint / TEMPLATES_FILE if model.checkpoint is not None else None
    return read_templates(own) if own is not None and own.is_file() else video_templates()


@torch.no_grad()
def encode_texts(model: CoCa, tokenizer: Callable[[Sequence[str]], Tensor], texts: Sequence[str],
                 batch_size: int = 256) -> Tensor:
    """(N, D) L2-normalised float32 text embeddings of ``texts``, on the model's device, ``batch_size`` at a time."""
    device = next(model.parameters()).device
    chunks = [model.encode_text(tokenizer(list(texts[i:i + batch_size])).to(device)).float()
              for i in range(0, len(texts), batch_size)]
    return torch.cat(chunks) if chunks else torch.zeros(0, model.cfg.embed_dim, device=device)
