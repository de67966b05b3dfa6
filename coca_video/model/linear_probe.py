"""The linear-probe baseline's classifier (CLIP's protocol): logistic regression on the mean-pooled, L2-normalised
contrastive frame embeddings of a clip. Fitted by scikit-learn in :mod:`coca_video.tasks.probe.linear`; held here
as two plain arrays, so ``score --probe`` applies it with torch and nothing is unpickled.

    frames (B, T, 3, S, S) -> image encoder + contrastive pooler per frame -> frame embeddings (B, T, D)
                           -> normalised mean (B, D) -> x W^T + b (B, classes) -> softmax
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..config import from_dict, to_dict
from .coca import VideoEncoding, mean_video_embedding


@dataclass
class LinearProbeConfig:
    """Everything that fixes a :class:`LinearProbe`'s shape and input; saved beside its weights as data."""

    embed_dim: int  # D: the contrastive embedding's width
    num_classes: int
    num_frames: int = 16  # T: frames per clip averaged into the embedding
    C: float = 1.0  # the inverse L2 strength it was fitted with (scikit-learn's C), for the record

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "linear probe config") -> "LinearProbeConfig":
        return from_dict(cls, data, source)


class LinearProbe(nn.Module):
    """``logits = embedding @ weight.T + bias`` over (B, D) mean video embeddings; the same interface as
    :class:`~coca_video.model.video_classifier.VideoClassifier` (:meth:`features`, ``forward``) for scoring."""

    def __init__(self, cfg: LinearProbeConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.weight = nn.Parameter(torch.zeros(cfg.num_classes, cfg.embed_dim), requires_grad=False)
        self.bias = nn.Parameter(torch.zeros(cfg.num_classes), requires_grad=False)

    def features(self, encoding: VideoEncoding) -> Tensor:
        """A clip's encoding -> what this probe reads: the (B, D) normalised mean of its frame embeddings."""
        return mean_video_embedding(encoding.frame_embeddings.float())

    def forward(self, embeddings: Tensor) -> Tensor:
        """(B, D) mean video embeddings -> (B, num_classes) logits (softmax = scikit-learn's predict_proba)."""
        return embeddings.float() @ self.weight.T + self.bias


def linear_probe_from_sklearn(coef: np.ndarray, intercept: np.ndarray, fitted_classes: np.ndarray,
                              cfg: LinearProbeConfig) -> LinearProbe:
    """The :class:`LinearProbe` computing a fitted multinomial ``LogisticRegression``'s probabilities over all
    ``cfg.num_classes`` classes. ``coef`` (k, D) and ``intercept`` (k,) for the k ``fitted_classes`` (class indices
    seen in training); a binary fit's single row (1, D) becomes logits (0, z), whose softmax is its sigmoid. Classes
    the fit never saw get bias -inf: probability 0, as scikit-learn cannot predict them either."""
    coef, intercept = np.asarray(coef, dtype=np.float64), np.asarray(intercept, dtype=np.float64)
    if len(fitted_classes) == 2 and coef.shape[0] == 1:
        coef, intercept = np.concatenate([np.zeros_like(coef), coef]), np.concatenate([[0.0], intercept])
    weight = np.zeros((cfg.num_classes, cfg.embed_dim))
    bias = np.full(cfg.num_classes, -np.inf)
    weight[fitted_classes], bias[fitted_classes] = coef, intercept
    probe = LinearProbe(cfg)
    with torch.no_grad():
        probe.weight.copy_(torch.from_numpy(weight))
        probe.bias.copy_(torch.from_numpy(bias))
    return probe.eval()
