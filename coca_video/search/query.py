"""Text queries: which text model encodes them for an embeddings file (one rule for ``search`` and ``serve``), their
encoding, and a queries file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch

from ..errors import DataError, InputError
from ..model import create_model, get_tokenizer
from ..prompts import encode_texts


def query_model(model: str | None, pretrained: str | None, provenance: dict[str, str]) -> tuple[str, str | None]:
    """The text model and weights for queries of an embeddings file: ``model`` (default: the one its provenance
    names, which made the embeddings) and ``pretrained`` (default: the provenance's weights when that is the model)."""
    name = model or provenance.get("model", "default")
    if pretrained is None and name == provenance.get("model", "default"):
        pretrained = provenance.get("pretrained") or None
    return name, pretrained


def encode_queries(queries: Sequence[str], model: str, pretrained: str | None) -> torch.Tensor:
    """(Q, D) normalised float32 text embeddings of ``queries`` from one ``create_model(model, pretrained)``."""
    return encode_texts(create_model(model, pretrained=pretrained), get_tokenizer(model), queries).cpu()


def read_queries(path: str | os.PathLike) -> list[str]:
    """The queries of a text file, one per line (blank lines skipped); a missing, non-UTF-8 or empty file raises a
    one-line error naming it."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: queries file not found")
    try:
        queries = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError:
        raise DataError(f"{path}: queries file is not UTF-8 text") from None
    if not queries:
        raise DataError(f"{path}: no queries (one per line)")
    return queries
